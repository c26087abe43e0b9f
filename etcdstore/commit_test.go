package etcdstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// A mint of the attack below: what was asked and what was answered.
type mint struct {
	key  keystore.Key
	opts keystore.CreateOptions
	on   *Store // if set; else the stores take turns
	err  error
}

func newMintKey(owner keystore.Owner) keystore.Key {
	secret, id, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
	return keystore.Key{ID: id, Hash: keystore.HashKey(secret), Owner: owner, Created: time.Now().Truncate(time.Microsecond)}
}

// mintAll runs every mint at once, each from a goroutine of its own, on
// the stores in turn, and records the answers.
func mintAll(mints []*mint, stores ...*Store) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, m := range mints {
		s := cmp.Or(m.on, stores[i%len(stores)])
		wg.Go(func() {
			<-start
			m.err = s.CreateKey(context.Background(), m.key, m.opts)
		})
	}
	close(start)
	wg.Wait()
}

// Many mints at once, from two gateways (stores) on one cluster, share
// group commits in each: mixed owners, each owner's limit hit within a
// group, keys whose user is missing, digests and ids already taken and
// taken twice within the wave. Every guarantee of a lone CreateKey must
// hold: exactly the limit stored, an answer for every key that says
// whether it is stored, and no error but those a lone CreateKey gives.
func TestGroupCommitsKeepEveryGuaranteeUnderConcurrentMints(t *testing.T) {
	c := etcdtest.Start(t, 3)
	// Timeouts long enough that no try fails on a loaded machine: a
	// failed try's keys are answered with a fault, neither stored nor not.
	a := openStore(t, c, Options{RequestTimeout: time.Minute})
	b := openStore(t, c, Options{Prefix: a.prefix, RequestTimeout: time.Minute}) // a second gateway
	ctx := context.Background()
	if err := a.CreateUser(ctx, keystore.User{Name: "u0", PasswordHash: "h", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	stored := newMintKey(keystore.Service("svc-old"))
	if err := a.CreateKey(ctx, stored, keystore.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	limits := map[string]int{"capped-1": 1, "capped-5": 5, "capped-17": 17, "capped-40": 40}
	const perOwner = 60
	var mints []*mint
	for i := range perOwner {
		for name, limit := range limits {
			mints = append(mints, &mint{key: newMintKey(keystore.Service(name)), opts: keystore.CreateOptions{MaxPerOwner: limit}})
		}
		mints = append(mints,
			&mint{key: newMintKey(keystore.Service("free"))},
			&mint{key: newMintKey(keystore.PasswordUser("u0")), opts: keystore.CreateOptions{StoredUser: true, MaxPerOwner: 30}},
			&mint{key: newMintKey(keystore.PasswordUser("nobody")), opts: keystore.CreateOptions{StoredUser: true}})
		if i%10 == 0 {
			twin := newMintKey(keystore.Service("twins"))
			sameID := newMintKey(keystore.Service("twins"))
			sameID.ID = twin.ID
			takenDigest := newMintKey(keystore.Service("late"))
			takenDigest.Hash = stored.Hash
			takenID := newMintKey(keystore.Service("late"))
			takenID.ID = stored.ID
			// Identical twins go to one store, whose groups never hold
			// two keys with one digest: across stores, a key retried
			// after a lost answer would take its stored twin for its
			// own, as any two CreateKey calls could before groups.
			mints = append(mints, &mint{key: twin, on: a}, &mint{key: twin, on: a}, &mint{key: sameID}, &mint{key: takenDigest}, &mint{key: takenID})
		}
	}
	rev := c.Revision(t)
	mintAll(mints, a, b)
	txns := c.Revision(t) - rev

	answered := map[string]int{} // owner → keys answered stored
	limited := map[string]int{}
	twins := map[string]int{} // twin id → successes
	for _, m := range mints {
		got, err := a.KeyByID(ctx, m.key.ID)
		isStored := err == nil && got.Hash == m.key.Hash
		name := m.key.Owner.Name
		switch {
		case m.err == nil && !isStored:
			t.Fatalf("%s: answered stored, but not found (%v)", name, err)
		case m.err != nil && isStored && name != "twins":
			t.Fatalf("%s: answered %v, but stored", name, m.err)
		case m.err == nil:
			answered[name]++
			if name == "twins" {
				twins[m.key.ID]++
			}
		case errors.Is(m.err, keystore.ErrLimit):
			limited[name]++
		case name == "nobody" && errors.Is(m.err, keystore.ErrUnknownOwner):
		case (name == "late" || name == "twins") && errors.Is(m.err, keystore.ErrExists):
		default:
			t.Fatalf("%s: unexpected answer %v", name, m.err)
		}
	}
	limits["u0"] = 30
	for name, limit := range limits {
		owner := keystore.Service(name)
		if name == "u0" {
			owner = keystore.PasswordUser(name)
		}
		keys, err := a.KeysByOwner(ctx, owner)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != limit || answered[name] != limit || limited[name] != perOwner-limit {
			t.Errorf("%s (limit %d): %d keys stored, %d answered stored, %d ErrLimit; want %d, %d, %d",
				name, limit, len(keys), answered[name], limited[name], limit, limit, perOwner-limit)
		}
	}
	if answered["free"] != perOwner || answered["nobody"] != 0 || answered["late"] != 0 {
		t.Errorf("free %d (want %d), nobody %d, late %d (want 0)", answered["free"], perOwner, answered["nobody"], answered["late"])
	}
	for id, n := range twins {
		if n != 1 {
			t.Errorf("twin id %s: %d mints answered stored, want 1", id, n)
		}
	}
	if len(twins) != perOwner/10 {
		t.Errorf("%d twin ids stored, want %d", len(twins), perOwner/10)
	}
	stores := 0
	for _, n := range answered {
		stores += n
	}
	// Each group commit is one revision, besides retries and reads.
	if txns >= int64(stores) {
		t.Errorf("%d keys stored in %d revisions: no group commit shared", stores, txns)
	}
	t.Logf("%d mints, %d keys stored, the revision moved by %d", len(mints), stores, txns)
}

// A group whose answer is lost after etcd applied it is tried again, and
// each of its keys is answered as stored, even when the group filled its
// owner's limit (the count after it finds the limit reached).
func TestGroupWhoseAnswerIsLostStoresEveryKeyOnce(t *testing.T) {
	s, loser := openWithAnswerLoser(t, "/lost-group/")
	for _, tc := range []struct{ before, mints, limit int }{
		{0, 24, 0}, {0, 24, 24}, {23, 1, 24}, // the last: the count after the lost answer is at the limit
	} {
		t.Run(fmt.Sprintf("before=%d,mints=%d,limit=%d", tc.before, tc.mints, tc.limit), func(t *testing.T) {
			owner := keystore.Service(fmt.Sprintf("group-%d-%d", tc.before, tc.limit))
			for range tc.before {
				if err := s.CreateKey(context.Background(), newMintKey(owner), keystore.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			var mints []*mint
			for range tc.mints {
				mints = append(mints, &mint{key: newMintKey(owner), opts: keystore.CreateOptions{MaxPerOwner: tc.limit}})
			}
			loser.armed.Store(true)
			mintAll(mints, s)
			if loser.armed.Load() {
				t.Fatal("no answer was lost: the test did not test anything")
			}
			for _, m := range mints {
				if m.err != nil {
					t.Fatalf("a key of a group whose answer was lost: %v", m.err)
				}
			}
			if keys, _ := s.KeysByOwner(context.Background(), owner); len(keys) != tc.before+len(mints) {
				t.Fatalf("%d keys stored, want %d", len(keys), tc.before+len(mints))
			}
		})
	}
}

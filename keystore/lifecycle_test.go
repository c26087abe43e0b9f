package keystore

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// owner acts as the password user name, signed in with a password.
func owner(name string) Actor { return Actor{Owner: PasswordUser(name)} }

// clock is a settable time for Options.Now.
type clock struct {
	base   time.Time
	offset atomic.Int64
}

func newClock() *clock                   { return &clock{base: time.Now()} }
func (c *clock) now() time.Time          { return c.base.Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

func TestMintLimitPerOwner(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{Policy: Policy{
		MaxKeysPerOwner: 3,
		ConfigUsers:     map[string]UserRules{"alice": {}, "bob": {}},
	}})
	ctx := context.Background()
	var wg sync.WaitGroup
	var ok, limited atomic.Int64
	for range 10 {
		wg.Go(func() {
			_, err := kr.Mint(ctx, owner("alice"), KeyRequest{})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrLimit):
				limited.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 3 || limited.Load() != 7 {
		t.Fatalf("%d minted, %d limited; want 3 and 7", ok.Load(), limited.Load())
	}
	if _, err := kr.Mint(ctx, owner("bob"), KeyRequest{}); err != nil {
		t.Fatalf("another owner is limited too: %v", err)
	}
	// Operators are not held to the cap.
	if _, err := kr.Mint(ctx, Actor{Owner: PasswordUser("alice"), Operator: true}, KeyRequest{}); err != nil {
		t.Fatalf("operator at the cap: %v", err)
	}
}

func TestRotate(t *testing.T) {
	c := newClock()
	kr, _ := newTestKeyring(t, Options{Now: c.now, Policy: Policy{ConfigUsers: map[string]UserRules{"alice": {Scopes: []string{"read"}}}}})
	ctx := context.Background()
	old, err := kr.Mint(ctx, owner("alice"), KeyRequest{Title: "ci", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyWithin(ctx, old.Secret, nil, ""); err != nil { // cached
		t.Fatal(err)
	}

	next, was, err := kr.Rotate(ctx, owner("alice"), old.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if was.ID != old.ID || next.ID == old.ID || next.Owner != PasswordUser("alice") || next.Title != "ci" ||
		!slices.Equal(next.Scopes, []string{"read"}) {
		t.Fatalf("rotated %+v from %+v", next.Key, was)
	}
	for _, s := range []string{old.Secret, next.Secret} {
		if _, err := kr.VerifyWithin(ctx, s, nil, ""); err != nil {
			t.Fatalf("within grace: %v", err)
		}
	}
	c.advance(time.Minute)
	if _, err := kr.VerifyWithin(ctx, old.Secret, nil, ""); !errors.Is(err, ErrExpired) {
		t.Fatalf("old key after grace: %v", err)
	}
	if _, err := kr.VerifyWithin(ctx, next.Secret, nil, ""); err != nil {
		t.Fatalf("new key after grace: %v", err)
	}

	// Without grace the old key is gone at once.
	third, _, err := kr.Rotate(ctx, owner("alice"), next.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyWithin(ctx, next.Secret, nil, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rotated-out key: %v", err)
	}
	if _, err := kr.VerifyWithin(ctx, third.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kr.Rotate(ctx, owner("alice"), "nosuchid", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rotate unknown: %v", err)
	}
}

func TestRotateGraceNeverExtendsExpiry(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	old, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{Lifetime: time.Minute})
	next, _, err := kr.Rotate(ctx, operator, old.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := kr.KeyByID(ctx, old.ID)
	if !k.Expires.Equal(old.Expires) || !k.Rotated {
		t.Fatalf("grace moved expiry from %v to %v (rotated %v)", old.Expires, k.Expires, k.Rotated)
	}
	if !next.Expires.Equal(old.Expires) {
		t.Fatalf("successor expires %v, want the old key's %v", next.Expires, old.Expires)
	}
}

// An operator-disabled key must not come back to life through its owner.
func TestRotateRefusesDisabledKeys(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{Policy: Policy{ConfigUsers: map[string]UserRules{"alice": {}}}})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, owner("alice"), KeyRequest{})
	if _, _, err := kr.ChangeDisabled(ctx, m.ID, true); err != nil {
		t.Fatal(err)
	}
	for _, grace := range []time.Duration{0, time.Hour} {
		if _, _, err := kr.Rotate(ctx, owner("alice"), m.ID, grace); !errors.Is(err, ErrDisabled) {
			t.Fatalf("rotate a disabled key (grace %v): %v, want ErrDisabled", grace, err)
		}
	}
	keys, _ := kr.KeysByOwner(ctx, PasswordUser("alice"))
	if len(keys) != 1 || !keys[0].Disabled {
		t.Fatalf("after refused rotations alice holds %+v", keys)
	}
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrDisabled) {
		t.Fatalf("disabled key: %v", err)
	}
}

// Rotations with grace never leave an owner more working keys than the cap,
// however many run at once, and a key in its grace period does not start
// another chain.
func TestRotateHonoursTheCap(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{Policy: Policy{MaxKeysPerOwner: 1, ConfigUsers: map[string]UserRules{"alice": {}}}})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, owner("alice"), KeyRequest{})
	var wg sync.WaitGroup
	var limited atomic.Int64
	for range 5 {
		wg.Go(func() {
			_, _, err := kr.Rotate(ctx, owner("alice"), m.ID, time.Hour)
			if errors.Is(err, ErrLimit) {
				limited.Add(1)
			} else {
				t.Errorf("rotation with grace at the cap: %v, want ErrLimit", err)
			}
		})
	}
	wg.Wait()
	if keys, _ := kr.KeysByOwner(ctx, PasswordUser("alice")); len(keys) != 1 || limited.Load() != 5 {
		t.Fatalf("alice holds %d keys after 5 rotations with grace under a cap of 1", len(keys))
	}
	// Without grace the old key goes: the cap is kept.
	if _, _, err := kr.Rotate(ctx, owner("alice"), m.ID, 0); err != nil {
		t.Fatal(err)
	}

	kr2, _ := newTestKeyring(t, Options{Policy: Policy{MaxKeysPerOwner: 3, ConfigUsers: map[string]UserRules{"bob": {}}}})
	first, _ := kr2.Mint(ctx, owner("bob"), KeyRequest{})
	if _, _, err := kr2.Rotate(ctx, owner("bob"), first.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, grace := range []time.Duration{0, time.Hour} {
		if _, _, err := kr2.Rotate(ctx, owner("bob"), first.ID, grace); !errors.Is(err, ErrRotated) {
			t.Fatalf("rotating a key in its grace period (grace %v): %v, want ErrRotated", grace, err)
		}
	}
}

// The successor of a rotation is minted under the policy of the day.
func TestRotateAppliesTodaysPolicy(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	then := NewKeyring(s, Options{FlushInterval: time.Hour, Policy: Policy{
		ConfigUsers: map[string]UserRules{"alice": {Scopes: []string{"read", "admin"}}},
	}})
	forever, err := then.Mint(ctx, owner("alice"), KeyRequest{Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := then.Mint(ctx, owner("alice"), KeyRequest{Scopes: []string{"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = then.Close()

	// Since then: keys live at most a day, and alice lost "admin".
	now := NewKeyring(s, Options{FlushInterval: time.Hour, Policy: Policy{
		MaxLifetime: 24 * time.Hour,
		ConfigUsers: map[string]UserRules{"alice": {Scopes: []string{"read"}}},
	}})
	defer now.Close()
	next, _, err := now.Rotate(ctx, owner("alice"), forever.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if next.Expires.IsZero() || next.Expires.After(time.Now().Add(24*time.Hour)) {
		t.Fatalf("successor of a key that never expired expires %v, want within a day", next.Expires)
	}
	var se *ScopeError
	if _, _, err := now.Rotate(ctx, owner("alice"), admin.ID, 0); !errors.As(err, &se) || se.Scope != "admin" {
		t.Fatalf("rotating a key with a scope no longer granted: %v, want a ScopeError for admin", err)
	}
	// A vocabulary that dropped the scope refuses it too, even to operators.
	strict := NewKeyring(s, Options{FlushInterval: time.Hour, Policy: Policy{Scopes: []string{"read"},
		ConfigUsers: map[string]UserRules{"alice": {Scopes: []string{"read"}}}}})
	defer strict.Close()
	if _, _, err := strict.Rotate(ctx, operator, admin.ID, 0); !errors.As(err, &se) || !se.Unknown {
		t.Fatalf("operator rotation of a key with a scope outside the vocabulary: %v", err)
	}
}

func TestEntitlements(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{Policy: Policy{
		Scopes:      []string{"read", "write", "admin"},
		ConfigUsers: map[string]UserRules{"alice": {Scopes: []string{"read"}}},
		Sources:     map[string]SourceRules{"jwt:https://idp.example": {}},
	}})
	ctx := context.Background()
	if err := kr.AddUser(ctx, User{Name: "bob", PasswordHash: "h", Scopes: []string{"read", "write"}}, RefuseOrphans); err != nil {
		t.Fatal(err)
	}
	idp := Owner{Source: "jwt:https://idp.example", Name: "carol"}
	for _, tc := range []struct {
		name   string
		actor  Actor
		scopes []string
		refuse string // the scope refused, "" if none
	}{
		{"config user within grants", owner("alice"), []string{"read"}, ""},
		{"config user beyond grants", owner("alice"), []string{"read", "admin"}, "admin"},
		{"stored user within grants", owner("bob"), []string{"write", "read"}, ""},
		{"stored user beyond grants", owner("bob"), []string{"admin"}, "admin"},
		{"token within its scopes", Actor{Owner: idp, FromToken: true, TokenScopes: []string{"read", "write"}}, []string{"write"}, ""},
		{"token beyond its scopes", Actor{Owner: idp, FromToken: true, TokenScopes: []string{"read"}}, []string{"write"}, "write"},
		{"token of a password user: both must grant", Actor{Owner: PasswordUser("bob"), FromToken: true, TokenScopes: []string{"read", "admin"}}, []string{"admin"}, "admin"},
		{"operator", Actor{Owner: Service("ci"), Operator: true}, []string{"admin"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := kr.Mint(ctx, tc.actor, KeyRequest{Scopes: tc.scopes})
			var se *ScopeError
			switch {
			case tc.refuse == "" && err != nil:
				t.Fatalf("Mint: %v", err)
			case tc.refuse == "" && !sameSet(m.Scopes, tc.scopes):
				t.Fatalf("minted scopes %v, want %v", m.Scopes, tc.scopes)
			case tc.refuse != "" && (!errors.As(err, &se) || se.Scope != tc.refuse || se.Unknown):
				t.Fatalf("Mint: %v, want a refusal of %q", err, tc.refuse)
			}
		})
	}
	var se *ScopeError
	if _, err := kr.Mint(ctx, Actor{Owner: Service("ci"), Operator: true}, KeyRequest{Scopes: []string{"root"}}); !errors.As(err, &se) || !se.Unknown {
		t.Fatalf("scope outside the vocabulary: %v", err)
	}
	if _, err := kr.SetUserScopes(ctx, "bob", []string{"root"}); !errors.As(err, &se) || !se.Unknown {
		t.Fatalf("granting a scope outside the vocabulary: %v", err)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// Keys do not outlive their owners: a config user removed by a reload (a
// new Keyring) loses their keys from the next request on, and gets them
// back if declared again.
func TestOrphanedKeysAreRefused(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	open := func(users map[string]UserRules) *Keyring {
		kr := NewKeyring(s, Options{FlushInterval: time.Hour, Policy: Policy{ConfigUsers: users}})
		t.Cleanup(func() { _ = kr.Close() })
		return kr
	}
	before := open(map[string]UserRules{"alice": {}, "bob": {}})
	m, err := before.Mint(ctx, owner("alice"), KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	svc, _ := before.Mint(ctx, operatorFor("alice"), KeyRequest{})

	after := open(map[string]UserRules{"bob": {}})
	if _, err := after.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrOrphaned) {
		t.Fatalf("key of a removed user: %v, want ErrOrphaned", err)
	}
	if _, err := after.VerifyWithin(ctx, svc.Secret, nil, ""); err != nil {
		t.Fatalf("the service alice is not the removed user: %v", err)
	}
	keys, _ := after.Keys(ctx)
	for _, k := range keys {
		if k.Orphaned != (k.ID == m.ID) {
			t.Fatalf("listing marks %s orphaned=%v", k.ID, k.Orphaned)
		}
	}
	if _, err := after.Mint(ctx, owner("alice"), KeyRequest{}); !errors.Is(err, ErrUnknownOwner) {
		t.Fatalf("minting for a removed user: %v", err)
	}
	// A new stored user of that name does not inherit the keys unless the
	// operator says it is the same person.
	var oe *OrphansError
	if err := after.AddUser(ctx, User{Name: "alice", PasswordHash: "h"}, RefuseOrphans); !errors.As(err, &oe) || oe.Keys != 1 {
		t.Fatalf("adding a user with orphaned keys: %v", err)
	}
	if err := after.AddUser(ctx, User{Name: "alice", PasswordHash: "h"}, AdoptOrphans); err != nil {
		t.Fatal(err)
	}
	if _, err := after.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatalf("key adopted by the user added back: %v", err)
	}
	// Revoking them instead.
	if _, err := after.RemoveUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, m.Key, CreateOptions{}); err != nil { // an orphan again
		t.Fatal(err)
	}
	if err := after.AddUser(ctx, User{Name: "alice", PasswordHash: "h"}, RevokeOrphans); err != nil {
		t.Fatal(err)
	}
	if _, err := after.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key of the former alice after RevokeOrphans: %v", err)
	}
	// A name the configuration declares cannot be stored as well.
	if err := after.AddUser(ctx, User{Name: "bob", PasswordHash: "h"}, AdoptOrphans); !errors.Is(err, ErrConfigUser) {
		t.Fatalf("storing a config user: %v", err)
	}
}

// An orphan verdict cached by one gateway is looked up again after
// ownerRecheck, so a user added through another gateway gets their keys
// back without a reload.
func TestOrphanVerdictIsRechecked(t *testing.T) {
	ctx := context.Background()
	c := newClock()
	s := openTestStore(t)
	kr := NewKeyring(s, Options{FlushInterval: time.Hour, Now: c.now})
	defer kr.Close()
	if err := s.CreateUser(ctx, User{Name: "alice", PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	m, _ := kr.Mint(ctx, owner("alice"), KeyRequest{})
	if _, err := s.DeleteUser(ctx, "alice"); err != nil { // behind the Keyring's back
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, m.Key, CreateOptions{}); err != nil { // the key survives somehow
		t.Fatal(err)
	}
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrOrphaned) {
		t.Fatalf("orphaned key: %v", err)
	}
	if err := s.CreateUser(ctx, User{Name: "alice", PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrOrphaned) {
		t.Fatalf("cached verdict: %v", err)
	}
	c.advance(ownerRecheck + time.Second)
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatalf("after the recheck interval: %v", err)
	}
}

// The same name from two sources is two owners: neither can see, rotate
// or delete the other's keys.
func TestOwnersOfOtherSourcesCannotActOnKeys(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{Policy: Policy{ConfigUsers: map[string]UserRules{"alice": {}}}})
	ctx := context.Background()
	mine, _ := kr.Mint(ctx, owner("alice"), KeyRequest{})
	impostor := Actor{Owner: Owner{Source: "jwt:https://idp.example", Name: "alice"}, FromToken: true}
	if keys, _ := kr.KeysByOwner(ctx, impostor.Owner); len(keys) != 0 {
		t.Fatalf("the issuer's alice sees %d of the password user's keys", len(keys))
	}
	if _, _, err := kr.Rotate(ctx, impostor, mine.ID, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rotate another source's key: %v", err)
	}
	if _, err := kr.Delete(ctx, impostor, mine.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete another source's key: %v", err)
	}
	if _, err := kr.VerifyWithin(ctx, mine.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
}

func TestMintRefusesBadNames(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	for _, name := range []string{"", "carol\x00x", "a\x1fb", "tab\tname", "\xff\xfe", string(make([]byte, maxNameLen+1))} {
		a := Actor{Owner: Owner{Source: "jwt:https://idp.example", Name: name}, FromToken: true}
		if _, err := kr.Mint(ctx, a, KeyRequest{}); !errors.Is(err, ErrBadName) {
			t.Errorf("Mint for %q: %v, want ErrBadName", name, err)
		}
	}
	if keys, _ := kr.Keys(ctx); len(keys) != 0 {
		t.Fatalf("%d keys stored for bad names", len(keys))
	}
}

func TestRevokeOwner(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{Policy: Policy{Sources: map[string]SourceRules{"jwt:https://idp.example": {}}}})
	ctx := context.Background()
	idp := Owner{Source: "jwt:https://idp.example", Name: "carol"}
	var secrets []string
	for range 3 {
		m, _ := kr.Mint(ctx, Actor{Owner: idp, Operator: true}, KeyRequest{})
		secrets = append(secrets, m.Secret)
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil { // cached
			t.Fatal(err)
		}
	}
	other, _ := kr.Mint(ctx, operatorFor("carol"), KeyRequest{})
	removed, err := kr.RevokeOwner(ctx, idp)
	if err != nil || len(removed) != 3 {
		t.Fatalf("RevokeOwner = %d keys, %v", len(removed), err)
	}
	for _, s := range secrets {
		if _, err := kr.VerifyWithin(ctx, s, nil, ""); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoked key: %v", err)
		}
	}
	if _, err := kr.VerifyWithin(ctx, other.Secret, nil, ""); err != nil {
		t.Fatalf("another owner's key: %v", err)
	}
}

func TestSetDisabled(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	m, _ := kr.Mint(ctx, operatorFor("alice"), KeyRequest{Title: "t"})
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	k, _, err := kr.ChangeDisabled(ctx, m.ID, true)
	if err != nil || !k.Disabled || k.Title != "t" || k.Hash != m.Hash {
		t.Fatalf("SetDisabled = %+v, %v", k, err)
	}
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrDisabled) {
		t.Fatalf("disabled key (was cached): %v", err)
	}
	if _, _, err := kr.ChangeDisabled(ctx, m.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatalf("re-enabled key: %v", err)
	}
	if _, _, err := kr.ChangeDisabled(ctx, "nosuchid", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("disable unknown: %v", err)
	}
}

func TestRemoveUserRevokesTheirKeys(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	for _, name := range []string{"bob", "alice"} {
		if err := kr.AddUser(ctx, User{Name: name, PasswordHash: "h1", Created: time.Now()}, RefuseOrphans); err != nil {
			t.Fatal(err)
		}
	}
	bobKey, _ := kr.Mint(ctx, owner("bob"), KeyRequest{})
	aliceKey, _ := kr.Mint(ctx, owner("alice"), KeyRequest{})
	if _, err := kr.VerifyWithin(ctx, bobKey.Secret, nil, ""); err != nil {
		t.Fatal(err)
	}
	removed, err := kr.RemoveUser(ctx, "bob")
	if err != nil || len(removed) != 1 || removed[0].ID != bobKey.ID {
		t.Fatalf("RemoveUser = %+v, %v", removed, err)
	}
	if _, err := kr.VerifyWithin(ctx, bobKey.Secret, nil, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed user's key: %v", err)
	}
	if _, err := kr.VerifyWithin(ctx, aliceKey.Secret, nil, ""); err != nil {
		t.Fatalf("other user's key: %v", err)
	}
	if _, err := kr.RemoveUser(ctx, "bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
}

// Keys made for a token issuer's identities follow its rules whoever makes
// them, and keys of an issuer the configuration no longer has are refused.
func TestSourcesRules(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t)
	idp := Owner{Source: "jwt:https://idp.example", Name: "carol"}
	kr := NewKeyring(s, Options{FlushInterval: time.Hour, Policy: Policy{
		Sources: map[string]SourceRules{idp.Source: {MaxLifetime: time.Hour}},
	}})
	defer kr.Close()
	m, err := kr.Mint(ctx, Actor{Owner: idp, Operator: true}, KeyRequest{})
	if err != nil || m.Expires.IsZero() || m.Expires.After(time.Now().Add(time.Hour)) {
		t.Fatalf("operator key for a token identity: %+v, %v; want it to expire within the issuer's hour", m.Key, err)
	}
	var re *RequestError
	if _, err := kr.Mint(ctx, Actor{Owner: Owner{Source: "jwt:https://typo.example", Name: "x"}, Operator: true}, KeyRequest{}); !errors.As(err, &re) {
		t.Fatalf("key for an unknown source: %v", err)
	}
	without := NewKeyring(s, Options{FlushInterval: time.Hour})
	defer without.Close()
	if _, err := without.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrOrphaned) {
		t.Fatalf("key of an issuer no longer configured: %v", err)
	}
	// An issuer without issuer files tokens under their own "iss".
	anyIss := NewKeyring(s, Options{FlushInterval: time.Hour, Policy: Policy{AnySource: &SourceRules{}}})
	defer anyIss.Close()
	if _, err := anyIss.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatalf("key of a namespace an issuer-less block covers: %v", err)
	}
	// Without the configuration, nothing is minted and nothing is called
	// orphaned.
	tool := NewKeyring(s, Options{FlushInterval: time.Hour, Policy: Policy{Unknown: true}})
	defer tool.Close()
	if _, err := tool.Mint(ctx, operatorFor("x"), KeyRequest{}); !errors.Is(err, ErrPolicyUnknown) {
		t.Fatalf("minting without the policy: %v", err)
	}
	if keys, _ := tool.Keys(ctx); len(keys) != 1 || keys[0].Orphaned {
		t.Fatalf("listing without the policy: %+v", keys)
	}
}

// A key minted while its stored user is being removed is either removed
// with the user or not minted: it never outlives them.
func TestMintRacingUserRemoval(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	for round := range 20 {
		name := "dave" + strconv.Itoa(round)
		if err := kr.AddUser(ctx, User{Name: name, PasswordHash: "h"}, RefuseOrphans); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 10 {
					_, err := kr.Mint(ctx, owner(name), KeyRequest{})
					if err != nil && !errors.Is(err, ErrUnknownOwner) {
						t.Error(err)
					}
				}
			})
		}
		if _, err := kr.RemoveUser(ctx, name); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if keys, _ := kr.KeysByOwner(ctx, PasswordUser(name)); len(keys) != 0 {
			t.Fatalf("round %d: %d keys outlived their user", round, len(keys))
		}
	}
}

package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A reported key is refused at once and for good (unless only disabled);
// anything that is not a key here is not found, and nothing is written.
func TestReportLeak(t *testing.T) {
	s := openTestStore(t)
	kr := NewKeyring(s, Options{FlushInterval: time.Hour})
	defer kr.Close()
	ctx := context.Background()
	mint := func() Minted {
		m, err := kr.Mint(ctx, operatorFor("ci"), KeyRequest{Title: "t"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil { // cached
			t.Fatal(err)
		}
		return m
	}

	t.Run("revoked for good, once however many report it at once", func(t *testing.T) {
		m := mint()
		var wg sync.WaitGroup
		var changed atomic.Int64
		for range 32 {
			wg.Go(func() {
				rep, err := kr.ReportLeak(ctx, m.Secret, false)
				if err != nil || !rep.Found || !rep.Key.Leaked || !rep.Key.Disabled {
					t.Errorf("ReportLeak = %+v, %v", rep, err)
				}
				if rep.Changed {
					changed.Add(1)
				}
			})
		}
		wg.Wait()
		if changed.Load() != 1 {
			t.Fatalf("%d of 32 reports at once changed the key, want 1", changed.Load())
		}
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); !errors.Is(err, ErrDisabled) {
			t.Fatalf("the leaked key verified: %v", err)
		}
		if _, _, err := kr.ChangeDisabled(ctx, m.ID, false); !errors.Is(err, ErrLeaked) {
			t.Fatalf("enabling a leaked key: %v", err)
		}
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err == nil {
			t.Fatal("the leaked key works again")
		}
	})

	t.Run("disable only", func(t *testing.T) {
		m := mint()
		if rep, err := kr.ReportLeak(ctx, m.Secret, true); err != nil || !rep.Found || !rep.Changed || rep.Key.Leaked || !rep.Key.Disabled {
			t.Fatalf("ReportLeak(disableOnly) = %+v, %v", rep, err)
		}
		if _, _, err := kr.ChangeDisabled(ctx, m.ID, false); err != nil {
			t.Fatalf("enabling a key disabled after review: %v", err)
		}
		if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
			t.Fatalf("the enabled key: %v", err)
		}
		// Leaked again after it was enabled: a change again.
		if rep, err := kr.ReportLeak(ctx, m.Secret, true); err != nil || !rep.Changed {
			t.Fatalf("the second leak of an enabled key: %+v, %v", rep, err)
		}
		if rep, err := kr.ReportLeak(ctx, m.Secret, false); err != nil || !rep.Changed || !rep.Key.Leaked {
			t.Fatalf("revoking a key disabled for a leak: %+v, %v", rep, err)
		}
		if _, _, err := kr.ChangeDisabled(ctx, m.ID, false); !errors.Is(err, ErrLeaked) {
			t.Fatalf("enabling it: %v", err)
		}
	})

	t.Run("not keys here", func(t *testing.T) {
		m := mint()
		unknown, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
		if _, err := kr.Delete(ctx, operator, m.ID); err != nil {
			t.Fatal(err)
		}
		for name, tok := range map[string]string{"unknown": unknown, "deleted": m.Secret, "malformed": "sk-nope", "empty": "",
			"bad checksum": m.Secret[:len(m.Secret)-1] + string(m.Secret[len(m.Secret)-1]^1)} {
			if rep, err := kr.ReportLeak(ctx, tok, false); rep.Found || err != nil {
				t.Errorf("%s: ReportLeak = %+v, %v", name, rep, err)
			}
		}
	})
}

// Disabling a disabled key (or enabling an enabled one) writes nothing
// and says so, so that nothing is told twice.
func TestChangeDisabledReportsChanges(t *testing.T) {
	s := openTestStore(t)
	kr := NewKeyring(s, Options{FlushInterval: time.Hour})
	defer kr.Close()
	ctx := context.Background()
	m, err := kr.Mint(ctx, operatorFor("ci"), KeyRequest{Title: "t"})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct{ disabled, changed bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
		k, changed, err := kr.ChangeDisabled(ctx, m.ID, c.disabled)
		if err != nil || changed != c.changed || k.Disabled != c.disabled || k.ID != m.ID {
			t.Fatalf("step %d: ChangeDisabled(%v) = %+v, %v, %v; want changed %v", i, c.disabled, k.ID, changed, err, c.changed)
		}
	}
	if _, _, err := kr.ChangeDisabled(ctx, "nosuch", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

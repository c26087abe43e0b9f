package keystore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// A reported key is refused at once and for good (unless only disabled);
// anything that is not a key here is not found, and nothing is written.
func TestReportLeak(t *testing.T) {
	s, _ := openTestBolt(t)
	kr := NewKeyring(s, Options{FlushInterval: time.Hour})
	defer kr.Close()
	ctx := context.Background()
	mint := func() Minted {
		m, err := kr.Mint(ctx, operatorFor("ci"), KeyRequest{Title: "t"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kr.Verify(ctx, m.Secret); err != nil { // cached
			t.Fatal(err)
		}
		return m
	}

	t.Run("revoked for good, once however many report it at once", func(t *testing.T) {
		m := mint()
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				if k, found, err := kr.ReportLeak(ctx, m.Secret, false); err != nil || !found || !k.Leaked || !k.Disabled {
					t.Errorf("ReportLeak = %+v, %v, %v", k, found, err)
				}
			})
		}
		wg.Wait()
		if _, err := kr.Verify(ctx, m.Secret); !errors.Is(err, ErrDisabled) {
			t.Fatalf("the leaked key verified: %v", err)
		}
		if _, err := kr.SetDisabled(ctx, m.ID, false); !errors.Is(err, ErrLeaked) {
			t.Fatalf("enabling a leaked key: %v", err)
		}
		if _, err := kr.Verify(ctx, m.Secret); err == nil {
			t.Fatal("the leaked key works again")
		}
	})

	t.Run("disable only", func(t *testing.T) {
		m := mint()
		if k, found, err := kr.ReportLeak(ctx, m.Secret, true); err != nil || !found || k.Leaked || !k.Disabled {
			t.Fatalf("ReportLeak(disableOnly) = %+v, %v, %v", k, found, err)
		}
		if _, err := kr.SetDisabled(ctx, m.ID, false); err != nil {
			t.Fatalf("enabling a key disabled after review: %v", err)
		}
		if _, err := kr.Verify(ctx, m.Secret); err != nil {
			t.Fatalf("the enabled key: %v", err)
		}
	})

	t.Run("not keys here", func(t *testing.T) {
		m := mint()
		unknown, _ := NewKey(DefaultPrefix)
		if _, err := kr.Delete(ctx, operator, m.ID); err != nil {
			t.Fatal(err)
		}
		for name, tok := range map[string]string{"unknown": unknown, "deleted": m.Secret, "malformed": "sk-nope", "empty": "",
			"bad checksum": m.Secret[:len(m.Secret)-1] + string(m.Secret[len(m.Secret)-1]^1)} {
			if k, found, err := kr.ReportLeak(ctx, tok, false); found || err != nil {
				t.Errorf("%s: ReportLeak = %+v, %v, %v", name, k, found, err)
			}
		}
	})
}

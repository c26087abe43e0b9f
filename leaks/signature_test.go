package leaks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/scannertest"
)

func TestVerify(t *testing.T) {
	sc := scannertest.NewScanner(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys, err := NewKeys(ctx, KeysConfig{URL: sc.URL, Refresh: time.Hour, UnknownRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`[{"token":"t","type":"x"}]`)
	sig := sc.Sign(t, "k1", body)
	// The first alert waits for the first fetch.
	if err := keys.Verify(body, "k1", sig); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	for _, c := range []struct{ name, id, sig string }{
		{"another body's signature", "k1", sc.Sign(t, "k1", []byte(`[]`))},
		{"no identifier", "", sig},
		{"no signature", "k1", ""},
		{"signature not base64", "k1", "!!!"},
		{"truncated signature", "k1", sig[:20]},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := keys.Verify(body, c.id, c.sig); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Verify = %v, want ErrBadSignature", err)
			}
		})
	}
	// A key the scanner starts using is fetched at its first alert, and
	// unknown identifiers fetch at most once per UnknownRefresh.
	before := sc.Fetches.Load()
	sc.AddKey(t, "k2")
	if err := keys.Verify(body, "k2", sc.Sign(t, "k2", body)); err != nil {
		t.Fatalf("the scanner's new key: %v", err)
	}
	for range 20 {
		if err := keys.Verify(body, "made-up", sig); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("unknown identifier: %v", err)
		}
	}
	if n := sc.Fetches.Load() - before; n != 1 {
		t.Fatalf("%d fetches for a new key and 20 made-up identifiers within UnknownRefresh, want 1", n)
	}
	cancel()
	<-keys.Done()
}

// faultCountingKeys are the keys of sc, fetched again at once for an
// unknown key id, with a count of the faults of its list.
func faultCountingKeys(t *testing.T, sc *scannertest.Scanner) (*Keys, *atomic.Int64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	faults := new(atomic.Int64)
	keys, err := NewKeys(ctx, KeysConfig{URL: sc.URL, Refresh: time.Hour, UnknownRefresh: time.Nanosecond,
		OnError: func(error) { faults.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	return keys, faults
}

// A source that answers with no usable key (an empty object, null, an
// empty list, keys of another kind) keeps the keys known: alerts signed
// with them still verify.
func TestBrokenKeyListKeepsTheKeys(t *testing.T) {
	sc := scannertest.NewScanner(t)
	keys, faults := faultCountingKeys(t, sc)
	body := []byte(`[{"token":"t"}]`)
	sig := sc.Sign(t, "k1", body)
	if err := keys.Verify(body, "k1", sig); err != nil {
		t.Fatal(err)
	}
	for _, broken := range []string{`{}`, `null`, `{"public_keys":[]}`, `{"public_keys":[{"key_identifier":"x","key":"not PEM"}]}`, `<html>`} {
		sc.Broken.Store(&broken)
		before := faults.Load()
		_ = keys.Verify(body, "unknown-id", sig) // makes it fetch
		if faults.Load() != before+1 {
			t.Errorf("%s: the fault was not reported", broken)
		}
		if err := keys.Verify(body, "k1", sig); err != nil {
			t.Errorf("after the source answered %s: %v", broken, err)
		}
	}
}

func TestKeysURLMustBeSafe(t *testing.T) {
	if _, err := NewKeys(context.Background(), KeysConfig{URL: "http://scanner.example.com/keys"}); err == nil {
		t.Fatal("plain http to a remote host accepted")
	}
}

// Headers and bodies from anyone: Verify never panics and accepts only
// the scanner's own signature of the body.
func FuzzVerify(f *testing.F) {
	sc := scannertest.NewScanner(f)
	keys, err := NewKeys(f.Context(), KeysConfig{URL: sc.URL, Refresh: time.Hour, UnknownRefresh: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	body := []byte(`[{"token":"t"}]`)
	good := sc.Sign(f, "k1", body)
	f.Add(body, "k1", good)
	f.Add([]byte(`[]`), "k1", good)
	f.Add(body, "k2", good)
	f.Add(body, "k1", "MEUCIQ==")
	f.Fuzz(func(t *testing.T, b []byte, id, sig string) {
		err := keys.Verify(b, id, sig)
		if err == nil && !(string(b) == string(body) && id == "k1") {
			t.Fatalf("Verify accepted %q signed %q by %q", b, sig, id)
		}
		if err != nil && !errors.Is(err, ErrBadSignature) {
			t.Fatalf("error %v is not ErrBadSignature", err)
		}
	})
}

// A key list is read once, strictly: a list that names a member twice (in
// any letter case) is a fault of its source, whose keys are not learnt,
// even when one reading of it would have given a usable key.
func TestKeyListIsReadOnce(t *testing.T) {
	sc := scannertest.NewScanner(t)
	keys, faults := faultCountingKeys(t, sc)
	body := []byte(`[{"token":"t"}]`)
	if err := keys.Verify(body, "k1", sc.Sign(t, "k1", body)); err != nil { // the first list is in
		t.Fatal(err)
	}
	sc.AddKey(t, "k2")
	res, err := http.Get(sc.URL)
	if err != nil {
		t.Fatal(err)
	}
	list, _ := io.ReadAll(res.Body)
	res.Body.Close()
	ambiguous := `{"Public_Keys": [], ` + string(bytes.TrimPrefix(bytes.TrimSpace(list), []byte("{")))
	sc.Broken.Store(&ambiguous)
	if err := keys.Verify(body, "k2", sc.Sign(t, "k2", body)); err == nil {
		t.Fatal("a key learnt from a list that repeats a member")
	}
	if faults.Load() == 0 {
		t.Fatal("the ambiguous list was not reported as a fault")
	}
	sc.Broken.Store(nil)
	if err := keys.Verify(body, "k2", sc.Sign(t, "k2", body)); err != nil {
		t.Fatalf("the same key from a well-formed list: %v", err)
	}
}

package caddymodule

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func TestUnknownKeyBudgetPerAddress(t *testing.T) {
	u := (&UnknownKeyBudget{Rate: 0.001, Burst: 3}).limiter()
	spend := func(addr string) bool {
		settle, ok := u.allow(addr)
		if ok {
			settle(false)
		}
		return ok
	}
	// Lookups of keys that exist give their token back.
	for range 100 {
		settle, ok := u.allow("2001:db8::1")
		if !ok {
			t.Fatal("lookups of existing keys spent the budget")
		}
		settle(true)
	}
	// Lookups in flight hold their tokens: no more run at once than the
	// bucket holds. One more waits for them: it goes on when one turns out
	// to exist, and is refused when they all turn out unknown.
	var held []func(bool)
	for range 3 {
		settle, ok := u.allow("2001:db8::1")
		if !ok {
			t.Fatal("lookup refused within the burst")
		}
		held = append(held, settle)
	}
	type result struct {
		settle func(bool)
		ok     bool
	}
	fourth := func() chan result {
		got := make(chan result, 1)
		go func() {
			settle, ok := u.allow("2001:db8::2")
			got <- result{settle, ok}
		}()
		select {
		case r := <-got:
			t.Fatalf("a fourth lookup at once, from the same /64, did not wait (ok=%v)", r.ok)
		case <-time.After(50 * time.Millisecond):
		}
		return got
	}
	got := fourth()
	held[0](true) // that key existed: its token is free again
	r := <-got
	if !r.ok {
		t.Fatal("the waiting lookup was refused although a token came back")
	}
	held[0] = r.settle
	got = fourth()
	for _, settle := range held {
		settle(false)
	}
	if (<-got).ok {
		t.Fatal("a waiting lookup was allowed after the budget was spent")
	}
	if spend("2001:db8::ffff") {
		t.Fatal("budget not spent by three unknown keys")
	}
	if !spend("2001:db8:0:1::1") || !spend("192.0.2.1") {
		t.Fatal("other clients share the spent budget")
	}
	if _, ok := (&UnknownKeyBudget{Disabled: true}).limiter().allow("x"); !ok {
		t.Fatal("a disabled budget refuses")
	}
	// The map of addresses stays bounded.
	u.max = 50
	for i := range 500 {
		spend(fmt.Sprintf("198.51.%d.%d", i/256, i%256))
	}
	if len(u.clients) > 50 {
		t.Fatalf("%d addresses tracked, bound 50", len(u.clients))
	}
}

// TestGateRefusesUnknownKeysOverBudget floods the gate with
// distinct well-formed unknown keys from one address: past the burst
// they are refused without a store read and counted, while a valid key
// from the same address and unknown keys from another address still go
// through.
func TestGateRefusesUnknownKeysOverBudget(t *testing.T) {
	app, err := provisionApp(t, `{"store": `+storeJSON(filepath.Join(t.TempDir(), "k.db"))+`,
		"unknown_key_budget": {"rate": 0.001, "burst": 5}}`)
	if err != nil {
		t.Fatal(err)
	}
	g := &APIKeyGate{}
	if err := g.setUp(app, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	m, err := app.keyring.Mint(t.Context(), keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	key := m.Secret
	send := func(k, from string) bool {
		r := httptest.NewRequest("GET", "/v1/", nil)
		r.RemoteAddr = from + ":1234"
		r.Header.Set("Authorization", "Bearer "+k)
		a := serveGate(g, r)
		if !a.admitted() && a.status != http.StatusUnauthorized {
			t.Fatalf("refused with %d, want 401", a.status)
		}
		return a.admitted()
	}
	if !send(key, "203.0.113.9") { // read once (given back: it exists), then cached
		t.Fatal("valid key refused")
	}
	before := histCount(t, app, "key_by_hash")
	for range 200 {
		unknown, _, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
		if send(unknown, "203.0.113.9") {
			t.Fatal("unknown key admitted")
		}
	}
	if n := histCount(t, app, "key_by_hash") - before; n != 5 {
		t.Fatalf("%d store reads for 200 unknown keys from one address, want the burst of 5", n)
	}
	if n := sample(t, app.metrics.validations, "result", "over_budget"); n != 195 {
		t.Fatalf("over_budget counted %v, want 195", n)
	}
	if !send(key, "203.0.113.9") {
		t.Fatal("a valid key from the flooding address was refused")
	}
	unknown, _, _ := keystore.NewKeyAndID(keystore.DefaultPrefix, time.Now())
	before = histCount(t, app, "key_by_hash")
	send(unknown, "198.51.100.1")
	if histCount(t, app, "key_by_hash") != before+1 {
		t.Fatal("another address's unknown key was not looked up")
	}
}

// histCount is how many store operations op the app has timed.
func histCount(t *testing.T, app *App, op string) int {
	t.Helper()
	return int(sample(t, app.metrics.storeLatency, "operation", op))
}

// sample reads the counter, or the histogram's count, labelled name=value
// in c.
func sample(t *testing.T, c prometheus.Collector, name, value string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == name && l.GetValue() == value {
					if h := m.GetHistogram(); h != nil {
						return float64(h.GetSampleCount())
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

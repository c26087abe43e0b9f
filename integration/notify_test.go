package integration

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
)

// webhookSecret signs the test's notices (24 bytes, base64).
const webhookSecret = "whsec_dGhlIHRlc3QncyB3ZWJob29rIHNlY3JldCEh"

// webhookReceiver is a Standard Webhooks receiver on loopback: it checks
// every signature, refuses deliveries while told to, can hold one
// delivery until released, and records what it accepted by webhook-id.
type webhookReceiver struct {
	*httptest.Server
	refusing atomic.Bool
	holding  atomic.Bool   // the next delivery waits for hold
	hold     chan struct{} // closed to let the held delivery go
	held     chan struct{} // closed when a delivery is being held
	calls    atomic.Int64
	badSig   atomic.Int64
	mu       sync.Mutex
	accepted map[string][]map[string]any // webhook-id → payloads accepted
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	secret, err := notify.ParseSecret(webhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	r := &webhookReceiver{accepted: map[string][]map[string]any{}, hold: make(chan struct{}), held: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.calls.Add(1)
		id := req.Header.Get("webhook-id")
		if !notify.Verify(secret, id, req.Header.Get("webhook-timestamp"), body, req.Header.Get("webhook-signature"), time.Now(), 5*time.Minute) {
			r.badSig.Add(1)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if r.holding.CompareAndSwap(true, false) {
			close(r.held)
			<-r.hold
		}
		if r.refusing.Load() {
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		var p map[string]any
		if err := json.Unmarshal(body, &p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.accepted[id] = append(r.accepted[id], p)
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

// byType returns, per event type, the key ids of the events accepted,
// and how many times the most repeated webhook-id was accepted.
func (r *webhookReceiver) byType() (map[string][]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]string{}
	most := 0
	for _, ps := range r.accepted {
		most = max(most, len(ps))
		p := ps[0]
		data, _ := p["data"].(map[string]any)
		out[p["type"].(string)] = append(out[p["type"].(string)], fmt.Sprint(data["key_id"]))
	}
	return out, most
}

// notifyGateway is the real binary with a notify endpoint, on etcd.
type notifyGateway struct {
	*runningCaddy
	t                 *testing.T
	dir, config, addr string
	base, admin       string
	ports             []heldPort
}

func startNotifyGateway(t *testing.T, etcd, receiver string) *notifyGateway {
	g := &notifyGateway{t: t, dir: t.TempDir(), ports: holdPorts(t, 2)}
	g.addr, g.admin = g.ports[0].Addr, g.ports[1].Addr
	g.base = "http://" + g.addr
	g.config = filepath.Join(g.dir, "Caddyfile")
	cfg := fmt.Sprintf(`{
	%s
	apikeys {
		store etcd %s {
			prefix /notify/
		}
		user alice %s
		notify %s {
			secret %s
			expiring_within 48h
		}
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/*
	respond /v1/* "ok"
}
`, adminOption(g.ports[1], 4), etcd, bcryptHash(t, "alicepw"), receiver, webhookSecret, g.addr)
	if err := os.WriteFile(g.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.start()
	return g
}

func (g *notifyGateway) start() { g.runningCaddy = startBinary(g.t, g.config, g.dir, g.ports) }

func (g *notifyGateway) kill() {
	_ = g.Cmd.Process.Signal(syscall.SIGKILL)
	<-g.Done()
}

// TestNoticesReachReceiversOnce: two real gateways sharing etcd notify
// one receiver. It refuses the first deliveries; one gateway is killed
// with -9 while they are pending, and both scan the same expiring key.
// Every event (expiring, revoked, disabled, leaked) arrives, once per
// webhook-id, with a valid signature, and a receiver that hangs holds up
// no request.
func TestNoticesReachReceiversOnce(t *testing.T) {
	c := etcdtest.Start(t, 1)
	rcv := newWebhookReceiver(t)
	rcv.refusing.Store(true)
	etcd := c.Endpoints()[0]
	a := startNotifyGateway(t, etcd, rcv.URL)
	auth := `{"auth": {"username": "alice", "password": "alicepw"}`
	mint := func(extra string) createdKey {
		return decodeCreated(t, post(t, a.base+"/api/create_api_key", auth+extra+`}`))
	}
	expiring := mint(`, "expires_in": 86400`)
	revoked, disabled, leaked := mint(""), mint(""), mint("")
	// b starts after the expiring key exists: its first scan finds it.
	b := startNotifyGateway(t, etcd, rcv.URL)

	if r := post(t, a.base+"/api/delete_api_key", auth+`, "api_key_id": "`+revoked.ID+`"}`); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	for range 3 { // disabled once: the repeats change nothing, and tell nothing
		if r := post(t, "http://"+b.admin+"/apikeys/keys/"+disabled.ID+"/disable", ""); r.status != 200 {
			t.Fatalf("disable: %d %s", r.status, r.body)
		}
	}
	h := keystore.HashKey(leaked.APIKey)
	for range 2 { // reported twice: one event
		if r := post(t, "http://"+a.admin+"/apikeys/keys/leaked", `{"hashes": ["`+hex.EncodeToString(h[:])+`"]}`); r.status != 200 {
			t.Fatalf("leaked: %d %s", r.status, r.body)
		}
	}
	testutil.Eventually(t, 20*time.Second, "refused deliveries", func() bool { return rcv.calls.Load() >= 4 })

	// a dies with its deliveries pending, comes back and scans the same
	// expiring key again; then the receiver starts taking them.
	a.kill()
	a.start()
	rcv.refusing.Store(false)
	testutil.Eventually(t, 90*time.Second, "all four events accepted", func() bool {
		got, _ := rcv.byType()
		return len(got) == 4
	})
	// Further polls: nothing more arrives. An absence check, so a bounded
	// wait: the binary tells of no poll, and a later event to wait for
	// would change what is counted below. Each gateway polls every second.
	time.Sleep(3 * time.Second)
	got, most := rcv.byType()
	want := map[string]string{notify.KeyExpiring: expiring.ID, notify.KeyRevoked: revoked.ID, notify.KeyDisabled: disabled.ID, notify.KeyLeaked: leaked.ID}
	for typ, id := range want {
		if len(got[typ]) != 1 || got[typ][0] != id {
			t.Errorf("%s: accepted for keys %v, want once for %s", typ, got[typ], id)
		}
	}
	if most != 1 || rcv.badSig.Load() != 0 {
		t.Fatalf("a webhook-id accepted %d times; %d deliveries badly signed", most, rcv.badSig.Load())
	}
	t.Logf("%d deliveries for 4 events (the first refused)", rcv.calls.Load())
	// Both gateways count what they delivered (a's counts since its
	// restart, before which nothing was taken).
	delivered := 0.0
	for _, g := range []*notifyGateway{a, b} {
		r := do(t, http.MethodGet, "http://"+g.admin+"/metrics", "")
		for _, line := range strings.Split(r.body, "\n") {
			if rest, ok := strings.CutPrefix(line, `caddy_apikeys_notice_deliveries_total{outcome="delivered",`); ok {
				var n float64
				fmt.Sscan(rest[strings.LastIndexByte(rest, ' ')+1:], &n)
				delivered += n
			}
		}
	}
	if delivered != 4 {
		t.Errorf("the gateways count %v notices delivered, want 4", delivered)
	}

	t.Run("no notice holds a key", func(t *testing.T) {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		raw, _ := json.Marshal(rcv.accepted)
		for _, k := range []createdKey{expiring, revoked, disabled, leaked} {
			if strings.Contains(string(raw), k.APIKey) {
				t.Fatal("a notice holds a key")
			}
		}
	})

	t.Run("a hanging receiver holds up no request", func(t *testing.T) {
		rcv.holding.Store(true)
		defer close(rcv.hold)
		first, second := mint(""), mint("")
		if r := post(t, b.base+"/api/delete_api_key", auth+`, "api_key_id": "`+first.ID+`"}`); r.status != 200 {
			t.Fatalf("delete: %d", r.status)
		}
		<-rcv.held // a delivery is now stuck in the receiver
		if r := post(t, b.base+"/api/delete_api_key", auth+`, "api_key_id": "`+second.ID+`"}`); r.status != 200 {
			t.Fatalf("a delete while the receiver hangs: %d", r.status)
		}
		if do(t, http.MethodGet, b.base+"/v1/x", "", "Authorization", "Bearer "+leaked.APIKey).status != 401 {
			t.Fatal("the leaked key works")
		}
	})
}

// TestCreditsLowIsNoticedOnce: a key's credits falling below the
// endpoint's threshold is one credits.low notice, however many requests
// spend further.
func TestCreditsLowIsNoticedOnce(t *testing.T) {
	rcv := newWebhookReceiver(t)
	dir := t.TempDir()
	port := holdPort(t)
	addr := port.Addr
	config := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf(`{
	admin off
	apikeys {
		store bolt %s
		user alice %s
		default_plan metered
		plan metered {
			credits 100 refill 720h
		}
		notify %s {
			secret %s
			events credits.low
			credits_below 50
		}
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/*
	respond /v1/* "ok"
}
`, filepath.Join(dir, "keys.db"), bcryptHash(t, "alicepw"), rcv.URL, webhookSecret, addr)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startBinary(t, config, dir, []heldPort{port})
	key := decodeCreated(t, post(t, "http://"+addr+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}}`))
	spend := func(n int) {
		for range n {
			if r := do(t, http.MethodGet, "http://"+addr+"/v1/x", "", "Authorization", "Bearer "+key.APIKey); r.status != 200 {
				t.Fatalf("request refused: %d %s", r.status, r.body)
			}
		}
	}
	spend(40)
	// An absence check, so a bounded wait: a notice would be delivered at
	// once (a local event wakes the delivery), and nothing tells that
	// none was queued.
	time.Sleep(500 * time.Millisecond)
	if got, _ := rcv.byType(); len(got) != 0 {
		t.Fatalf("notices with 60 of 100 credits left: %v", got)
	}
	spend(50)
	testutil.Eventually(t, 10*time.Second, "credits.low", func() bool {
		got, _ := rcv.byType()
		return len(got[notify.CreditsLow]) == 1
	})
	spend(5)
	time.Sleep(2 * time.Second) // no second notice: an absence check, as above
	got, most := rcv.byType()
	if len(got) != 1 || len(got[notify.CreditsLow]) != 1 || got[notify.CreditsLow][0] != key.ID || most != 1 {
		t.Fatalf("accepted %v (most repeated %d), want one credits.low for %s", got, most, key.ID)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, ps := range rcv.accepted {
		data := ps[0]["data"].(map[string]any)
		if b, ok := data["balance"].(float64); !ok || b >= 50 || data["owner"] != "alice" {
			t.Fatalf("payload %v", ps[0])
		}
	}
}

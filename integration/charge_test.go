package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/testutil"
)

// The answers of chargeUpstream.
const (
	sseEvents = 10      // server-sent events before [DONE]
	bigBody   = 8 << 20 // bytes of the large answer
	sseDone   = "data: [DONE]\n\n"
)

func sseEvent(i int) string { return fmt.Sprintf("data: {\"i\": %d}\n\n", i) }

// sseLength is the length of the first n events, and of [DONE] after
// all of them.
func sseLength(n int) int {
	l := 0
	for i := range n {
		l += len(sseEvent(i))
	}
	if n == sseEvents {
		l += len(sseDone)
	}
	return l
}

// chargeUpstream answers /v1/sse/<percent>/<client> with server-sent
// events and /v1/big/<percent>/<client> with an 8 MiB body, of which it
// sends the first <percent> and then holds the answer open until the
// gateway gives up on it (its client left); the whole large body it sends
// and ends. /v1/wait/<client> says it arrived and never answers.
type chargeUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	arrived map[string]chan struct{}
}

func newChargeUpstream(t *testing.T) *chargeUpstream {
	u := &chargeUpstream{arrived: map[string]chan struct{}{}}
	big := make([]byte, bigBody)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")
		if len(parts) < 2 {
			http.NotFound(w, r)
			return
		}
		holdOpen := func() {
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute): // the test fails on its own
			}
		}
		switch parts[0] {
		case "wait":
			close(u.arrival(parts[1]))
			holdOpen()
			return
		case "sse":
			percent, _ := strconv.Atoi(parts[1])
			w.Header().Set("Content-Type", "text/event-stream")
			n := sseEvents * percent / 100
			for i := range n {
				_, _ = io.WriteString(w, sseEvent(i))
			}
			if n == sseEvents {
				_, _ = io.WriteString(w, sseDone)
			}
			_ = http.NewResponseController(w).Flush()
			holdOpen()
		case "big":
			percent, _ := strconv.Atoi(parts[1])
			w.Header().Set("Content-Length", strconv.Itoa(bigBody))
			_, _ = w.Write(big[:bigBody*percent/100])
			_ = http.NewResponseController(w).Flush()
			if percent < 100 {
				holdOpen()
			}
		}
	}))
	t.Cleanup(u.Close)
	return u
}

// arrival is closed when /v1/wait/<id> reaches the upstream.
func (u *chargeUpstream) arrival(id string) chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.arrived[id] == nil {
		u.arrived[id] = make(chan struct{})
	}
	return u.arrived[id]
}

// leaveAfter sends GET path with key on a connection of its own, reads
// the answer's header and n bytes of its body (or, with arrived, waits
// until the upstream has the request and reads nothing), then resets the
// connection, as a client that gives up does.
func leaveAfter(addr, path, key string, n int, arrived <-chan struct{}) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", path, addr, key); err != nil {
		return err
	}
	if arrived != nil {
		select {
		case <-arrived:
		case <-time.After(time.Minute):
			return errors.New("the request did not reach the upstream")
		}
	} else {
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: status %d", path, res.StatusCode)
		}
		if _, err := io.CopyN(io.Discard, res.Body, int64(n)); err != nil {
			return fmt.Errorf("%s: reading %d bytes: %w", path, n, err)
		}
	}
	return conn.(*net.TCPConn).SetLinger(0) // Close sends RST
}

// accessLogged counts the access log entries of rc with uri in them.
func accessLogged(rc *runningCaddy, uri string) int {
	n := 0
	for line := range strings.Lines(rc.Output()) {
		if strings.Contains(line, `"logger":"http.log.access`) && strings.Contains(line, uri) {
			n++
		}
	}
	return n
}

// TestChargedByWhatTheUpstreamDid: 64 clients at once, each with a key of
// 100 credits, on a route of cost 5, read 10 %, 90 % and 100 % of a
// stream of server-sent events and of an 8 MiB body and reset the
// connection; then each leaves before the upstream answered, and each
// calls a route whose upstream is unreachable. Every key is charged
// exactly 5 for each answer its upstream started, however the client
// left, and nothing for the requests its upstream never answered: after
// each round every balance is exact.
func TestChargedByWhatTheUpstreamDid(t *testing.T) {
	const clients = 64
	up := newChargeUpstream(t)
	ports := holdPorts(t, 2)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`{
	%s
	apikeys {
		user alice %s {
			plan metered
		}
		plan metered {
			credits 100
		}
	}
}

http://%s {
	bind fd/3
	log
	apikeys_api /api/*
	apikey_auth /v1/* {
		cost 5
	}
	# Flushed as it comes (as server-sent events are anyway), so that a
	# client can read exactly what the upstream sent before it waits.
	reverse_proxy /v1/* %s {
		flush_interval -1
	}
	apikey_auth /down/* {
		cost 5
	}
	reverse_proxy /down/* %s
%s}
`, adminOption(ports[1], 4), bcryptHash(t, "alicepw"), ports[0].Addr, strings.TrimPrefix(up.URL, "http://"), refusingAddr(t), shippedErrorRoutes(t))
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	rc := startBinary(t, config, dir, ports)
	base := "http://" + ports[0].Addr
	const auth = `{"username": "alice", "password": "alicepw"}`

	keys := make([]createdKey, clients)
	for i := range keys {
		keys[i] = decodeCreated(t, post(t, base+"/api/create_api_key", `{"auth": `+auth+`}`))
	}
	balances := func() map[string]int64 {
		r := post(t, base+"/api/fetch_api_keys", `{"auth": `+auth+`}`)
		var env struct {
			Result struct {
				APIKeys []struct {
					ID      string `json:"id"`
					Credits *struct {
						Remaining int64 `json:"remaining"`
					} `json:"credits"`
				} `json:"api_keys"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(r.body), &env); err != nil || r.status != 200 {
			t.Fatalf("fetch_api_keys: %d %s", r.status, r.body)
		}
		out := map[string]int64{}
		for _, k := range env.Result.APIKeys {
			if k.Credits == nil {
				t.Fatalf("fetch_api_keys shows no credits for %s: %s", k.ID, r.body)
			}
			out[k.ID] = k.Credits.Remaining
		}
		return out
	}

	want := int64(100)
	for _, round := range []struct {
		name    string
		path    string // with %d for the client
		read    int    // bytes of the body read before leaving
		wait    bool   // leave once the upstream has the request
		normal  bool   // an ordinary client that reads the whole answer
		charged bool
	}{
		{"events, 10 % read", "/v1/sse/10/%d", sseLength(1), false, false, true},
		{"events, 90 % read", "/v1/sse/90/%d", sseLength(9), false, false, true},
		{"events, all read but the end of the stream", "/v1/sse/100/%d", sseLength(sseEvents), false, false, true},
		{"8 MiB, 10 % read", "/v1/big/10/%d", bigBody / 10, false, false, true},
		{"8 MiB, 90 % read", "/v1/big/90/%d", bigBody * 9 / 10, false, false, true},
		{"8 MiB, all read", "/v1/big/100/%d", bigBody, false, false, true},
		{"left before the upstream answered", "/v1/wait/%d", 0, true, false, false},
		{"the upstream unreachable", "/down/%d", 0, false, true, false},
	} {
		uri := `"uri":"` + strings.SplitN(round.path, "%", 2)[0]
		logged := accessLogged(rc, uri)
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i, k := range keys {
			wg.Go(func() {
				path := fmt.Sprintf(round.path, i)
				switch {
				case round.normal:
					req, _ := http.NewRequest(http.MethodGet, base+path, nil)
					req.Header.Set("Authorization", "Bearer "+k.APIKey)
					res, err := client.Do(req)
					if err != nil {
						errs <- err
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusBadGateway {
						errs <- fmt.Errorf("%s: %d, want 502", path, res.StatusCode)
					}
				case round.wait:
					errs <- leaveAfter(ports[0].Addr, path, k.APIKey, 0, up.arrival(strconv.Itoa(i)))
				default:
					errs <- leaveAfter(ports[0].Addr, path, k.APIKey, round.read, nil)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("%s: %v", round.name, err)
			}
		}
		// Each request is settled before the server logs it.
		testutil.Eventually(t, time.Minute, round.name+": every request in the access log", func() bool {
			return accessLogged(rc, uri)-logged >= clients
		})
		if round.charged {
			want -= 5
		}
		got := balances()
		wrong := 0
		for _, k := range keys {
			if got[k.ID] != want {
				wrong++
			}
		}
		if wrong > 0 {
			t.Fatalf("%s: %d of %d keys have another balance than %d: %v", round.name, wrong, clients, want, got)
		}
		t.Logf("%s: every key at %d credits", round.name, want)
	}
}

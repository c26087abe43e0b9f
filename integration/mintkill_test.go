package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/etcdstore"
	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// answeredMints is what 64 clients were told was minted.
type answeredMints struct {
	mu   sync.Mutex
	keys []createdKey
}

// mintUntil posts create_api_key from 64 clients until stop closes, and
// records every key answered 200; refusals and cut connections (the
// gateway or etcd being killed) are expected, and only counted.
func (a *answeredMints) mintUntil(url, body string, stop <-chan struct{}, failed *atomic.Int64) *sync.WaitGroup {
	cl := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := cl.Post(url, "application/json", strings.NewReader(body))
				if err != nil {
					failed.Add(1)
					time.Sleep(10 * time.Millisecond) // the gateway is down
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				var env struct {
					Result createdKey `json:"result"`
				}
				if res.StatusCode != http.StatusOK || json.Unmarshal(b, &env) != nil {
					failed.Add(1)
					continue
				}
				a.mu.Lock()
				a.keys = append(a.keys, env.Result)
				a.mu.Unlock()
			}
		})
	}
	return &wg
}

func (a *answeredMints) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.keys)
}

// TestNoAnsweredMintIsLostWhenGatewayOrEtcdLeaderIsKilled mints with 64
// clients through the real binary over a three-member etcd cluster, and
// kills with -9, while they mint, the cluster's leader (then restarts it)
// and the gateway (then starts it again). Every key a client was given
// must be in the store afterwards, under its id.
func TestNoAnsweredMintIsLostWhenGatewayOrEtcdLeaderIsKilled(t *testing.T) {
	c := etcdtest.Start(t, 3)
	dir := t.TempDir()
	ports := holdPorts(t, 2)
	config := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf(`{
	%s
	apikeys {
		store etcd %s {
			prefix /kill/
		}
		jwt {
			secret %s
			audience kill
		}
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
}
`, adminOption(ports[1], 4), strings.Join(c.Endpoints(), " "), jwtSecret, ports[0].Addr)
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "minter", "aud": "kill", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	rc := startBinary(t, config, dir, ports)

	var answered answeredMints
	var failed atomic.Int64
	stop := make(chan struct{})
	clients := answered.mintUntil("http://"+ports[0].Addr+"/api/create_api_key", fmt.Sprintf(`{"auth": %q}`, token), stop, &failed)
	// Each phase lasts until its clients were given more keys, so that
	// every kill lands among mints in flight.
	mintMore := func(phase string) {
		t.Helper()
		start, last, since := answered.count(), answered.count(), time.Now()
		for n := start; n < start+2000; n = answered.count() {
			select {
			case <-rc.Done():
				t.Fatalf("%s: the gateway exited", phase)
			case <-time.After(20 * time.Millisecond):
			}
			if n > last {
				last, since = n, time.Now()
			} else if time.Since(since) > time.Minute { // a liveness guard, not a speed test
				t.Fatalf("%s: no key minted for a minute", phase)
			}
		}
	}
	mintMore("before the kills")
	leader := c.Members[c.Leader(t)]
	leader.Kill()
	mintMore("without the leader")
	leader.Restart(t)
	mintMore("after the leader's restart")
	rc.End(os.Kill)
	rc = startBinary(t, config, dir, ports)
	mintMore("after the gateway's restart")
	close(stop)
	clients.Wait()

	s, err := etcdstore.Open(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}, etcdstore.Options{Prefix: "/kill/"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lost := 0
	for _, k := range answered.keys {
		stored, err := s.KeyByHash(context.Background(), keystore.HashKey(k.APIKey), keystore.StampOf(k.APIKey, keystore.DefaultPrefix))
		if err != nil || stored.ID != k.ID {
			lost++
			if lost <= 5 {
				t.Errorf("key %s answered as minted: %v (stored id %q)", k.ID, err, stored.ID)
			}
		}
	}
	all, err := s.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d keys answered, %d stored, %d lost; %d requests refused or cut", len(answered.keys), len(all), lost, failed.Load())
	if lost > 0 {
		t.Fatalf("%d of %d keys answered as minted are not in the store", lost, len(answered.keys))
	}
}

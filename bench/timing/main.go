// Command timing measures whether a caller can tell an unknown username
// from a known one by how long a wrong sign-in takes. It starts the
// gateway with a configured argon2id user (and lockouts off, which would
// otherwise answer 429 after a few tries), sends -n wrong-password and -n
// unknown-user create_api_key requests, interleaved, and prints the
// median of each and their ratio.
//
//	go run ./bench/timing -caddy ./caddy [-n 200]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
)

func main() {
	caddy := flag.String("caddy", "", "gateway binary")
	n := flag.Int("n", 200, "tries of each kind")
	flag.Parse()
	if *caddy == "" {
		log.Fatal("-caddy is required")
	}
	dir, err := os.MkdirTemp("", "apikeys-timing-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	hash, err := exec.Command(*caddy, "hash-password", "--algorithm", "argon2id", "--plaintext", "right-password").Output()
	if err != nil {
		log.Fatal(err)
	}
	addr := freeAddr()
	cfg := fmt.Sprintf("{\n\tadmin off\n\tapikeys {\n\t\tstore bolt %s\n\t\tuser alice %s\n\t\tlockout off\n\t}\n}\nhttp://%s {\n\tapikeys_api\n}\n",
		filepath.Join(dir, "keys.db"), bytes.TrimSpace(hash), addr)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(*caddy, "run", "--config", path)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log.Fatal("gateway did not start")
		}
	}

	url := "http://" + addr + "/api/create_api_key"
	try := func(user string) (time.Duration, int) {
		body := fmt.Sprintf(`{"auth": {"username": %q, "password": "wrong-password"}}`, user)
		start := time.Now()
		res, err := http.Post(url, "application/json", bytes.NewBufferString(body))
		if err != nil {
			log.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return time.Since(start), res.StatusCode
	}
	try("alice") // warm up
	var known, unknown []time.Duration
	for i := range *n {
		d, s1 := try("alice")
		u, s2 := try(fmt.Sprintf("nobody-%d", i))
		if s1 != 401 || s2 != 401 {
			log.Fatalf("statuses %d and %d, want 401 for both", s1, s2)
		}
		known, unknown = append(known, d), append(unknown, u)
	}
	mk, mu := median(known), median(unknown)
	fmt.Printf("wrong password (known user): median %v over %d tries\n", mk, *n)
	fmt.Printf("unknown user:                median %v over %d tries\n", mu, *n)
	fmt.Printf("ratio unknown/known: %.3f (indistinguishable within 0.8-1.25: %v)\n",
		float64(mu)/float64(mk), float64(mu)/float64(mk) >= 0.8 && float64(mu)/float64(mk) <= 1.25)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Command timing measures whether a caller can tell, by how long a wrong
// sign-in takes, an unknown username from a known one, or one kind of
// user from another. It starts the gateway with every kind of password
// user at once (lockouts off, which would otherwise answer 429 after a
// few tries):
//
//   - a configured user with a bcrypt hash ('caddy hash-password'),
//   - a configured user with an argon2id hash ('caddy hash-password
//     --algorithm argon2id'),
//   - a stored user added with 'caddy apikeys user add' (argon2id),
//
// then sends -n wrong-password create_api_key requests for each of them
// and for unknown names, interleaved in rotating order, and prints the
// median of each kind and the ratio of every pair.
//
//	go run ./bench/timing -caddy ./caddy [-n 50] [-bcrypt-cost 12]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/loopback"
)

func main() {
	caddy := flag.String("caddy", "", "gateway binary")
	n := flag.Int("n", 50, "tries of each kind")
	bcryptCost := flag.Int("bcrypt-cost", 12, "cost of the configured bcrypt user's hash ('caddy hash-password' defaults to 14, about 1.2 s a check on a 2-core EPYC)")
	flag.Parse()
	if *caddy == "" {
		log.Fatal("-caddy is required")
	}
	dir, err := os.MkdirTemp("", "apikeys-timing-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	hash := func(args ...string) string {
		out, err := exec.Command(*caddy, append([]string{"hash-password", "--plaintext", "right-password"}, args...)...).Output()
		if err != nil {
			log.Fatalf("caddy hash-password %v: %v", args, err)
		}
		return string(bytes.TrimSpace(out))
	}
	bcryptHash := hash("--bcrypt-cost", fmt.Sprint(*bcryptCost))
	argonHash := hash("--algorithm", "argon2id")
	// The gateway's site and admin API on ports held here (fd/3, fd/4).
	site, admin := holdPort(), holdPort()
	addr := site.Addr
	cfg := fmt.Sprintf("{\n\tadmin fd/4 {\n\t\torigins %s\n\t}\n\tapikeys {\n\t\tstore bolt %s\n\t\tuser config-bcrypt %s\n\t\tuser config-argon2id %s\n\t\tlockout off\n\t}\n}\nhttp://%s {\n\tbind fd/3\n\tapikeys_api\n}\n",
		admin.Addr, filepath.Join(dir, "keys.db"), bcryptHash, argonHash, addr)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		log.Fatal(err)
	}
	env := append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd := exec.Command(*caddy, "run", "--config", path)
	cmd.Env = env
	cmd.ExtraFiles = []*os.File{site.File, admin.File}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := loopback.WaitHTTP(ctx, addr); err != nil {
		log.Fatalf("gateway did not start: %v", err)
	}
	add := exec.Command(*caddy, "apikeys", "--address", admin.Addr, "user", "add", "stored-argon2id")
	add.Env, add.Stdin = env, strings.NewReader("right-password\n")
	if out, err := add.CombinedOutput(); err != nil {
		log.Fatalf("caddy apikeys user add: %v\n%s", err, out)
	}

	url := "http://" + addr + "/api/create_api_key"
	try := func(user string) time.Duration {
		body := fmt.Sprintf(`{"auth": {"username": %q, "password": "wrong-password"}}`, user)
		start := time.Now()
		res, err := http.Post(url, "application/json", bytes.NewBufferString(body))
		if err != nil {
			log.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		took := time.Since(start)
		if res.StatusCode != http.StatusUnauthorized {
			log.Fatalf("%s: status %d, want 401", user, res.StatusCode)
		}
		return took
	}
	kinds := []string{"config-bcrypt", "config-argon2id", "stored-argon2id", "unknown"}
	user := func(kind string, i int) string {
		if kind == "unknown" {
			return fmt.Sprintf("nobody-%d", i)
		}
		return kind
	}
	for _, k := range kinds { // warm up: the first check measures every kind
		try(user(k, -1))
	}
	times := make(map[string][]time.Duration)
	for i := range *n {
		for j := range kinds {
			k := kinds[(i+j)%len(kinds)]
			times[k] = append(times[k], try(user(k, i)))
		}
	}
	fmt.Printf("bcrypt cost %d and argon2id (%s) users, %d wrong sign-ins of each kind, interleaved:\n", *bcryptCost, argonParams(argonHash), *n)
	medians := make(map[string]time.Duration)
	for _, k := range kinds {
		medians[k] = median(times[k])
		fmt.Printf("  %-16s median %8.1f ms\n", k, float64(medians[k])/1e6)
	}
	lo, hi := 1e9, 0.0
	for _, a := range kinds {
		for _, b := range kinds {
			r := float64(medians[a]) / float64(medians[b])
			lo, hi = min(lo, r), max(hi, r)
		}
	}
	for i, a := range kinds {
		for _, b := range kinds[i+1:] {
			fmt.Printf("  %s / %s = %.3f\n", a, b, float64(medians[a])/float64(medians[b]))
		}
	}
	fmt.Printf("all pairs within %.3f-%.3f (target 0.8-1.25: %v)\n", lo, hi, lo >= 0.8 && hi <= 1.25)
}

func argonParams(h string) string {
	parts := strings.Split(h, "$")
	if len(parts) < 4 {
		return "?"
	}
	return parts[3]
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// holdPort holds a loopback port for the gateway until the program ends.
func holdPort() loopback.Port {
	p, err := loopback.Hold()
	if err != nil {
		log.Fatal(err)
	}
	return p
}

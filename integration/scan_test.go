package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// scanCLI runs `caddy apikeys scan <args>` and returns its output and
// exit status.
func scanCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	cmd := exec.Command(caddyBinary(t), append([]string{"apikeys", "scan"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir())
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		status = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), status
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestScanFindsKeysBeforeTheyLeak runs `caddy apikeys scan` on a
// repository-like tree, stdin and clean files: it reports exactly the
// keys of this format (file:line:column and preview, never the key),
// skips near misses, .git and symbolic links, exits 1 when it finds any;
// --check says which are live through the admin API or the store file,
// and --revoke revokes them as leaked, so that the gateway refuses them.
func TestScanFindsKeysBeforeTheyLeak(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "keys.db")
	ports := holdPorts(t, 2)
	addr, admin := ports[0].Addr, ports[1].Addr
	config := filepath.Join(dir, "Caddyfile")
	writeFile(t, config, fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
		user alice %s
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/*
	respond /v1/* "ok"
}
`, adminOption(ports[1], 4), db, bcryptHash(t, "alicepw"), addr))
	gw := startBinary(t, config, dir, ports)
	mint := func() createdKey {
		return decodeCreated(t, post(t, "http://"+addr+"/api/create_api_key", `{"auth": {"username": "alice", "password": "alicepw"}}`))
	}
	works := func(key string) bool {
		return do(t, http.MethodGet, "http://"+addr+"/v1/x", "", "Authorization", "Bearer "+key).status == http.StatusOK
	}
	live, other := mint(), mint()
	deleted := mint()
	if r := post(t, "http://"+addr+"/api/delete_api_key", `{"auth": {"username": "alice", "password": "alicepw"}, "api_key_id": "`+deleted.ID+`"}`); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	neverMinted, _, err := keystore.NewKeyAndID("sk-", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k := live.APIKey
	badChecksum := k[:len(k)-1] + map[bool]string{true: "b", false: "a"}[k[len(k)-1] == 'a']

	repo := filepath.Join(t.TempDir(), "repo")
	writeFile(t, filepath.Join(repo, "config.env"), "# settings\nDEBUG=1\nAPI_KEY="+live.APIKey+"\n")
	writeFile(t, filepath.Join(repo, "src", "client.py"), strings.Repeat("pass\n", 9)+
		`headers = {"Authorization": "Bearer `+deleted.APIKey+`"}`+"\n"+
		"checksum_typo = '"+badChecksum+"'\n"+
		"glued = 'x"+live.APIKey+"'\n"+
		"longer = '"+live.APIKey+"0'\n"+
		"example = 'sk-6kwHVPIcgnRtz3LE2WixpqXkvbPEyDRt4QEukkK4vZF4JfaN'\n")
	writeFile(t, filepath.Join(repo, "notes", "todo.md"), "rotate "+other.APIKey+" and "+neverMinted+" soon\n")
	writeFile(t, filepath.Join(repo, ".git", "COMMIT_EDITMSG"), live.APIKey+"\n")
	outside := filepath.Join(t.TempDir(), "outside")
	writeFile(t, outside, live.APIKey)
	if err := os.Symlink(outside, filepath.Join(repo, "link")); err != nil {
		t.Fatal(err)
	}
	clean := filepath.Join(repo, "README.md")
	writeFile(t, clean, "Keys look like sk-... and go in API_KEY.\n")

	want := []string{
		filepath.Join(repo, "config.env") + ":3:9: " + live.KeyPreview,
		filepath.Join(repo, "notes", "todo.md") + ":1:8: " + other.KeyPreview,
		filepath.Join(repo, "notes", "todo.md") + ":1:64: " + keystore.Preview(neverMinted, "sk-"),
		filepath.Join(repo, "src", "client.py") + ":10:37: " + deleted.KeyPreview,
	}
	noKeys := func(t *testing.T, out string) {
		t.Helper()
		for _, key := range []string{live.APIKey, other.APIKey, deleted.APIKey, neverMinted} {
			if strings.Contains(out, key) {
				t.Fatalf("the scan printed a whole key:\n%s", out)
			}
		}
	}

	t.Run("finds exactly the keys, never prints them, exits 1", func(t *testing.T) {
		out, errOut, status := scanCLI(t, "", repo)
		noKeys(t, out+errOut)
		if got := strings.Split(strings.TrimSpace(out), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") || status != 1 {
			t.Fatalf("status %d, found:\n%s\nwant:\n%s\n(stderr: %s)", status, out, strings.Join(want, "\n"), errOut)
		}
		if !strings.Contains(errOut, "4 API key(s) found") {
			t.Errorf("no summary on stderr: %q", errOut)
		}
	})

	t.Run("clean files and stdin", func(t *testing.T) {
		if out, errOut, status := scanCLI(t, "", clean); status != 0 || out != "" {
			t.Fatalf("a clean file: status %d, %q %q", status, out, errOut)
		}
		out, _, status := scanCLI(t, "export KEY="+other.APIKey+"\n")
		if status != 1 || strings.TrimSpace(out) != "(stdin):1:12: "+other.KeyPreview {
			t.Fatalf("stdin: status %d, %q", status, out)
		}
		if _, errOut, status := scanCLI(t, "", filepath.Join(repo, "nosuch")); status != 1 || !strings.Contains(errOut, "nosuch") {
			t.Fatalf("a missing path: status %d, %q", status, errOut)
		}
	})

	t.Run("paths given are followed: links, /dev/stdin", func(t *testing.T) {
		fileLink := filepath.Join(t.TempDir(), "env-link")
		if err := os.Symlink(filepath.Join(repo, "config.env"), fileLink); err != nil {
			t.Fatal(err)
		}
		out, _, status := scanCLI(t, "", fileLink)
		if status != 1 || strings.TrimSpace(out) != fileLink+":3:9: "+live.KeyPreview {
			t.Fatalf("a link given: status %d, %q", status, out)
		}
		dirLink := filepath.Join(t.TempDir(), "notes-link")
		if err := os.Symlink(filepath.Join(repo, "notes"), dirLink); err != nil {
			t.Fatal(err)
		}
		out, _, status = scanCLI(t, "", dirLink)
		if status != 1 || strings.Count(out, filepath.Join(dirLink, "todo.md")+":1:") != 2 {
			t.Fatalf("a link to a directory given: status %d, %q", status, out)
		}
		out, _, status = scanCLI(t, "API_KEY="+other.APIKey, "/dev/stdin")
		if status != 1 || !strings.Contains(out, other.KeyPreview) {
			t.Fatalf("/dev/stdin: status %d, %q", status, out)
		}
	})

	t.Run("a custom prefix", func(t *testing.T) {
		if out, _, status := scanCLI(t, "", "--prefix", "acme_", repo); status != 0 || out != "" {
			t.Fatalf("status %d, found with another prefix:\n%s", status, out)
		}
	})

	t.Run("--check says which keys are live", func(t *testing.T) {
		out, errOut, status := scanCLI(t, "", "--address", admin, "--check", repo)
		noKeys(t, out+errOut)
		for _, line := range []string{
			want[0] + "  active: key " + live.ID + " of alice",
			want[1] + "  active: key " + other.ID + " of alice",
			want[2] + "  not a key of this store",
			want[3] + "  not a key of this store",
		} {
			if !strings.Contains(out, line+"\n") {
				t.Errorf("no line %q in:\n%s", line, out)
			}
		}
		if status != 1 || !works(live.APIKey) {
			t.Fatalf("status %d; --check changed the key", status)
		}
	})

	t.Run("--revoke revokes them as leaked", func(t *testing.T) {
		out, errOut, status := scanCLI(t, "", "--address", admin, "--revoke", "--json", filepath.Join(repo, "config.env"), filepath.Join(repo, "notes"))
		noKeys(t, out+errOut)
		var found []struct {
			File    string `json:"file"`
			Status  string `json:"status"`
			KeyID   string `json:"key_id"`
			Revoked bool   `json:"revoked"`
		}
		if err := json.Unmarshal([]byte(out), &found); err != nil || status != 1 || len(found) != 3 {
			t.Fatalf("status %d, %v:\n%s", status, err, out)
		}
		for _, f := range found[:2] {
			if f.Status != "leaked" || !f.Revoked {
				t.Errorf("%+v", f)
			}
		}
		if works(live.APIKey) || works(other.APIKey) {
			t.Fatal("a revoked key still works")
		}
		if out := mustCLI(t, "", "--address", admin, "key", "list"); strings.Count(out, "leaked") != 2 {
			t.Fatalf("key list:\n%s", out)
		}
	})

	t.Run("--check on the store file of a stopped gateway", func(t *testing.T) {
		gw.Stop()
		out, errOut, status := scanCLI(t, "", "--db", db, "--check", filepath.Join(repo, "config.env"))
		if status != 1 || !strings.Contains(out, "leaked: key "+live.ID) {
			t.Fatalf("status %d:\n%s%s", status, out, errOut)
		}
	})
}

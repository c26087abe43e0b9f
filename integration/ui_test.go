package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/caddy-apikeys/caddy-apikeys/internal/scannertest"
)

// chromium returns the browser the UI test drives, or fails: .ci/run
// installs Debian's chromium.
func chromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("drives a real browser")
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH (.ci/run installs Debian's chromium)")
	return ""
}

// TestKeyPageInBrowser signs in on the key page in headless Chromium,
// creates a key, reads it off the page, uses it, revokes it from the
// page and sees the protected route refuse it. Screenshots of the main
// states go to a temporary folder (or $APIKEYS_SCREENSHOTS).
func TestKeyPageInBrowser(t *testing.T) {
	browser := chromium(t)
	// The example, off the demo's ports, with a plan for every key.
	// A scanner reports leaks to it.
	scanner := scannertest.NewScanner(t)
	config, base, ports := exampleCopy(t, func(cfg string) string {
		cfg = strings.Replace(cfg, "\tapikeys_ui /keys/*", "\tapikeys_leaks /leaks {\n\t\tpublic_keys_url "+scanner.URL+"\n\t}\n\tapikeys_ui /keys/*", 1)
		return strings.Replace(cfg, "\tapikeys {\n", `	apikeys {
		default_plan demo
		plan demo {
			rate 100/1m
			credits 1000 refill 720h
		}
`, 1)
	})
	rc := startBinary(t, config, t.TempDir(), ports)

	// The page's security headers.
	r := do(t, http.MethodGet, base+"/keys/", "")
	csp := r.header.Get("Content-Security-Policy")
	if r.status != 200 || !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
		strings.Contains(csp, "unsafe-inline") || r.header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("page: %d, CSP %q, X-Frame-Options %q", r.status, csp, r.header.Get("X-Frame-Options"))
	}
	if strings.Contains(r.body, "<script>") || strings.Contains(r.body, " on") && strings.Contains(r.body, "onclick") {
		t.Fatal("inline script in the page")
	}

	shots := os.Getenv("APIKEYS_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 800),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true))
	defer cancelAlloc()
	page, cancelPage := chromedp.NewContext(alloc)
	defer cancelPage()
	type step = chromedp.Action[chromedp.Void]
	shot := func(name string) step {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}
	perform := func(what string, steps ...step) {
		t.Helper()
		if err := chromedp.Do(page, steps...); err != nil {
			t.Fatalf("%s: %v\ngateway output:\n%s", what, err, rc.Output())
		}
	}
	read := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(page, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}

	// A wrong password is explained in words.
	perform("wrong password",
		chromedp.Navigate(base+"/keys/"),
		chromedp.WaitVisible("#username"),
		shot("1-sign-in"),
		chromedp.SendKeys("#username", "example_username"),
		chromedp.SendKeys("#password", "not-the-password"),
		chromedp.Click("#sign-in-button"),
		chromedp.WaitVisible("#message"),
	)
	if message := read("message", chromedp.Text("#message")); !strings.Contains(message, "Signing in failed") {
		t.Fatalf("wrong password message: %q", message)
	}

	// Sign in, create a key, read it once.
	perform("sign in and create",
		chromedp.SetValue("#username", "example_username"),
		chromedp.SendKeys("#password", "example_password"),
		chromedp.Click("#sign-in-button"),
		chromedp.WaitVisible("#keys"),
		chromedp.SendKeys("#title", "from the browser"),
		chromedp.Click("#create-button"),
		chromedp.WaitVisible("#reveal"),
		chromedp.WaitVisible("#key-rows tr"),
		shot("2-key-created"),
	)
	key := strings.TrimSpace(read("new key", chromedp.Text("#new-key")))
	if !strings.HasPrefix(key, "sk-") || len(key) != 51 {
		t.Fatalf("key read from the page: %q", key)
	}
	if stored := read("storage", chromedp.Evaluate[string](`String(localStorage.length + sessionStorage.length) + "/" + document.cookie`)); stored != "0/" {
		t.Fatalf("the page stored something in the browser: %q", stored)
	}
	if got := routeStatus(t, base, key); got != 200 {
		t.Fatalf("the key from the page: %d", got)
	}
	// The key's plan, before its first request.
	if got := read("limits", chromedp.Text(`#key-rows td[data-label="Limits"]`)); !strings.HasPrefix(got, "demo: 100 per minute; 1000 of 1000 credits, refills ") {
		t.Fatalf("the key's limits on the page: %q", got)
	}
	if got := read("status", chromedp.Text(`#key-rows td[data-label="Status"]`)); got != "active" {
		t.Fatalf("a new key's status on the page: %q", got)
	}

	// Rotate it from the page (two presses): a new key is revealed, the
	// old one stops working.
	perform("done with the reveal", chromedp.Click("#done"))
	rowOf := func() string {
		t.Helper()
		attr, err := chromedp.Run(page, chromedp.AttributeValue("#key-rows tr", "data-id"))
		if err != nil || attr.Value == "" {
			t.Fatalf("key row id: %v", err)
		}
		return fmt.Sprintf(`#key-rows tr[data-id=%q]`, attr.Value)
	}
	row := rowOf()
	perform("rotate",
		chromedp.Click(row+" button.rotate"),
		chromedp.Click(row+" button.rotate"),
		chromedp.WaitNotPresent(row),
		chromedp.WaitVisible("#reveal"),
	)
	rotated := strings.TrimSpace(read("rotated key", chromedp.Text("#new-key")))
	if rotated == key || !strings.HasPrefix(rotated, "sk-") {
		t.Fatalf("rotation revealed %q", rotated)
	}
	if routeStatus(t, base, key) != 401 || routeStatus(t, base, rotated) != 200 {
		t.Fatal("after rotating from the page the old key must fail and the new one work")
	}
	key = rotated

	// Revoke it from the page (two presses), then the route refuses it.
	perform("done with the reveal", chromedp.Click("#done"))
	row = rowOf()
	perform("revoke",
		chromedp.Click(row+" button.revoke"),
		shot("3-confirm-revoke"),
		chromedp.Click(row+" button.revoke"),
		chromedp.WaitNotPresent(row),
		shot("4-revoked"),
	)
	if got := routeStatus(t, base, key); got != 401 {
		t.Fatalf("revoked key: %d", got)
	}

	// A key a scanner found in public is shown as leaked, and cannot be
	// rotated from the page.
	perform("create a key that leaks", chromedp.Click("#create-button"), chromedp.WaitVisible("#reveal"))
	leaked := strings.TrimSpace(read("key that leaks", chromedp.Text("#new-key")))
	alert := []byte(`[{"token":"` + leaked + `","type":"demo_key","url":"https://example.com/leak","source":"content"}]`)
	if r := post(t, base+"/leaks", string(alert), "Github-Public-Key-Identifier", "k1",
		"Github-Public-Key-Signature", scanner.Sign(t, "k1", alert)); r.status != 200 || !strings.Contains(r.body, "true_positive") {
		t.Fatalf("alert: %d %s", r.status, r.body)
	}
	perform("see it leaked",
		chromedp.Click("#done"),
		chromedp.Reload(),
		chromedp.WaitVisible("#username"),
		chromedp.SetValue("#username", "example_username"),
		chromedp.SetValue("#password", "example_password"),
		chromedp.Click("#sign-in-button"),
		chromedp.WaitVisible("#key-rows tr"),
		shot("5-leaked"),
	)
	if got := read("leaked status", chromedp.Text(`#key-rows td[data-label="Status"]`)); !strings.HasPrefix(got, "leaked") {
		t.Fatalf("a leaked key's status on the page: %q", got)
	}
	if n := read("rotate buttons", chromedp.Evaluate[string](`String(document.querySelectorAll("#key-rows button.rotate").length)`)); n != "0" {
		t.Fatalf("%s rotate buttons beside a leaked key", n)
	}

	// Phone-sized screen, then a reload signs out.
	perform("phone and reload",
		chromedp.EmulateViewport(375, 740),
		chromedp.SendKeys("#title", "phone key"),
		chromedp.Click("#create-button"),
		chromedp.WaitVisible("#reveal"),
		shot("6-phone"),
		chromedp.Reload(),
		chromedp.WaitVisible("#sign-in"),
	)
	if v := read("after reload", chromedp.Evaluate[string](`String(!document.getElementById("sign-in").hidden && document.getElementById("keys").hidden)`)); v != "true" {
		t.Fatal("reload did not sign out")
	}
	t.Logf("screenshots in %s", shots)
}

// routeStatus calls the protected route with key and returns the status.
func routeStatus(t *testing.T, base, key string) int {
	t.Helper()
	return do(t, http.MethodGet, base+"/v1/hello", "", "Authorization", "Bearer "+key).status
}

package integration

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// hs256Raw signs header and payload, given as JSON text byte for byte,
// with HS256: the shapes no JSON encoder writes (a member twice, in
// another letter case).
func hs256Raw(secret, header, payload string) string {
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(mac.Sum(nil))
}

// TestTokenOfOneBlockCannotActForAnother is the attack of an issuer-less
// jwt block beside a block for an SSO issuer: a token signed with the
// issuer-less block's secret that names the SSO issuer (in "iss", with
// "ISS" beside it, or in another letter case) must never act as the SSO
// issuer's users, through any endpoint or place a credential arrives, and
// with many such requests at once.
func TestTokenOfOneBlockCannotActForAnother(t *testing.T) {
	const (
		looseSecret = "issuer-less-block-secret-0123456789"
		ssoSecret   = "sso-block-secret-0123456789abcdef"
		sso         = "https://sso.example"
	)
	dir := t.TempDir()
	ports := holdPorts(t, 2)
	base := "http://" + ports[0].Addr
	cfg := filepath.Join(dir, "Caddyfile")
	writeFile(t, cfg, fmt.Sprintf(`{
	%s
	apikeys {
		store bolt %s
		jwt {
			secret %s
			audience apikeys
		}
		jwt {
			issuer %s
			secret %s
			audience apikeys
		}
	}
}

http://%s {
	bind fd/3
	apikeys_api /api/*
	apikey_auth /v1/*
	respond /v1/* "user={http.auth.user.id} source={http.auth.user.source}"
}
`, adminOption(ports[1], 4), filepath.Join(dir, "keys.db"), looseSecret, sso, ssoSecret, ports[0].Addr))
	startBinary(t, cfg, dir, ports)

	// The victim, a user of the SSO issuer, has a key.
	victimTok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": sso, "sub": "victim", "aud": "apikeys", "exp": time.Now().Add(time.Hour).Unix()})
	victimJWT, err := victimTok.SignedString([]byte(ssoSecret))
	if err != nil {
		t.Fatal(err)
	}
	victimKey := decodeCreated(t, post(t, base+"/api/create_api_key", `{"auth": `+quoted(victimJWT)+`}`))

	exp := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	header := `{"alg":"HS256","typ":"JWT"}`
	var forged []string
	for _, payload := range []string{
		`{"sub":"victim","aud":"apikeys","exp":` + exp + `,"iss":"` + sso + `","ISS":"x"}`,
		`{"sub":"victim","aud":"apikeys","exp":` + exp + `,"ISS":"x","iss":"` + sso + `"}`,
		`{"sub":"victim","aud":"apikeys","exp":` + exp + `,"iss":"HTTPS://SSO.EXAMPLE"}`,
		`{"sub":"victim","aud":"apikeys","exp":` + exp + `,"Iss":"` + sso + `"}`,
		`{"sub":"victim","aud":"apikeys","exp":` + exp + `,"iss":"` + sso + `"}`,
	} {
		forged = append(forged, hs256Raw(looseSecret, header, payload))
	}
	// Every endpoint, with the token in the body (string or "oauth2") and
	// in the Authorization header, 4 times over, all at once.
	type attempt struct{ endpoint, body, bearer string }
	var attempts []attempt
	for _, tok := range forged {
		for _, endpoint := range []string{"create_api_key", "fetch_api_keys", "rotate_api_key", "delete_api_key"} {
			extra := ""
			if endpoint == "rotate_api_key" || endpoint == "delete_api_key" {
				extra = `, "api_key_id": "` + victimKey.ID + `"`
			}
			attempts = append(attempts,
				attempt{endpoint, `{"auth": ` + quoted(tok) + extra + `}`, ""},
				attempt{endpoint, `{"auth": {"oauth2": ` + quoted(tok) + `}` + extra + `}`, ""},
				attempt{endpoint, `{` + extra[min(len(extra), 2):] + `}`, tok})
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	for range 4 {
		for _, a := range attempts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodPost, base+"/api/"+a.endpoint, strings.NewReader(a.body))
				req.Header.Set("Content-Type", "application/json")
				if a.bearer != "" {
					req.Header.Set("Authorization", "Bearer "+a.bearer)
				}
				res, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				res.Body.Close()
				if res.StatusCode != http.StatusUnauthorized {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%s (bearer %v): %d", a.endpoint, a.bearer != "", res.StatusCode))
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(wrong) > 0 {
		t.Fatalf("%d of %d forged requests were not refused with 401, e.g. %v", len(wrong), 4*len(attempts), wrong[:min(len(wrong), 5)])
	}
	// The victim's key survived, is still theirs, and is still listed as
	// their only one.
	if r := do(t, http.MethodGet, base+"/v1/x", "", "Authorization", "Bearer "+victimKey.APIKey); r.status != 200 || r.body != "user=victim source=jwt:"+sso {
		t.Fatalf("the victim's key: %d %q", r.status, r.body)
	}
	r := post(t, base+"/api/fetch_api_keys", `{"auth": `+quoted(victimJWT)+`}`)
	if r.status != 200 || strings.Count(r.body, `"id":`) != 1 {
		t.Fatalf("the victim's listing: %d %s", r.status, r.body)
	}
	// The issuer-less block still serves other issuers, in their own
	// namespaces.
	other := hs256Raw(looseSecret, header, `{"sub":"victim","aud":"apikeys","exp":`+exp+`,"iss":"https://other.example"}`)
	k := decodeCreated(t, post(t, base+"/api/create_api_key", `{"auth": `+quoted(other)+`}`))
	if r := do(t, http.MethodGet, base+"/v1/x", "", "Authorization", "Bearer "+k.APIKey); r.body != "user=victim source=jwt:https://other.example" {
		t.Fatalf("another issuer's key: %d %q", r.status, r.body)
	}
}

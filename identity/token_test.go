package identity

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson/jsonref"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// The secrets of the two blocks of the attack: one without an
// issuer, one for https://sso.example.
var (
	looseSecret = []byte("issuer-less-block-secret-32bytes")
	ssoSecret   = []byte("sso-block-secret-of-32-bytes-ok!")
)

const ssoIssuer = "https://sso.example"

// twoBlocks is an issuer-less block beside a block for ssoIssuer, as a
// config with `jwt { secret A; audience apikeys }` and `jwt { issuer
// https://sso.example; secret B; audience apikeys }` makes them.
func twoBlocks(t testing.TB) JWTIssuers {
	t.Helper()
	loose, err := NewJWTVerifier(JWTConfig{HMACSecrets: [][]byte{looseSecret}, Audiences: []string{"apikeys"}})
	if err != nil {
		t.Fatal(err)
	}
	sso, err := NewJWTVerifier(JWTConfig{HMACSecrets: [][]byte{ssoSecret}, Issuer: ssoIssuer, Audiences: []string{"apikeys"}})
	if err != nil {
		t.Fatal(err)
	}
	partners, err := NewJWTVerifier(JWTConfig{HMACSecrets: [][]byte{ssoSecret}, Issuer: "https://partners.example",
		Namespace: "jwt:partners", Audiences: []string{"apikeys"}})
	if err != nil {
		t.Fatal(err)
	}
	return JWTIssuers{loose, sso, partners}
}

// rawToken signs a header and payload given as JSON text, byte for byte,
// with HS256: the shapes a JSON encoder would never write.
func rawToken(secret []byte, header, payload string) string {
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(mac.Sum(nil))
}

const hs256 = `{"alg":"HS256","typ":"JWT"}`

func exp() string { return strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) }

// The attack: a token signed for the issuer-less block, naming
// the SSO issuer in "iss" and another in "ISS". One reader kept "x" and
// let the issuer-less block verify it, the other named the owner from
// "iss": the SSO issuer's victim. Now the token is refused, and so is
// every other spelling of it.
func TestTokenCannotActAsAnotherIssuersUser(t *testing.T) {
	is := twoBlocks(t)
	for name, payload := range map[string]string{
		"iss then ISS":          `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"` + ssoIssuer + `","ISS":"x"}`,
		"ISS then iss":          `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"ISS":"x","iss":"` + ssoIssuer + `"}`,
		"iss twice":             `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"x","iss":"` + ssoIssuer + `"}`,
		"Iss alone":             `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"Iss":"` + ssoIssuer + `"}`,
		"escaped iss":           `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"\u0069ss":"` + ssoIssuer + `","ISS":"x"}`,
		"sub twice":             `{"sub":"someone","SUB":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"x"}`,
		"issuer in upper case":  `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"HTTPS://SSO.EXAMPLE"}`,
		"issuer in mixed case":  `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"https://SSO.example"}`,
		"the SSO issuer itself": `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"` + ssoIssuer + `"}`,
		"another namespace":     `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"partners"}`,
		"its other case":        `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"PARTNERS"}`,
		"Exp beside exp":        `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"Exp":1,"iss":"x"}`,
		"Sub alone":             `{"Sub":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"x"}`,
		"invalid UTF-8":         "{\"sub\":\"victim\",\"aud\":\"apikeys\",\"exp\":" + exp() + ",\"iss\":\"x\xff\"}",
		"lone surrogate":        `{"sub":"victim","aud":"apikeys","exp":` + exp() + `,"iss":"x\ud800"}`,
	} {
		t.Run(name, func(t *testing.T) {
			id, err := is.Verify(context.Background(), rawToken(looseSecret, hs256, payload))
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("accepted as %v (err %v)", id.Owner, err)
			}
		})
	}
	// The issuer-less block still takes other issuers' tokens, each in
	// its own namespace.
	id, err := is.Verify(context.Background(), rawToken(looseSecret, hs256,
		`{"sub":"carol","aud":"apikeys","exp":`+exp()+`,"iss":"https://other.example"}`))
	if err != nil || id.Owner != (keystore.Owner{Source: "jwt:https://other.example", Name: "carol"}) {
		t.Fatalf("another issuer's token: %v, %v", id.Owner, err)
	}
	// And the SSO block its own.
	id, err = is.Verify(context.Background(), rawToken(ssoSecret, hs256,
		`{"sub":"victim","aud":"apikeys","exp":`+exp()+`,"iss":"`+ssoIssuer+`"}`))
	if err != nil || id.Owner != (keystore.Owner{Source: "jwt:" + ssoIssuer, Name: "victim"}) {
		t.Fatalf("the SSO issuer's own token: %v, %v", id.Owner, err)
	}
}

// A header read twice could pick its algorithm or key by one spelling and
// be checked by another.
func TestTokenHeaderIsReadOnce(t *testing.T) {
	is := twoBlocks(t)
	payload := `{"sub":"carol","aud":"apikeys","exp":` + exp() + `,"iss":"https://other.example"}`
	for name, header := range map[string]string{
		"alg twice":       `{"alg":"none","alg":"HS256"}`,
		"alg in two case": `{"alg":"HS256","ALG":"none"}`,
		"kid twice":       `{"alg":"HS256","kid":"a","Kid":"b"}`,
		"crit":            `{"alg":"HS256","crit":["exp"]}`,
		"not an object":   `["HS256"]`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := is.Verify(context.Background(), rawToken(looseSecret, header, payload)); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("accepted (err %v)", err)
			}
		})
	}
	if _, err := is.Verify(context.Background(), rawToken(looseSecret, hs256, payload)); err != nil {
		t.Fatal(err)
	}
}

// referenceDecision is how the blocks of twoBlocks ought to treat a token
// signed with secret, decided from another decoder's reading of its
// payload: refused unless the payload is strict JSON (every member once,
// in any letter case; valid UTF-8) without a registered claim spelt in
// another letter case; otherwise routed by the exact "iss"
// to the block of that issuer, or to the issuer-less block unless the
// issuer is one the others hold in any letter case; accepted only with
// that block's secret, and then owned by the name in "sub" within the
// block's namespace.
func referenceDecision(secret []byte, payload []byte) (owner keystore.Owner, accepted bool) {
	if jsonref.Check(payload) != nil {
		return keystore.Owner{}, false
	}
	var claims struct{ Iss, Sub *string }
	var m map[string]json.RawMessage
	if json.Unmarshal(payload, &m) != nil {
		return keystore.Owner{}, false
	}
	for name := range m { // a registered claim in another letter case
		for _, claim := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "scp"} {
			if name != claim && strings.ToLower(name) == claim {
				return keystore.Owner{}, false
			}
		}
	}
	for name, dst := range map[string]**string{"iss": &claims.Iss, "sub": &claims.Sub} {
		if raw, ok := m[name]; ok {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return keystore.Owner{}, false
			}
			*dst = &s
		}
	}
	iss := ""
	if claims.Iss != nil {
		iss = *claims.Iss
	}
	var want []byte
	var source string
	switch {
	case iss == ssoIssuer:
		want, source = ssoSecret, "jwt:"+ssoIssuer
	case iss == "https://partners.example":
		want, source = ssoSecret, "jwt:partners"
	case strings.EqualFold(iss, ssoIssuer), strings.EqualFold(iss, "https://partners.example"), strings.EqualFold(iss, "partners"):
		return keystore.Owner{}, false
	case iss == "":
		want, source = looseSecret, "jwt"
	default:
		want, source = looseSecret, "jwt:"+iss
	}
	if !bytes.Equal(secret, want) || claims.Sub == nil {
		return keystore.Owner{}, false
	}
	return keystore.Owner{Source: source, Name: *claims.Sub}, true
}

// Whatever the payload, the blocks decide what the reference decides:
// which token is accepted, and whose it then is.
func FuzzTokenDecision(f *testing.F) {
	e := exp()
	for _, p := range []string{
		`{"sub":"victim","aud":"apikeys","exp":` + e + `,"iss":"` + ssoIssuer + `","ISS":"x"}`,
		`{"sub":"carol","aud":"apikeys","exp":` + e + `,"iss":"https://other.example"}`,
		`{"sub":"carol","aud":"apikeys","exp":` + e + `}`,
		`{"sub":"v","aud":"apikeys","exp":` + e + `,"iss":"Partners"}`,
		`{"sub":"v","Sub":"w","aud":"apikeys","exp":` + e + `,"iss":"https://sso.example"}`,
	} {
		f.Add([]byte(p), false)
		f.Add([]byte(p), true)
	}
	is := twoBlocks(f)
	f.Fuzz(func(t *testing.T, payload []byte, sso bool) {
		secret := looseSecret
		if sso {
			secret = ssoSecret
		}
		id, err := is.Verify(context.Background(), rawToken(secret, hs256, string(payload)))
		owner, accepted := referenceDecision(secret, payload)
		switch {
		case err == nil && !accepted:
			t.Fatalf("%q: accepted as %v; the reference refuses it", payload, id.Owner)
		case err == nil && id.Owner != owner:
			t.Fatalf("%q: owner %v; the reference says %v", payload, id.Owner, owner)
		}
		// Refusals the reference would accept are the claims' own rules
		// (exp, aud, the name rule), which it does not model.
	})
}

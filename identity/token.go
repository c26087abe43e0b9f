package identity

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
)

// token is a JWT read once: its header and claims decoded by the strict
// reader, so that routing to an issuer, the signature check, the claims'
// validation and the owner's name are all taken from one reading. (A
// second decoder that matched "ISS" as "iss" let a token routed by one
// spelling be named by the other.)
type token struct {
	header map[string]any
	claims jwt.MapClaims
	// signed is what the signature covers: the header and payload as sent.
	signed string
	sig    []byte
}

// segments decode strictly: unpadded base64url with zero padding bits, so
// that one token has one spelling.
var segments = base64.RawURLEncoding.Strict()

// readToken decodes a compact JWS. Its errors are tokenErrors.
func readToken(s string) (*token, error) {
	if len(s) > MaxTokenLen {
		return nil, tokenError("token is too long")
	}
	header, rest, ok := strings.Cut(s, ".")
	payload, sig, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(sig, ".") {
		return nil, tokenError("token is malformed")
	}
	t := &token{signed: s[:len(header)+1+len(payload)]}
	var err error
	if t.header, err = readSegment(header, "header", headerNames); err != nil {
		return nil, err
	}
	if t.claims, err = readSegment(payload, "payload", claimNames); err != nil {
		return nil, err
	}
	if t.sig, err = segments.DecodeString(sig); err != nil {
		return nil, tokenError("token is malformed")
	}
	// Extensions the token says must be understood: none are.
	if _, ok := t.header["crit"]; ok {
		return nil, tokenError(`token has a "crit" header, which is not supported`)
	}
	return t, nil
}

// The header members and claims the gateway reads in every token.
var (
	headerNames = []string{"alg", "kid", "typ", "crit"}
	claimNames  = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "scp"}
)

// readSegment decodes a header or payload: a strict JSON object in which
// no member is one of names in another letter case.
func readSegment(seg, what string, names []string) (map[string]any, error) {
	data, err := segments.DecodeString(seg)
	if err != nil {
		return nil, tokenError("token is malformed")
	}
	if err := strictjson.Check(data); err != nil {
		var se *strictjson.Error
		if errors.As(err, &se) && se.Reason == strictjson.Duplicate {
			return nil, tokenError(se.Describe("token " + what))
		}
		return nil, tokenError("token is malformed")
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		return nil, tokenError("token is malformed")
	}
	if err := checkSpellings(m, what, names); err != nil {
		return nil, err
	}
	return m, nil
}

// checkSpellings refuses a member that differs from one of names only in
// letter case: one reader may take it for that name, another not.
func checkSpellings(m map[string]any, what string, names []string) error {
	for got := range m {
		for _, n := range names {
			if got != n && strings.EqualFold(got, n) {
				return tokenError("token " + what + " has the member " + strconv.Quote(got) + ", which is " + strconv.Quote(n) + " in another letter case")
			}
		}
	}
	return nil
}

// str is the header member name when it is a string, else "".
func (t *token) str(name string) string {
	s, _ := t.header[name].(string)
	return s
}

// issuer is the "iss" claim: "" when absent, an error when not a string.
func (t *token) issuer() (string, error) {
	iss, err := t.claims.GetIssuer()
	if err != nil {
		return "", tokenError(`"iss" must be a string`)
	}
	return iss, nil
}

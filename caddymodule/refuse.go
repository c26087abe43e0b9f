package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// How apikey_auth refuses: every refusal (401, 403, 429, 503, and with
// body 400, 413, 415) is an error for the server's error routes, as
// Caddy's own authentication refusals are, so that one handle_errors
// shapes them all; the header fields set before (WWW-Authenticate,
// Retry-After, RateLimit) stay on the answer. Its message is
// {http.error.message} ({err.message} in a Caddyfile), which never holds
// a character that a JSON string would need escaped: the shipped
// Caddyfiles' `respond `{"success": false, "error": "{err.message}"}``
// is valid JSON for every refusal.

// Messages of the refusals that say the same each time.
const (
	msgKeyRequired = "a valid API key is required"
	msgTwoKeys     = "the request carries more than one API key"
)

// refuse is the refusal with status and msg (made JSON-safe, see
// jsonSafe).
func refuse(status int, msg string) error {
	return caddyhttp.Error(status, errors.New(jsonSafe(msg)))
}

// jsonSafe is msg with what a JSON string would need escaped replaced:
// double quotes by single ones, backslashes by slashes, control
// characters and invalid UTF-8 by spaces. The messages above and those
// built below have none; this holds for any message added later.
func jsonSafe(msg string) string {
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	var b strings.Builder
	for _, r := range msg {
		switch {
		case r == '"':
			r = '\''
		case r == '\\':
			r = '/'
		case r < 0x20, r == utf8.RuneError:
			r = ' '
		}
		b.WriteRune(r)
	}
	return b.String()
}

// scopeRefusal refuses a key lacking scope (403, with challenge in
// WWW-Authenticate).
func scopeRefusal(h http.Header, challenge, scope string) error {
	h.Set("WWW-Authenticate", challenge)
	return refuse(http.StatusForbidden, "the API key lacks the scope '"+scope+"'")
}

// limitedRefusal refuses a request over its limits: 429 saying what ran
// out, with Retry-After when it is known when the request could pass.
func limitedRefusal(h http.Header, v keystore.Verdict) error {
	if v.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(ceilSeconds(v.RetryAfter), 10))
	}
	return refuse(http.StatusTooManyRequests, limitedMessage(v, time.Now()))
}

// limitedMessage says what of v's limits ran out, as of now.
func limitedMessage(v keystore.Verdict, now time.Time) string {
	if v.Reason == keystore.RateLimited {
		return fmt.Sprintf("rate limit '%s' exceeded: at most %d requests per %s", v.Name, v.Quota, shortDuration(v.Window))
	}
	msg := "the key's credits are spent"
	if !v.NextRefill.IsZero() {
		msg += fmt.Sprintf("; they refill in %d seconds", ceilSeconds(v.NextRefill.Sub(now)))
	}
	return msg
}

package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// writeRateLimitFields sets the fields of
// draft-ietf-httpapi-ratelimit-headers-11 for the verdict's limit (the
// most restrictive one): RateLimit-Policy ("name";q=quota;w=window) and
// RateLimit ("name";r=remaining;t=seconds until it is whole again). Keys
// without limits get neither.
func writeRateLimitFields(h http.Header, v keystore.Verdict) {
	if v.Name == "" {
		return
	}
	name := strconv.Quote(v.Name) // rate names are printable ASCII without quotes
	policy := name + ";q=" + strconv.FormatInt(v.Quota, 10)
	if v.Window > 0 {
		policy += ";w=" + strconv.FormatInt(ceilSeconds(v.Window), 10)
	}
	if v.Name == "credits" {
		policy += `;qu="credits"`
	}
	h.Set("RateLimit-Policy", policy)
	state := name + ";r=" + strconv.FormatInt(max(v.Remaining, 0), 10)
	if v.Reset > 0 {
		state += ";t=" + strconv.FormatInt(ceilSeconds(v.Reset), 10)
	}
	h.Set("RateLimit", state)
}

// writeLimited answers a request over its limits: 429 JSON saying what
// ran out, with Retry-After when it is known when the request could pass.
func writeLimited(w http.ResponseWriter, v keystore.Verdict) error {
	var msg string
	switch v.Reason {
	case keystore.RateLimited:
		msg = fmt.Sprintf("rate limit %q exceeded: at most %d requests per %s", v.Name, v.Quota, shortDuration(v.Window))
	default:
		msg = "the key's credits are spent"
		if !v.NextRefill.IsZero() {
			msg += fmt.Sprintf("; they refill in %d seconds", ceilSeconds(time.Until(v.NextRefill)))
		}
	}
	if v.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(v.RetryAfter), 10))
	}
	return writeError(w, http.StatusTooManyRequests, msg)
}

func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

func zapError(err error) zap.Field { return zap.Error(err) }

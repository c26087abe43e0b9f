package caddymodule

import (
	"net/http"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// writeRateLimitFields sets the fields of
// draft-ietf-httpapi-ratelimit-headers-11 for the verdict's limit (the
// most restrictive one): RateLimit-Policy ("name";q=quota;w=window) and
// RateLimit ("name";r=remaining;t=seconds until it is whole again). Keys
// without limits get neither. A policy's field is built once; the state
// costs one allocation (rateLimitState).
func writeRateLimitFields(h http.Header, v keystore.Verdict) {
	if v.Name == "" {
		return
	}
	h["Ratelimit-Policy"] = rateLimitPolicy(v)
	st := new(rateLimitState)
	b := strconv.AppendQuote(st.buf[:0], v.Name) // rate names are printable ASCII without quotes
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, max(v.Remaining, 0), 10)
	if v.Reset > 0 {
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, ceilSeconds(v.Reset), 10)
	}
	h["Ratelimit"] = st.field(b)
}

// rateLimitState is one RateLimit field value with the slice that holds
// it, in one allocation: the string's bytes are buf's, never written
// again once field returns, and both point into the same object, which
// the garbage collector keeps while either is referenced.
type rateLimitState struct {
	value [1]string
	buf   [96]byte
}

// field returns the field's values, b being st.buf's bytes; a value too
// long for buf (a rate name near its limit) was appended elsewhere and
// is used as it is.
func (st *rateLimitState) field(b []byte) []string {
	st.value[0] = unsafe.String(unsafe.SliceData(b), len(b))
	return st.value[:]
}

// policyKey names a RateLimit-Policy field value.
type policyKey struct {
	name          string
	quota, window int64
}

// policyFields caches RateLimit-Policy values: few exist (one per limit
// of each plan, and per gateway share), and each is the same on every
// response. The slices are shared and never modified (len = cap, so an
// append by a later handler copies).
var policyFields sync.Map // policyKey -> []string

func rateLimitPolicy(v keystore.Verdict) []string {
	key := policyKey{v.Name, v.Quota, ceilSeconds(v.Window)}
	if f, ok := policyFields.Load(key); ok {
		return f.([]string)
	}
	policy := strconv.Quote(v.Name) + ";q=" + strconv.FormatInt(v.Quota, 10)
	if v.Window > 0 {
		policy += ";w=" + strconv.FormatInt(key.window, 10)
	}
	if v.Name == "credits" {
		policy += `;qu="credits"`
	}
	f, _ := policyFields.LoadOrStore(key, []string{policy})
	return f.([]string)
}

func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

func zapError(err error) zap.Field { return zap.Error(err) }

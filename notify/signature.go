// Package notify tells people what happens to their keys: it queues
// events (a key leaked, revoked, disabled, about to expire, running out
// of credits) in the key store, one notice per endpoint, and delivers
// them as webhooks signed the Standard Webhooks way (webhook-id,
// webhook-timestamp, webhook-signature: HMAC-SHA256), at least once,
// with retries, from whichever gateway of a cluster leases them first.
// It has no dependency on Caddy.
package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// secretPrefix starts Standard Webhooks secrets: the rest is base64.
const secretPrefix = "whsec_"

// minSecretLen is the shortest HMAC key accepted, in bytes.
const minSecretLen = 24

// ParseSecret decodes a Standard Webhooks secret, "whsec_" followed by
// the base64 of at least 24 random bytes (e.g. `echo whsec_$(openssl
// rand -base64 32)`).
func ParseSecret(s string) ([]byte, error) {
	enc, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return nil, errors.New(`a webhook secret starts with "whsec_", then the base64 of random bytes: echo whsec_$(openssl rand -base64 32)`)
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, errors.New("a webhook secret is whsec_ and base64: " + err.Error())
	}
	if len(key) < minSecretLen {
		return nil, errors.New("a webhook secret holds at least 24 random bytes: echo whsec_$(openssl rand -base64 32)")
	}
	return key, nil
}

// Sign returns the webhook-signature header of a delivery: "v1,"
// followed by the base64 HMAC-SHA256 of "<id>.<timestamp>.<body>".
func Sign(secret []byte, id string, at time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(secret, id, strconv.FormatInt(at.Unix(), 10), body))
}

func mac(secret []byte, id, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(id + "." + timestamp + "."))
	m.Write(body)
	return m.Sum(nil)
}

// Verify is what a receiver does: it reports whether one of the
// space-separated signatures in header signs the delivery, and whether
// its timestamp is within tolerance of now (against replays).
func Verify(secret []byte, id, timestamp string, body []byte, header string, now time.Time, tolerance time.Duration) bool {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || now.Sub(time.Unix(ts, 0)).Abs() > tolerance {
		return false
	}
	want := mac(secret, id, timestamp, body)
	for _, sig := range strings.Fields(header) {
		v, b64, ok := strings.Cut(sig, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// Package leaks answers secret scanners that found API keys where they
// should not be: it parses and authenticates their alerts (GitHub's
// secret-scanning partner protocol) and builds their feedback. It has no
// dependency on Caddy; the gateway revokes the keys.
package leaks

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
)

// MaxAlerts bounds the matches one alert may carry.
const MaxAlerts = 1000

// Alert is one match a scanner reports: the token it found, the type it
// registered for it, and where it was found.
type Alert struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

// ErrMalformed means an alert body is not a JSON array of matches.
var ErrMalformed = errors.New("alert is not a JSON array of {token, type, url, source}")

// ParseAlerts reads an alert body: a JSON array of at most MaxAlerts
// objects, each with a string "token" and optional string "type", "url"
// and "source" (other members are ignored). Anything else is
// ErrMalformed. A token of any other shape than a key's (even empty) is
// a well-formed match: it is simply not a key.
func ParseAlerts(body []byte) ([]Alert, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '[' {
		return nil, ErrMalformed
	}
	// One reading: a match that names a member twice (in any letter
	// case) could be read for one token here and another elsewhere.
	if err := strictjson.Check(body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, ErrMalformed
	}
	if len(raw) > MaxAlerts {
		return nil, fmt.Errorf("%w: more than %d matches", ErrMalformed, MaxAlerts)
	}
	alerts := make([]Alert, len(raw))
	for i, m := range raw {
		if m == nil {
			return nil, fmt.Errorf("%w: match %d is not an object", ErrMalformed, i)
		}
		for name, dst := range map[string]*string{"token": &alerts[i].Token, "type": &alerts[i].Type, "url": &alerts[i].URL, "source": &alerts[i].Source} {
			v, ok := m[name]
			if !ok || string(v) == "null" {
				continue
			}
			if err := json.Unmarshal(v, dst); err != nil {
				return nil, fmt.Errorf("%w: match %d: %q is not a string", ErrMalformed, i, name)
			}
		}
		if v, ok := m["token"]; !ok || string(v) == "null" {
			return nil, fmt.Errorf("%w: match %d has no token", ErrMalformed, i)
		}
	}
	return alerts, nil
}

// Labels of Feedback.
const (
	TruePositive  = "true_positive"
	FalsePositive = "false_positive"
)

// Feedback tells the scanner what one match was, naming it by the
// digest of its token so that the token is not sent back.
type Feedback struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// FeedbackFor labels a match.
func FeedbackFor(a Alert, label string) Feedback {
	sum := sha256.Sum256([]byte(a.Token))
	return Feedback{TokenHash: hex.EncodeToString(sum[:]), TokenType: a.Type, Label: label}
}

package notify

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Event types.
const (
	// KeyLeaked: a secret scanner (or `caddy apikeys scan --revoke`)
	// found the key in public; it is revoked.
	KeyLeaked = "key.leaked"
	// KeyRevoked: the key was deleted, by its owner or an operator.
	KeyRevoked = "key.revoked"
	// KeyDisabled: an operator disabled the key.
	KeyDisabled = "key.disabled"
	// KeyExpiring: the key expires within the endpoint's horizon.
	KeyExpiring = "key.expiring"
	// CreditsLow: a key's (or an owner's) credits fell below the
	// endpoint's threshold.
	CreditsLow = "credits.low"
)

// Types are every event type, the default subscription of an endpoint.
var Types = []string{KeyLeaked, KeyRevoked, KeyDisabled, KeyExpiring, CreditsLow}

// Event is something that happened to a key.
type Event struct {
	// Type is one of Types.
	Type string
	// ID names the event; empty for a random one. Events found again
	// (a key expiring, seen by every gateway's scan) have a fixed one,
	// so that they are queued once.
	ID string
	// Time is when it happened; zero for now.
	Time time.Time
	// Key is the key it happened to.
	Key keystore.Key
	// Details are added to the payload's data (e.g. "via", "found_at").
	Details map[string]any
}

// payload is the body of a delivery, in the Standard Webhooks shape.
type payload struct {
	Type      string         `json:"type"`
	Timestamp time.Time      `json:"timestamp"`
	Data      map[string]any `json:"data"`
}

// body encodes an event's payload. It names the key by id, preview,
// title and owner: never the key itself, which the store does not have.
func (e Event) body() ([]byte, error) {
	k := e.Key
	data := map[string]any{"owner": k.Owner.Name, "source": k.Owner.Source}
	if k.ID != "" { // an owner's credits concern no one key
		data["key_id"], data["key_preview"], data["title"] = k.ID, k.Preview, k.Title
	}
	if !k.Expires.IsZero() {
		data["expires"] = k.Expires.UTC().Format(time.RFC3339)
	}
	for name, v := range e.Details {
		data[name] = v
	}
	return json.Marshal(payload{Type: e.Type, Timestamp: e.Time.UTC(), Data: data})
}

// randomID is a fresh event id.
func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "msg_" + hex.EncodeToString(b[:])
}

// EventID is the id of an event that may be found or reported more than
// once: the same parts, the same id, so that it is queued once.
func EventID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return "msg_" + hex.EncodeToString(h.Sum(nil)[:12])
}

// KeyEvent is an event of type typ about k, with details given as name,
// value pairs (empty values are left out). A key is deleted once, so
// key.revoked has a fixed id (a retried delete is sent once); the other
// events are published only for a change, each with its own id.
func KeyEvent(typ string, k keystore.Key, details ...string) Event {
	e := Event{Type: typ, Key: k, Details: map[string]any{}}
	for i := 0; i+1 < len(details); i += 2 {
		if details[i+1] != "" {
			e.Details[details[i]] = details[i+1]
		}
	}
	if typ == KeyRevoked {
		e.ID = EventID(typ, k.ID)
	}
	return e
}

// RevokedEvents are the notices of keys deleted together.
func RevokedEvents(keys []keystore.Key, details ...string) []Event {
	events := make([]Event, len(keys))
	for i, k := range keys {
		events[i] = KeyEvent(KeyRevoked, k, details...)
	}
	return events
}

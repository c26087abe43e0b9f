package keystore

import (
	"encoding/json"
	"time"
)

// MarshalKey encodes k in the store's binary record format (see record.go)
// for backends other than bbolt. The id is not included: it names the record.
func MarshalKey(k Key) []byte { return encodeKey(k) }

// UnmarshalKey decodes a record written by MarshalKey for the key id. The
// result shares no memory with b.
func UnmarshalKey(id string, b []byte) (Key, error) { return decodeKey([]byte(id), b) }

// UnixMicros returns t in Unix microseconds, the resolution stores keep,
// or 0 for the zero time.
func UnixMicros(t time.Time) int64 { return micros(t) }

// FromUnixMicros is the inverse of UnixMicros.
func FromUnixMicros(us int64) time.Time { return fromMicros(us) }

// MarshalUser encodes u, without its name, as every store keeps users.
func MarshalUser(u User) ([]byte, error) {
	return json.Marshal(userRecord{PasswordHash: u.PasswordHash, Created: micros(u.Created), Scopes: u.Scopes, Plan: u.Plan})
}

// UnmarshalUser decodes a record written by MarshalUser for the user name.
func UnmarshalUser(name string, b []byte) (User, error) { return decodeUser([]byte(name), b) }

package etcdstore

import (
	"slices"
	"testing"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func TestRecordRoundTrip(t *testing.T) {
	k := keystore.Key{
		ID: "0123456789abcdefghijklmnopqrstuv", Owner: keystore.PasswordUser("alice"), Title: "ci", Preview: "sk-...abcd",
		Created: time.Now().Truncate(time.Microsecond), Expires: time.Now().Add(time.Hour).Truncate(time.Microsecond),
		Scopes: []string{"read", "write"}, Disabled: true, LastUsed: time.Now(),
	}
	k.Hash[3] = 7
	got, err := decodeRecord([]byte(encodeRecord(k)))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || got.Hash != k.Hash || got.Owner != k.Owner || !got.Created.Equal(k.Created) ||
		!got.Expires.Equal(k.Expires) || !slices.Equal(got.Scopes, k.Scopes) || !got.Disabled || !got.LastUsed.IsZero() {
		t.Fatalf("round trip: %+v", got)
	}
	if used := decodeUsed([]byte(encodeUsed(k.Created))); !used.Equal(k.Created) {
		t.Fatalf("last-used round trip: %v", used)
	}
}

// FuzzDecodeRecord feeds arbitrary bytes, as a damaged or foreign value
// under keys/ would be, to the record decoder: it must refuse or decode,
// never panic, and what it decodes must survive being written back.
func FuzzDecodeRecord(f *testing.F) {
	k := keystore.Key{ID: "id", Owner: keystore.Service("o"), Created: time.UnixMicro(1), Scopes: []string{"s"}}
	f.Add([]byte(encodeRecord(k)))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{2, 'i', 'd'})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeRecord(b)
		if err != nil {
			return
		}
		again, err := decodeRecord([]byte(encodeRecord(k)))
		if err != nil {
			t.Fatalf("decoded %+v from %x, which does not decode once written back: %v", k, b, err)
		}
		// The record never carries the last use, which lives under used/.
		if again.ID != k.ID || again.Hash != k.Hash || again.Owner != k.Owner || again.Title != k.Title ||
			again.Preview != k.Preview || !again.Created.Equal(k.Created) || !again.Expires.Equal(k.Expires) ||
			!slices.Equal(again.Scopes, k.Scopes) || again.Disabled != k.Disabled || !again.LastUsed.IsZero() {
			t.Fatalf("decoded %+v from %x, written back and read as %+v", k, b, again)
		}
	})
}

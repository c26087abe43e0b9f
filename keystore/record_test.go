package keystore

import (
	"testing"
	"time"
)

func TestRecordRoundTripAndCorruption(t *testing.T) {
	k := testKeyOf(t, Owner{Source: "jwt:https://idp.example/", Name: "alice"}, time.Now())
	k.Title, k.Scopes, k.Disabled, k.Rotated = "ünïcode title", []string{"read", "write"}, true, true
	k.Plan, k.Account = "pro", "8Dz8WRq7QEowDqZXoN2GzNEKU7QlHF0e"
	k.LastUsed = time.Now().Add(time.Minute).Truncate(time.Microsecond)
	k.Expires = time.Now().Add(time.Hour).Truncate(time.Microsecond)
	b := encodeKey(k)
	got, err := decodeKey(k.ID, b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || got.Hash != k.Hash || got.Owner != k.Owner || got.Title != k.Title || got.Preview != k.Preview ||
		!got.Created.Equal(k.Created) || !got.LastUsed.Equal(k.LastUsed) || !got.Expires.Equal(k.Expires) ||
		!got.Disabled || !got.Rotated || len(got.Scopes) != 2 || got.Scopes[1] != "write" || got.Plan != "pro" || got.Account != k.Account {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, k)
	}
	for i := range len(b) {
		if _, err := decodeKey(k.ID, b[:i]); err == nil {
			t.Fatalf("truncated record of %d bytes decoded", i)
		}
	}
	if _, err := decodeKey(k.ID, append(b, 0)); err == nil {
		t.Fatal("record with trailing bytes decoded")
	}
}

// Keys without a plan or account keep the first record version, which
// older releases read.
func TestRecordVersions(t *testing.T) {
	k := testKey(t, "alice", time.Now())
	if b := encodeKey(k); b[0] != recordVersion {
		t.Fatalf("a plain key is written as version %d", b[0])
	}
	k.Plan = "pro"
	b := encodeKey(k)
	if b[0] != recordVersionV2 {
		t.Fatalf("a key with a plan is written as version %d", b[0])
	}
	if got, err := decodeKey(k.ID, b); err != nil || got.Plan != "pro" || got.Account != "" {
		t.Fatalf("decoded %+v, %v", got, err)
	}
}

func FuzzDecodeKey(f *testing.F) {
	f.Add(encodeKey(Key{Owner: PasswordUser("a"), Title: "t", Preview: "sk-...abcd", Created: time.Now(), Scopes: []string{"x"}}))
	f.Add([]byte{recordVersion})
	f.Add(encodeKey(Key{Owner: Service("a"), Plan: "p", Account: "x", Created: time.Now()}))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeKey("id", b)
		if err == nil && string(encodeKey(k)) != string(b) {
			// Not every accepted encoding is canonical (varints), but an
			// accepted record must at least re-decode to the same key.
			k2, err := decodeKey("id", encodeKey(k))
			if err != nil || k2.Owner != k.Owner || k2.Title != k.Title || len(k2.Scopes) != len(k.Scopes) {
				t.Fatalf("re-encoding changed the key: %+v vs %+v (%v)", k, k2, err)
			}
		}
	})
}

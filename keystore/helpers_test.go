package keystore

import (
	"testing"
	"time"
)

func testKey(t testing.TB, owner string, created time.Time) Key {
	return testKeyOf(t, PasswordUser(owner), created)
}

func testKeyOf(t testing.TB, owner Owner, created time.Time) Key {
	t.Helper()
	secret, id, err := NewKeyAndID(DefaultPrefix, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return Key{ID: id, Hash: HashKey(secret), Owner: owner, Title: "t", Preview: Preview(secret, DefaultPrefix), Created: created.Truncate(time.Microsecond)}
}

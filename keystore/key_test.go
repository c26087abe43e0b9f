package keystore

import (
	"hash/crc32"
	"strings"
	"testing"
	"time"
)

func TestNewKeyFormat(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		k, _, err := NewKeyAndID(DefaultPrefix, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != 51 || !strings.HasPrefix(k, "sk-") {
			t.Fatalf("key %q: want sk- and 48 characters", k)
		}
		for _, c := range k[3:] {
			if !strings.ContainsRune(base62Alphabet, c) {
				t.Fatalf("key %q has non-base62 character %q", k, c)
			}
		}
		if err := ParseKey(k, DefaultPrefix); err != nil {
			t.Fatalf("minted key %q does not parse: %v", k, err)
		}
		if seen[k] {
			t.Fatalf("duplicate key %q", k)
		}
		seen[k] = true
	}
}

func TestParseKeyRejects(t *testing.T) {
	good, _, err := NewKeyAndID(DefaultPrefix, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := []byte(good)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := map[string]string{
		"empty":                 "",
		"prefix only":           "sk-",
		"wrong prefix":          "pk-" + good[3:],
		"one short":             good[:len(good)-1],
		"one long":              good + "a",
		"non-base62":            good[:10] + "_" + good[11:],
		"typo in random part":   flip(10),
		"typo in checksum":      flip(len(good) - 1),
		"swapped first":         good[:3] + string(good[4]) + string(good[3]) + good[5:],
		"seed example (no crc)": "sk-6kwHVPIcgnRtz3LE2WixpqXkvbPEyDRt4QEukkK4vZF4JfaN",
		"JWT-looking":           "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
	}
	for name, k := range cases {
		t.Run(name, func(t *testing.T) {
			if name == "swapped first" && good[3] == good[4] {
				return
			}
			if err := ParseKey(k, DefaultPrefix); err != ErrMalformedKey {
				t.Errorf("%s: ParseKey(%q) = %v, want ErrMalformedKey", name, k, err)
			}
		})
	}
}

func TestCustomPrefix(t *testing.T) {
	k, _, err := NewKeyAndID("acme_", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ParseKey(k, "acme_"); err != nil {
		t.Fatal(err)
	}
	if err := ParseKey(k, DefaultPrefix); err == nil {
		t.Fatal("key with another prefix accepted")
	}
	if p := Preview(k, "acme_"); p != "acme_..."+k[len(k)-4:] {
		t.Fatalf("preview %q", p)
	}
}

func TestPreviewAndID(t *testing.T) {
	if got := Preview("sk-6kwHVPIcgnRtz3LE2WixpqXkvbPEyDRt4QEukkK4vZF4JfaN", "sk-"); got != "sk-...JfaN" {
		t.Fatalf("Preview = %q, want sk-...JfaN", got)
	}
	_, id, err := NewKeyAndID(DefaultPrefix, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != 32 || strings.Trim(id, base62Alphabet) != "" {
		t.Fatalf("id %q: want 32 base62 characters", id)
	}
}

func TestHashKeyMatchesSHA256OfWholeKey(t *testing.T) {
	// The digest covers the prefix too, as QueryLake's does, and keys
	// longer than the stack buffer hash the same way.
	short := HashKey("sk-abc")
	if short == HashKey("abc") {
		t.Fatal("prefix not part of the digest")
	}
	long := strings.Repeat("x", 300)
	if HashKey(long) != HashKey(string([]byte(long))) {
		t.Fatal("long keys hash inconsistently")
	}
}

func FuzzParseKey(f *testing.F) {
	k, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
	f.Add(k)
	f.Add("")
	f.Add("sk-")
	f.Add("sk-6kwHVPIcgnRtz3LE2WixpqXkvbPEyDRt4QEukkK4vZF4JfaN")
	f.Fuzz(func(t *testing.T, s string) {
		err := ParseKey(s, DefaultPrefix)
		if err != nil && err != ErrMalformedKey {
			t.Fatalf("unexpected error %v", err)
		}
		if err == nil {
			if len(s) != 51 || !strings.HasPrefix(s, "sk-") {
				t.Fatalf("accepted %q of wrong shape", s)
			}
			if Preview(s, DefaultPrefix) != "sk-..."+s[47:] {
				t.Fatal("preview mismatch")
			}
		}
	})
}

func BenchmarkParseKey(b *testing.B) {
	k, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseKey(k, DefaultPrefix); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseAndHashKey(b *testing.B) {
	k, _, _ := NewKeyAndID(DefaultPrefix, time.Now())
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseKey(k, DefaultPrefix); err != nil {
			b.Fatal(err)
		}
		_ = HashKey(k)
	}
}

func TestCRC32OfMatchesStdlib(t *testing.T) {
	for _, s := range []string{"", "a", "0123456789abcdefghijABCDEFGHIJ0123456789xy"} {
		if got, want := crc32Of(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("crc32Of(%q) = %x, want %x", s, got, want)
		}
	}
}

func TestIDsSortByCreation(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	_, a, _ := NewKeyAndID(DefaultPrefix, t0)
	_, b, _ := NewKeyAndID(DefaultPrefix, t0.Add(time.Microsecond))
	_, c, _ := NewKeyAndID(DefaultPrefix, t0.Add(100*365*24*time.Hour))
	if !(a < b && b < c) {
		t.Fatalf("ids out of creation order: %s %s %s", a, b, c)
	}
	if a[:idTimeLen] == b[:idTimeLen] {
		t.Fatal("a microsecond apart, same time prefix")
	}
	_, x, _ := NewKeyAndID(DefaultPrefix, t0)
	if x == a || x[:idTimeLen] != a[:idTimeLen] {
		t.Fatalf("same-instant ids %s %s: want a shared prefix and different random parts", x, a)
	}
}

// A key begins with the stamp its id begins with, and stamps sort as
// their times do, so stamped digests append to the store's index.
func TestKeysBeginWithTheirIDsStamp(t *testing.T) {
	t0 := time.UnixMicro(1_800_000_000_000_000)
	prev := ""
	for _, at := range []time.Time{t0, t0.Add(time.Microsecond), t0.Add(61 * time.Microsecond), t0.Add(time.Hour)} {
		key, _, err := NewKeyAndID("acme_", at)
		if err != nil {
			t.Fatal(err)
		}
		_, id, err := NewKeyAndID(DefaultPrefix, at)
		if err != nil {
			t.Fatal(err)
		}
		if err := ParseKey(key, "acme_"); err != nil {
			t.Fatalf("%q: %v", key, err)
		}
		stamp := StampOf(key, "acme_")
		if stamp != id[:StampLen] || stamp <= prev {
			t.Fatalf("key %q at %v: stamp %q, id %q, previous stamp %q", key, at, stamp, id, prev)
		}
		prev = stamp
		key2, id2, err := NewKeyAndID("acme_", at)
		if err != nil || ParseKey(key2, "acme_") != nil || StampOf(key2, "acme_") != stamp || id2[:StampLen] != stamp ||
			key2 == key || id2 == id || len(id2) != idLen || strings.Contains(key2[len("acme_")+StampLen:], id2[StampLen:]) {
			t.Fatalf("NewKeyAndID at %v = %q, %q, %v (NewKeyAt %q, NewID %q)", at, key2, id2, err, key, id)
		}
	}
}

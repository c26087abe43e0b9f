package keystore

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"strings"
	"time"
	"unsafe"
)

// DefaultPrefix is the prefix of minted keys unless configured otherwise.
// It matches the keys QueryLake issues, so existing clients and secret
// scanners that look for "sk-" keep working.
const DefaultPrefix = "sk-"

const (
	// BodyLen is the number of base62 characters after the prefix.
	BodyLen = 48
	// checksumLen is the number of trailing base62 characters that hold
	// the CRC32 of the random part; 62^6 > 2^32, so every CRC fits.
	checksumLen = 6
	randomLen   = BodyLen - checksumLen
	// IDLen is the length of a key's public identifier.
	IDLen = 32
	// previewLen is how many trailing characters key_preview reveals.
	previewLen = 4
)

const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// ErrMalformedKey is returned by ParseKey for anything that is not a
// well-formed key with a valid checksum.
var ErrMalformedKey = errors.New("malformed API key")

// Hash is the SHA-256 digest of a full key string, prefix included.
// It is the only form in which a key is ever stored.
type Hash [sha256.Size]byte

// HashKey returns the stored digest of key.
func HashKey(key string) Hash {
	return sha256.Sum256(stringBytes(key))
}

// stringBytes views s as bytes without copying, for functions that only
// read their input; converting would cost an allocation per key check.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// NewKey mints a fresh key: prefix, 42 random base62 characters from
// crypto/rand, and 6 base62 characters of their CRC32.
func NewKey(prefix string) (string, error) {
	var b strings.Builder
	b.Grow(len(prefix) + BodyLen)
	b.WriteString(prefix)
	random, err := randomBase62(randomLen)
	if err != nil {
		return "", err
	}
	b.WriteString(random)
	var sum [checksumLen]byte
	encodeChecksum(&sum, crc32Of(random))
	b.Write(sum[:])
	return b.String(), nil
}

// idTimeLen is how many leading id characters hold the creation time.
const idTimeLen = 9

// NewID returns a 32-character base62 identifier: the creation time in
// microseconds (9 characters, so ids sort by age) and 23 random characters
// (136 bits). Ids that grow with time append to the store's index instead
// of landing on random pages, which keeps commits small at millions of
// keys; creation times are public anyway.
func NewID(created time.Time) (string, error) {
	random, err := randomBase62(IDLen - idTimeLen)
	if err != nil {
		return "", err
	}
	var b [IDLen]byte
	us := uint64(max(created.UnixMicro(), 0))
	for i := idTimeLen - 1; i >= 0; i-- {
		b[i] = base62Alphabet[us%62]
		us /= 62
	}
	copy(b[idTimeLen:], random)
	return string(b[:]), nil
}

// ParseKey checks that s has the given prefix, the right length, only
// base62 characters and a matching checksum. It touches no store, so typos
// and strings that were never keys are refused for the cost of a CRC.
func ParseKey(s, prefix string) error {
	if len(s) != len(prefix)+BodyLen || !strings.HasPrefix(s, prefix) {
		return ErrMalformedKey
	}
	body := s[len(prefix):]
	for i := 0; i < len(body); i++ {
		if !isBase62[body[i]] {
			return ErrMalformedKey
		}
	}
	var want [checksumLen]byte
	encodeChecksum(&want, crc32Of(body[:randomLen]))
	if body[randomLen:] != string(want[:]) {
		return ErrMalformedKey
	}
	return nil
}

// Preview returns the displayable form of key: prefix, "...", last four.
func Preview(key, prefix string) string {
	if len(key) < previewLen {
		return prefix + "..."
	}
	return prefix + "..." + key[len(key)-previewLen:]
}

func crc32Of(s string) uint32 { return crc32.ChecksumIEEE(stringBytes(s)) }

func encodeChecksum(dst *[checksumLen]byte, v uint32) {
	n := uint64(v)
	for i := checksumLen - 1; i >= 0; i-- {
		dst[i] = base62Alphabet[n%62]
		n /= 62
	}
}

var isBase62 = func() (t [256]bool) {
	for i := 0; i < len(base62Alphabet); i++ {
		t[base62Alphabet[i]] = true
	}
	return t
}()

// randomBase62 draws n uniformly distributed base62 characters from
// crypto/rand, rejecting bytes >= 248 so that no character is favoured.
func randomBase62(n int) (string, error) {
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", err
		}
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			out = append(out, base62Alphabet[b%62])
			if len(out) == n {
				break
			}
		}
	}
	return string(out), nil
}

package keystore

import (
	"crypto/rand"
	"crypto/sha256"
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
	// the CRC32 of the characters before them; 62^6 > 2^32, so every CRC
	// fits.
	checksumLen = 6
	checkedLen  = BodyLen - checksumLen
	// StampLen is the number of leading body characters that hold the
	// key's creation time, the same characters its id starts with.
	StampLen  = idTimeLen
	randomLen = checkedLen - StampLen
	// idLen is the length of a key's public identifier.
	idLen = 32
	// previewLen is how many trailing characters key_preview reveals.
	previewLen = 4
)

const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

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

// NewKeyAndID mints a fresh key created at created, and its id, both from
// one read of crypto/rand.
//
// The key is prefix, the creation time in microseconds (StampLen base62
// characters, as the key's id begins), 33 random base62 characters (196
// bits), and 6 base62 characters of the CRC32 of the 42 before them. The
// id is 32 base62 characters: the same creation time (9 characters, so
// ids sort by age) and 23 random characters (136 bits). The stamps let a
// store index keys by (stamp, digest) and by id in the order they are
// minted, so that new keys append to its indexes instead of landing on
// random pages, which keeps commits small at millions of keys; creation
// times are public anyway.
func NewKeyAndID(prefix string, created time.Time) (key, id string, err error) {
	var random [randomLen + idLen - idTimeLen]byte
	if err := fillBase62(random[:]); err != nil {
		return "", "", err
	}
	return stampedKey(prefix, created, (*[randomLen]byte)(random[:randomLen])),
		stampedID(created, (*[idLen - idTimeLen]byte)(random[randomLen:])), nil
}

func stampedKey(prefix string, created time.Time, random *[randomLen]byte) string {
	b := make([]byte, len(prefix)+BodyLen)
	body := b[copy(b, prefix):]
	encodeStamp(body[:StampLen], created)
	copy(body[StampLen:], random[:])
	var sum [checksumLen]byte
	encodeChecksum(&sum, crc32Of(unsafe.String(&body[0], checkedLen)))
	copy(body[checkedLen:], sum[:])
	return unsafe.String(&b[0], len(b)) // b is not written again
}

// StampOf returns the creation stamp a well-formed key (one ParseKey
// accepts) begins with. Keys minted before stamps begin with random
// characters instead, which name no stored key's stamp.
func StampOf(key, prefix string) string {
	return key[len(prefix) : len(prefix)+StampLen]
}

// encodeStamp writes created, in microseconds since the epoch, as
// len(dst) base62 digits, most significant first, so that stamps sort as
// their times do.
func encodeStamp(dst []byte, created time.Time) {
	us := uint64(max(created.UnixMicro(), 0))
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = base62Alphabet[us%62]
		us /= 62
	}
}

// idTimeLen is how many leading id characters hold the creation time.
const idTimeLen = 9

func stampedID(created time.Time, random *[idLen - idTimeLen]byte) string {
	var b [idLen]byte
	encodeStamp(b[:idTimeLen], created)
	copy(b[idTimeLen:], random[:])
	return string(b[:])
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
	encodeChecksum(&want, crc32Of(body[:checkedLen]))
	if body[checkedLen:] != string(want[:]) {
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

// fillBase62 fills dst with uniformly distributed base62 characters from
// crypto/rand, rejecting bytes >= 248 so that no character is favoured.
func fillBase62(dst []byte) error {
	var buf [64]byte
	for n := 0; n < len(dst); {
		if _, err := rand.Read(buf[:]); err != nil {
			return err
		}
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			dst[n] = base62Alphabet[b%62]
			if n++; n == len(dst) {
				break
			}
		}
	}
	return nil
}

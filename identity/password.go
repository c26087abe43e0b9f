package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// ErrUnsupportedHash means a password hash is neither bcrypt nor argon2id.
var ErrUnsupportedHash = errors.New("unsupported password hash: use bcrypt or argon2id (the output of 'caddy hash-password')")

// fakeBcrypt is compared against when a user does not exist, so that an
// unknown user costs as much as a wrong password (Caddy's own constant,
// cost 14, the default of 'caddy hash-password').
const (
	fakeBcrypt     = "$2a$14$X3ulqf/iGxnf1k6oMZ.RZeJUoqI9PX2PM4rS5lkIKJXduLGXGPrt6"
	fakeBcryptCost = 14
)

// NormalizeHash accepts a password hash as 'caddy hash-password' prints it
// (modular crypt format, or base64 of it for older Caddy versions) and
// returns it in modular crypt format, after checking that it parses.
func NormalizeHash(h string) (string, error) {
	if !strings.HasPrefix(h, "$") {
		dec, err := base64.StdEncoding.DecodeString(h)
		if err != nil {
			return "", ErrUnsupportedHash
		}
		h = string(dec)
	}
	switch {
	case isBcrypt(h):
		if _, err := bcrypt.Cost([]byte(h)); err != nil {
			return "", fmt.Errorf("invalid bcrypt hash: %w", err)
		}
	case strings.HasPrefix(h, "$argon2id$"):
		if _, _, err := parseArgon2id(h); err != nil {
			return "", err
		}
	default:
		return "", ErrUnsupportedHash
	}
	return h, nil
}

// FakeHashLike returns a hash of the same algorithm and cost as h, of a
// password nobody knows, for comparing against when a user is unknown.
func FakeHashLike(h string) string {
	if p, _, err := parseArgon2id(h); err == nil {
		key := argon2.IDKey([]byte("antitiming"), p.salt, p.time, p.memory, p.threads, p.keyLen)
		return formatArgon2id(p, key)
	}
	if cost, err := bcrypt.Cost([]byte(h)); err == nil && cost != fakeBcryptCost {
		if fake, err := bcrypt.GenerateFromPassword([]byte("antitiming"), cost); err == nil {
			return string(fake)
		}
	}
	return fakeBcrypt
}

// ComparePassword reports whether plaintext matches hash, in time that
// does not depend on where they differ.
func ComparePassword(hash, plaintext string) (bool, error) {
	switch {
	case isBcrypt(hash):
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(plaintext))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return false, nil
		}
		return err == nil, err
	case strings.HasPrefix(hash, "$argon2id$"):
		p, want, err := parseArgon2id(hash)
		if err != nil {
			return false, err
		}
		got := argon2.IDKey([]byte(plaintext), p.salt, p.time, p.memory, p.threads, p.keyLen)
		return subtle.ConstantTimeCompare(got, want) == 1, nil
	}
	return false, ErrUnsupportedHash
}

func isBcrypt(h string) bool {
	return strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$")
}

type argon2Params struct {
	salt    []byte
	time    uint32
	memory  uint32
	threads uint8
	keyLen  uint32
}

// parseArgon2id reads a PHC string: $argon2id$v=19$m=..,t=..,p=..$salt$key.
func parseArgon2id(h string) (argon2Params, []byte, error) {
	bad := func(what string) (argon2Params, []byte, error) {
		return argon2Params{}, nil, fmt.Errorf("invalid argon2id hash: %s", what)
	}
	parts := strings.Split(h, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return bad("expected $argon2id$v=19$m=..,t=..,p=..$salt$key")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("unsupported version " + parts[2])
	}
	var m, t, p uint64
	for _, kv := range strings.Split(parts[3], ",") {
		name, val, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return bad("parameter " + name)
		}
		switch name {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			p = n
		default:
			return bad("unknown parameter " + name)
		}
	}
	// Bounds keep a hostile config or store entry from exhausting memory.
	if m < 8 || m > 4<<20 || t < 1 || t > 64 || p < 1 || p > 255 {
		return bad("parameters out of range")
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return bad("salt")
	}
	key, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 128 {
		return bad("key")
	}
	return argon2Params{salt: salt, time: uint32(t), memory: uint32(m), threads: uint8(p), keyLen: uint32(len(key))}, key, nil
}

func formatArgon2id(p argon2Params, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(p.salt), base64.RawStdEncoding.EncodeToString(key))
}

// Parameters of HashPassword: Caddy's argon2id defaults (46 MiB, one pass,
// one lane), within OWASP's recommended settings.
const (
	hashMemoryKiB = 46 * 1024
	hashTime      = 1
	hashThreads   = 1
	hashKeyLen    = 32
	hashSaltLen   = 16
)

// HashPassword returns an argon2id PHC hash of password, in the format
// 'caddy hash-password --algorithm argon2id' prints.
func HashPassword(password string) (string, error) {
	salt := make([]byte, hashSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	p := argon2Params{salt: salt, time: hashTime, memory: hashMemoryKiB, threads: hashThreads, keyLen: hashKeyLen}
	return formatArgon2id(p, argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, p.keyLen)), nil
}

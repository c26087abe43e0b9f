package keystore

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sources of owners that every configuration has. Token issuers add their
// own, named by configuration (see Owner).
const (
	// SourcePassword is the namespace of password users: those declared
	// in configuration and those kept in the store.
	SourcePassword = "password"
	// SourceService is the namespace of owners that operators name when
	// they make keys for programs (`caddy apikeys key create --service`).
	SourceService = "service"
)

// MaxNameLen is the longest owner or user name, in bytes.
const MaxNameLen = 128

// maxSourceLen is the longest source name, in bytes; issuer URLs fit.
const maxSourceLen = 512

// ownerSep separates a source from a name in an owner's stored form. It is
// a control character, which CheckName refuses in names, so no name can
// forge a source.
const ownerSep = "\x1f"

// Owner is who a key acts for: a name within the source that vouches for
// it. The same name in two sources is two owners: a token issuer's "alice"
// is not the password user "alice", and neither is the service "alice",
// unless the configuration maps an issuer into the password namespace.
type Owner struct {
	// Source is SourcePassword, SourceService, or a token issuer's
	// namespace (by default "jwt:" and its issuer).
	Source string
	// Name is the user, client or service name within the source.
	Name string
}

// PasswordUser is the owner that the password user name acts as.
func PasswordUser(name string) Owner { return Owner{Source: SourcePassword, Name: name} }

// Service is the operator-made owner name.
func Service(name string) Owner { return Owner{Source: SourceService, Name: name} }

// Encode returns the owner's stored form: the bare name for password users,
// so that stores written before owners had sources keep their meaning, and
// source, U+001F, name for the others.
func (o Owner) Encode() string {
	if o.Source == SourcePassword {
		return o.Name
	}
	return o.Source + ownerSep + o.Name
}

// DecodeOwner is the inverse of Encode.
func DecodeOwner(stored string) Owner {
	if src, name, ok := strings.Cut(stored, ownerSep); ok {
		return Owner{Source: src, Name: name}
	}
	return PasswordUser(stored)
}

// String is the owner for people and logs: the name alone for password
// users, else "name (source)".
func (o Owner) String() string {
	if o.Source == SourcePassword {
		return o.Name
	}
	return o.Name + " (" + o.Source + ")"
}

// Check validates both parts of the owner.
func (o Owner) Check() error {
	if err := CheckSource(o.Source); err != nil {
		return err
	}
	return CheckName(o.Name)
}

// ErrBadName is wrapped by CheckName's errors, whose messages are safe to
// show to callers.
var ErrBadName = errors.New("invalid name")

type nameError string

func (e nameError) Error() string   { return string(e) }
func (nameError) Is(err error) bool { return err == ErrBadName }

// CheckName is the one rule for user, client and service names, whatever
// their source (configuration, the store, a token claim, the CLI or the
// admin API): 1 to MaxNameLen bytes of valid UTF-8 without control
// characters. Control characters would let a name carry a store separator
// or forge a source, and break logs.
func CheckName(name string) error { return checkText("names", name, MaxNameLen) }

// CheckSource validates a source name, such as a token issuer's
// namespace, by the same rule with room for an issuer URL.
func CheckSource(src string) error { return checkText("source names", src, maxSourceLen) }

func checkText(what, s string, maxLen int) error {
	switch {
	case s == "":
		return nameError(what + " must not be empty")
	case len(s) > maxLen:
		return nameError(fmt.Sprintf("%s must be at most %d bytes", what, maxLen))
	case !utf8.ValidString(s):
		return nameError(what + " must be valid UTF-8")
	case strings.ContainsFunc(s, unicode.IsControl):
		return nameError(what + " must not contain control characters")
	}
	return nil
}

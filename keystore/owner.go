package keystore

import (
	"fmt"
	"strconv"
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

// IssuerSource is the source of a token issuer's identities unless its
// configuration names another: "jwt:" and the issuer, or "jwt" for
// tokens without one. It is the one place that namespace is built.
func IssuerSource(issuer string) string {
	if issuer == "" {
		return "jwt"
	}
	return "jwt:" + issuer
}

// isIssuerSource reports whether src is a namespace IssuerSource makes.
func isIssuerSource(src string) bool {
	return src == "jwt" || strings.HasPrefix(src, "jwt:")
}

// maxNameLen is the longest owner or user name, in bytes.
const maxNameLen = 128

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

// Encode returns the owner as the stores' owner indexes file it: the bare
// name for password users, as stores written before owners had sources
// did, and source, U+001F, name for the others. Names written by such
// stores may contain anything, so an index entry is only a candidate:
// stores compare the owner of the record it leads to.
func (o Owner) Encode() string {
	if o.Source == SourcePassword {
		return o.Name
	}
	return o.Source + ownerSep + o.Name
}

// String is the owner for people and logs, with the name quoted so that
// no name can pass for another source: "alice", or "deploy" (service).
func (o Owner) String() string {
	if o.Source == SourcePassword {
		return strconv.Quote(o.Name)
	}
	return strconv.Quote(o.Name) + " (" + o.Source + ")"
}

// Check validates both parts of the owner.
func (o Owner) Check() error {
	if err := CheckSource(o.Source); err != nil {
		return err
	}
	return CheckName(o.Name)
}

type nameError string

func (e nameError) Error() string   { return string(e) }
func (nameError) Is(err error) bool { return err == ErrBadName }

// CheckName is the one rule for user, client and service names, whatever
// their source (configuration, the store, a token claim, the CLI or the
// admin API): 1 to maxNameLen bytes of valid UTF-8 without control or
// format characters. Control characters would let a name carry a store
// separator or break logs; format characters (zero-width spaces,
// direction overrides) would let two names look alike.
func CheckName(name string) error { return checkText("names", name, maxNameLen) }

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
	case strings.ContainsFunc(s, isFormat):
		return nameError(what + " must not contain invisible formatting characters")
	}
	return nil
}

func isFormat(r rune) bool { return unicode.Is(unicode.Cf, r) }

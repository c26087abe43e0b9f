package keystore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits of every key, whatever the policy.
const (
	// DefaultTitle is the title of keys minted without one.
	DefaultTitle = "API Key"
	// maxTitleLen is the longest title, in characters.
	maxTitleLen = 256
	// maxScopes is the most scopes one key may carry.
	maxScopes = 32
	// maxScopeLen is the longest scope name, in bytes.
	maxScopeLen = 64
)

// Policy decides what keys may be: their titles, lifetimes and scopes, how
// many one owner may hold, and which password users exist and what each
// is entitled to. A Keyring applies it to every mint and rotation,
// whoever asks (the owner through the API, or an operator), so that the
// rules live in one place.
type Policy struct {
	// DefaultLifetime is the lifetime of keys minted without one; 0 means
	// they never expire (unless a cap applies).
	DefaultLifetime time.Duration
	// MaxLifetime caps every key's lifetime; 0 means no cap.
	MaxLifetime time.Duration
	// MaxKeysPerOwner is the most keys one owner may hold, counting keys
	// in a rotation's grace period; 0 means no limit. Operators are not
	// held to it.
	MaxKeysPerOwner int
	// Scopes is the vocabulary: the scope names any key may carry. Empty
	// means any valid scope name.
	Scopes []string
	// ConfigUsers are the password users declared in configuration, each
	// with the scopes it may give its keys and its plan. Password users
	// kept in the store carry their own.
	ConfigUsers map[string]UserRules
	// Plans are the limits and credits keys can be held to, by name.
	Plans map[string]*Plan
	// DefaultPlan applies to keys that neither have a plan of their own
	// nor belong to an owner with one; empty means no limits.
	DefaultPlan string
	// Sources are the token issuers' namespaces (as owner sources), with
	// what applies to their identities' keys. Keys of a source that is
	// not here (any more) are refused as orphaned.
	Sources map[string]SourceRules
	// AnySource, if set, applies to the namespaces "jwt" and "jwt:<iss>"
	// not in Sources: those of an issuer block without an issuer, which
	// takes tokens of any issuer and files each under its "iss".
	AnySource *SourceRules
	// Unknown says that the configuration is not at hand (a tool working
	// on a store file): owners cannot be checked, so no key is reported
	// orphaned, and no key can be minted or rotated.
	Unknown bool
}

// SourceRules are what the configuration says about the keys of one token
// issuer's identities.
type SourceRules struct {
	// MaxLifetime caps their lifetime, also for keys operators make for
	// them; 0 means no cap beyond the policy's.
	MaxLifetime time.Duration
	// Plan their keys follow unless a key has its own; empty means the
	// default plan.
	Plan string
}

// source returns the rules of a token namespace, and whether the
// configuration knows it.
func (p *Policy) source(src string) (SourceRules, bool) {
	if r, ok := p.Sources[src]; ok {
		return r, true
	}
	if p.AnySource != nil && isIssuerSource(src) {
		return *p.AnySource, true
	}
	return SourceRules{}, false
}

// Actor is who acts on keys through a Keyring: an owner signed in with a
// credential, or an operator acting for an owner.
type Actor struct {
	// Owner is who the keys belong to.
	Owner Owner
	// Operator actors (the admin API and the CLI) may act on any key and
	// give keys any scope of the vocabulary; the per-owner cap does not
	// hold them.
	Operator bool
	// FromToken says that the credential was a token, whose TokenScopes
	// (already narrowed to what its issuer may grant) bound the scopes
	// the actor may give keys.
	FromToken   bool
	TokenScopes []string
	// MaxLifetime caps the keys this actor mints or rotates, beyond the
	// policy's own cap, e.g. for identities from one token issuer; 0
	// means no further cap.
	MaxLifetime time.Duration
}

// KeyRequest is what a mint asks for.
type KeyRequest struct {
	// Title of the key; empty means DefaultTitle.
	Title string
	// Lifetime of the key; 0 means the policy's default.
	Lifetime time.Duration
	// Scopes the key should grant.
	Scopes []string
	// Plan, which only operators may set, gives the key a plan of its
	// own; empty means its owner's or the default plan.
	Plan string
}

// RequestError is a request that no policy could satisfy, such as a title
// that is too long.
type RequestError struct{ Msg string }

func (e *RequestError) Error() string { return e.Msg }

func badRequest(format string, args ...any) error {
	return &RequestError{Msg: fmt.Sprintf(format, args...)}
}

// ScopeError refuses a scope: outside the vocabulary, or beyond what the
// actor is entitled to give.
type ScopeError struct {
	Scope string
	// Unknown is true when the scope is outside the vocabulary, false
	// when the actor is not entitled to it.
	Unknown bool
	// Allowed lists the vocabulary, for Unknown errors.
	Allowed []string
}

func (e *ScopeError) Error() string {
	if e.Unknown {
		return fmt.Sprintf("%q is not an allowed scope (allowed: %s)", e.Scope, strings.Join(e.Allowed, ", "))
	}
	return fmt.Sprintf("you may not give keys the scope %q", e.Scope)
}

// Check validates the policy itself.
func (p *Policy) Check() error {
	if p.DefaultLifetime < 0 || p.MaxLifetime < 0 || p.MaxKeysPerOwner < 0 {
		return errors.New("key lifetimes and the key limit must not be negative")
	}
	for _, s := range p.Scopes {
		if err := CheckScope(s); err != nil {
			return err
		}
	}
	for name, plan := range p.Plans {
		if plan.Name != name {
			return fmt.Errorf("plan %q is filed as %q", plan.Name, name)
		}
		if err := plan.Check(); err != nil {
			return err
		}
	}
	if err := p.checkPlan(p.DefaultPlan); err != nil {
		return fmt.Errorf("default plan: %w", err)
	}
	for src, rules := range p.Sources {
		if err := CheckSource(src); err != nil {
			return err
		}
		if err := p.checkPlan(rules.Plan); err != nil {
			return fmt.Errorf("plan of %s: %w", src, err)
		}
	}
	if p.AnySource != nil {
		if err := p.checkPlan(p.AnySource.Plan); err != nil {
			return fmt.Errorf("plan of an issuer without issuer: %w", err)
		}
	}
	for name, rules := range p.ConfigUsers {
		if err := CheckName(name); err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
		if err := p.checkVocabulary(rules.Scopes); err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
		if err := p.checkPlan(rules.Plan); err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
	}
	return nil
}

// CheckScope accepts RFC 6749 scope tokens of reasonable length.
func CheckScope(s string) error {
	if s == "" || len(s) > maxScopeLen {
		return badRequest("scope names must be 1 to %d characters", maxScopeLen)
	}
	for _, c := range []byte(s) {
		if c <= 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			return badRequest("scope %q may contain only printable ASCII without spaces, quotes or backslashes", s)
		}
	}
	return nil
}

// checkVocabulary validates scope names and that they are in the
// vocabulary.
func (p *Policy) checkVocabulary(scopes []string) error {
	for _, s := range scopes {
		if err := CheckScope(s); err != nil {
			return err
		}
		if len(p.Scopes) > 0 && !slices.Contains(p.Scopes, s) {
			return &ScopeError{Scope: s, Unknown: true, Allowed: p.Scopes}
		}
	}
	return nil
}

// checkTitle validates a key title.
func checkTitle(t string) error {
	if !utf8.ValidString(t) {
		return badRequest("titles must be valid UTF-8")
	}
	if utf8.RuneCountInString(t) > maxTitleLen {
		return badRequest("titles must be at most %d characters", maxTitleLen)
	}
	if strings.ContainsFunc(t, unicode.IsControl) {
		return badRequest("titles must not contain control characters")
	}
	return nil
}

// lifetimeCap is the longest lifetime the actor's keys may have; 0 means
// no cap.
func (p *Policy) lifetimeCap(a Actor) time.Duration {
	switch {
	case p.MaxLifetime == 0:
		return a.MaxLifetime
	case a.MaxLifetime == 0:
		return p.MaxLifetime
	}
	return min(p.MaxLifetime, a.MaxLifetime)
}

// minted is what the policy decided for a new key.
type minted struct {
	title   string
	expires time.Time
	scopes  []string
}

// newKey decides a new key for req, given the scopes the actor is
// entitled to (ignored for operators).
func (p *Policy) newKey(now time.Time, a Actor, grants []string, req KeyRequest) (minted, error) {
	title := req.Title
	if title == "" {
		title = DefaultTitle
	}
	if err := checkTitle(title); err != nil {
		return minted{}, err
	}
	if req.Lifetime < 0 {
		return minted{}, badRequest("the lifetime must be a positive number of seconds")
	}
	limit := p.lifetimeCap(a)
	lifetime := req.Lifetime
	switch {
	case lifetime > 0 && limit > 0 && lifetime > limit:
		return minted{}, badRequest("keys may live at most %d seconds", int64(limit/time.Second))
	case lifetime == 0:
		lifetime = p.DefaultLifetime
		if limit > 0 && (lifetime == 0 || lifetime > limit) {
			lifetime = limit
		}
	}
	scopes, err := p.scopes(a, grants, req.Scopes)
	if err != nil {
		return minted{}, err
	}
	m := minted{title: title, scopes: scopes}
	if lifetime > 0 {
		m.expires = now.Add(lifetime)
	}
	return m, nil
}

// successor decides the key that replaces old in a rotation: the same
// title and scopes, under today's policy, so that a rotation cannot keep
// what the policy no longer allows.
func (p *Policy) successor(now time.Time, a Actor, grants []string, old Key) (minted, error) {
	scopes, err := p.scopes(a, grants, old.Scopes)
	if err != nil {
		return minted{}, err
	}
	expires := old.Expires
	if limit := p.lifetimeCap(a); limit > 0 {
		if latest := now.Add(limit); expires.IsZero() || expires.After(latest) {
			expires = latest
		}
	}
	return minted{title: old.Title, expires: expires, scopes: scopes}, nil
}

// scopes validates requested scopes and drops repeats: each must be in
// the vocabulary and, unless the actor is an operator, among its grants.
func (p *Policy) scopes(a Actor, grants, want []string) ([]string, error) {
	if len(want) == 0 {
		return nil, nil
	}
	if len(want) > maxScopes {
		return nil, badRequest("a key may have at most %d scopes", maxScopes)
	}
	if err := p.checkVocabulary(want); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(want))
	for _, s := range want {
		if !a.Operator && !slices.Contains(grants, s) {
			return nil, &ScopeError{Scope: s}
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

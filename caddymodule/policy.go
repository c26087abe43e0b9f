package caddymodule

import (
	"fmt"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"

	"encoding/json"
	"errors"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// keyPolicy translates the app's configuration into the key policy: what
// keys may be, which password users the configuration declares, and which
// token issuers' identities exist. The running app and the offline CLI
// build it the same way.
func (a *App) keyPolicy(repl *caddy.Replacer) (keystore.Policy, error) {
	p, _, err := a.policyAndHashes(repl)
	return p, err
}

// policyAndHashes is keyPolicy, and the configured users' password
// hashes (name -> hash), from one reading of the users: their names and
// hashes with placeholders expanded once, checked once.
func (a *App) policyAndHashes(repl *caddy.Replacer) (keystore.Policy, map[string]string, error) {
	p := keystore.Policy{
		DefaultLifetime: time.Duration(a.DefaultKeyLifetime),
		MaxLifetime:     time.Duration(a.MaxKeyLifetime),
		MaxKeysPerOwner: a.MaxKeysPerUser,
		Scopes:          a.AllowedScopes,
		ConfigUsers:     make(map[string]keystore.UserRules, len(a.Users)),
		Sources:         make(map[string]keystore.SourceRules),
	}
	hashes := make(map[string]string, len(a.Users))
	for i, u := range a.Users {
		name := repl.ReplaceKnown(u.Username, "")
		if err := keystore.CheckName(name); err != nil {
			return p, nil, fmt.Errorf("user %d (%q): %w", i, name, err)
		}
		if _, dup := p.ConfigUsers[name]; dup {
			return p, nil, fmt.Errorf("user %q is declared twice", name)
		}
		hash, err := identity.NormalizeHash(repl.ReplaceKnown(u.Password, ""))
		if err != nil {
			return p, nil, fmt.Errorf("user %q: %w", name, err)
		}
		p.ConfigUsers[name] = keystore.UserRules{Scopes: u.Scopes, Plan: u.Plan}
		hashes[name] = hash
	}
	p, err := a.policyRest(repl, p)
	return p, hashes, err
}

// policyRest adds to p what the configuration says beyond its users.
func (a *App) policyRest(repl *caddy.Replacer, p keystore.Policy) (keystore.Policy, error) {
	var err error
	if p.Plans, err = a.plans(); err != nil {
		return p, err
	}
	p.DefaultPlan = a.DefaultPlan
	for i, jc := range a.JWT {
		for _, sc := range jc.AllowedScopes {
			if len(a.AllowedScopes) > 0 && !slices.Contains(a.AllowedScopes, sc) {
				return p, fmt.Errorf("jwt %d: allowed_scopes: %q is not in the apikeys allowed_scopes", i, sc)
			}
		}
		ns, rules := jc.source(repl)
		switch {
		case ns == keystore.SourcePassword:
			continue
		case ns == "":
			p.AnySource = &rules
			continue
		}
		if prev, dup := p.Sources[ns]; dup && prev != rules {
			return p, fmt.Errorf("jwt %d: the blocks of namespace %q must agree on max_key_lifetime and plan", i, ns)
		}
		p.Sources[ns] = rules
	}
	for i, raw := range a.IdentitiesRaw {
		ns, err := identityNamespace(raw)
		if err != nil {
			return p, fmt.Errorf("identity source %d: %w", i, err)
		}
		if ns != keystore.SourcePassword {
			p.Sources[ns] = keystore.SourceRules{MaxLifetime: DefaultJWTKeyLifetime}
		}
	}
	if err := p.Check(); err != nil {
		return p, fmt.Errorf("key policy: %w", err)
	}
	return p, nil
}

// source is the namespace of the block's identities ("" for the issuers
// of a block without issuer, which each get their own) and the rules of
// their keys.
func (c *JWTConfig) source(repl *caddy.Replacer) (string, keystore.SourceRules) {
	rules := keystore.SourceRules{MaxLifetime: DefaultJWTKeyLifetime, Plan: c.Plan}
	if c.MaxKeyLifetime != nil {
		rules.MaxLifetime = time.Duration(*c.MaxKeyLifetime)
	}
	if c.Namespace != "" {
		return c.Namespace, rules
	}
	if iss := repl.ReplaceKnown(c.Issuer, ""); iss != "" {
		return keystore.IssuerSource(iss), rules
	}
	return "", rules
}

// identityNamespace reads the "namespace" every identity source module
// declares: the owner source of the identities it proves, which the key
// policy must know (also offline, without loading the module). Their keys
// expire within DefaultJWTKeyLifetime: the gateway cannot see an identity
// the source stops vouching for.
func identityNamespace(raw json.RawMessage) (string, error) {
	var m struct {
		Namespace string `json:"namespace"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", err
	}
	switch err := keystore.CheckSource(m.Namespace); {
	case m.Namespace == "":
		return "", errors.New(`it declares no "namespace": the owner source of its identities`)
	case err != nil:
		return "", fmt.Errorf("namespace: %w", err)
	case m.Namespace == keystore.SourceService:
		return "", errors.New(`namespace "service" is for owners that operators make`)
	}
	return m.Namespace, nil
}

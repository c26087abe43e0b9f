package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("apikeys", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("apikeys_api", parseAPIHandler)
	httpcaddyfile.RegisterHandlerDirective("apikey_auth", parseAPIKeyAuth)
	httpcaddyfile.RegisterHandlerDirective("apikeys_leaks", parseLeakHandler)
	httpcaddyfile.RegisterHandlerDirective("apikeys_verify", parseVerifyHandler)
	// The endpoints come first so that a broad apikey_auth cannot lock
	// out the minting of keys; the key check sits with the other auth.
	httpcaddyfile.RegisterDirectiveOrder("apikeys_api", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterDirectiveOrder("apikeys_leaks", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterDirectiveOrder("apikeys_verify", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterDirectiveOrder("apikey_auth", httpcaddyfile.After, "basic_auth")
}

// parseGlobalOption sets up the apikeys app. Syntax:
//
//	apikeys {
//	    key_prefix               <prefix>
//	    store                    <backend> { … }
//	    identity                 <source> { … }   (a module of apikeys.identities)
//	    user                     <username> <password_hash> [{
//	        scopes <scope...>
//	        plan   <name>
//	    }]
//	    jwt {
//	        secret           <secret>
//	        public_key       <pem>
//	        public_key_file  <path>
//	        algorithms       <alg...>
//	        issuer           <iss>
//	        audience         <aud...>
//	        accept_any_audience
//	        token_type       <typ>
//	        identity_claim   <claim>
//	        namespace        <name>
//	        allowed_scopes   <scope...>
//	        max_key_lifetime <duration> | off
//	        plan             <name>
//	        leeway           <duration>
//	        jwks_url         <url>
//	        discover
//	        jwks_refresh     <duration>
//	        required_scopes  <scope...>
//	        required_claim   <name> <value>
//	    }            (repeat jwt { … } for more issuers)
//	    default_key_lifetime     <duration>
//	    max_key_lifetime         <duration>
//	    max_keys_per_user        <n>
//	    allowed_scopes           <scope...>
//	    plan <name> {            (repeat for more plans)
//	        rate       <limit>/<window> [<name>]
//	        owner_rate <limit>/<window> [<name>]
//	        credits    <amount> [refill <duration>] [per_owner]
//	    }
//	    default_plan             <name>
//	    lockout off | {
//	        account_threshold <n>
//	        address_threshold <n>
//	        window            <duration>
//	        duration          <duration>
//	        max_duration      <duration>
//	    }
//	    max_concurrent_password_checks <n>
//	    max_queued_password_checks     <n>
//	    unknown_key_budget off | {
//	        rate  <per_second>
//	        burst <n>
//	    }
//	    cache_size               <n>
//	    last_used_flush_interval <duration>
//	    notify [<url>] {         (repeat for more endpoints)
//	        url             <url>
//	        secret          <whsec_…>
//	        events          <type...>
//	        expiring_within <duration>
//	        credits_below   <n>
//	    }
//	}
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	var app App
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "apikeys", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens; see
// parseGlobalOption for the syntax.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "key_prefix":
			if !d.AllArgs(&a.KeyPrefix) {
				return d.ArgErr()
			}
		case "store":
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			mod, err := caddyfile.UnmarshalModule(d, "apikeys.stores."+name)
			if err != nil {
				return err
			}
			a.StoreRaw = caddyconfig.JSONModuleObject(mod, "backend", name, nil)
		case "identity":
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			mod, err := caddyfile.UnmarshalModule(d, "apikeys.identities."+name)
			if err != nil {
				return err
			}
			a.IdentitiesRaw = append(a.IdentitiesRaw, caddyconfig.JSONModuleObject(mod, "source", name, nil))
		case "user":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Err("user needs a username and a password hash (from 'caddy hash-password')")
			}
			u := User{Username: args[0], Password: args[1]}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "scopes":
					scopes := d.RemainingArgs()
					if len(scopes) == 0 {
						return d.ArgErr()
					}
					u.Scopes = append(u.Scopes, scopes...)
				case "plan":
					if !d.AllArgs(&u.Plan) {
						return d.ArgErr()
					}
				default:
					return d.Errf("unrecognized user option '%s'", d.Val())
				}
			}
			a.Users = append(a.Users, u)
		case "jwt":
			jc := new(JWTConfig)
			if err := jc.unmarshalCaddyfile(d); err != nil {
				return err
			}
			a.JWT = append(a.JWT, jc)
		case "default_key_lifetime":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.DefaultKeyLifetime = dur
		case "max_key_lifetime":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.MaxKeyLifetime = dur
		case "max_keys_per_user":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			a.MaxKeysPerUser = n
		case "allowed_scopes":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			a.AllowedScopes = append(a.AllowedScopes, args...)
		case "lockout":
			if a.Lockout == nil {
				a.Lockout = new(LockoutConfig)
			}
			if err := a.Lockout.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "max_concurrent_password_checks":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			a.MaxConcurrentPasswordChecks = n
		case "max_queued_password_checks":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			a.MaxQueuedPasswordChecks = n
		case "unknown_key_budget":
			if a.UnknownKeyBudget == nil {
				a.UnknownKeyBudget = new(UnknownKeyBudget)
			}
			if err := a.UnknownKeyBudget.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "cache_size":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			a.CacheSize = n
		case "last_used_flush_interval":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.LastUsedFlushInterval = dur
		case "plan":
			var name string
			if !d.NextArg() {
				return d.ArgErr()
			}
			name = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			if _, dup := a.Plans[name]; dup {
				return d.Errf("plan %q is declared twice", name)
			}
			pc := new(PlanConfig)
			if err := pc.unmarshalCaddyfile(d); err != nil {
				return err
			}
			if a.Plans == nil {
				a.Plans = make(map[string]*PlanConfig)
			}
			a.Plans[name] = pc
		case "default_plan":
			if !d.AllArgs(&a.DefaultPlan) {
				return d.ArgErr()
			}
		case "notify":
			nc := new(NotifyConfig)
			if err := nc.unmarshalCaddyfile(d); err != nil {
				return err
			}
			a.Notify = append(a.Notify, nc)
		default:
			return d.Errf("unrecognized apikeys option '%s'", d.Val())
		}
	}
	return nil
}

func (c *JWTConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		switch opt {
		case "discover", "accept_any_audience":
			if len(args) != 0 {
				return d.ArgErr()
			}
			if opt == "discover" {
				c.Discover = true
			} else {
				c.AcceptAnyAudience = true
			}
			continue
		}
		if len(args) == 0 {
			return d.ArgErr()
		}
		one := func(dst *string) error {
			if len(args) != 1 {
				return d.ArgErr()
			}
			*dst = args[0]
			return nil
		}
		var err error
		switch opt {
		case "secret":
			c.Secrets = append(c.Secrets, args...)
		case "public_key":
			c.PublicKeys = append(c.PublicKeys, args...)
		case "public_key_file":
			c.PublicKeyFiles = append(c.PublicKeyFiles, args...)
		case "algorithms":
			c.Algorithms = append(c.Algorithms, args...)
		case "issuer":
			err = one(&c.Issuer)
		case "audience":
			c.Audiences = append(c.Audiences, args...)
		case "identity_claim":
			err = one(&c.IdentityClaim)
		case "token_type":
			err = one(&c.TokenType)
		case "plan":
			err = one(&c.Plan)
		case "namespace":
			err = one(&c.Namespace)
		case "allowed_scopes":
			c.AllowedScopes = append(c.AllowedScopes, args...)
		case "max_key_lifetime":
			var v string
			if err = one(&v); err == nil {
				var dur caddy.Duration
				if v != "off" {
					dur, err = parseDuration(d, v)
				}
				c.MaxKeyLifetime = &dur
			}
		case "jwks_url":
			err = one(&c.JWKSURL)
		case "jwks_refresh":
			var v string
			if err = one(&v); err == nil {
				c.JWKSRefresh, err = parseDuration(d, v)
			}
		case "required_scopes":
			c.RequiredScopes = append(c.RequiredScopes, args...)
		case "required_claim":
			if len(args) != 2 {
				return d.Err("required_claim takes a claim name and a value")
			}
			if c.RequiredClaims == nil {
				c.RequiredClaims = make(map[string]string)
			}
			c.RequiredClaims[args[0]] = args[1]
		case "leeway":
			var v string
			if err = one(&v); err == nil {
				var dur caddy.Duration
				if dur, err = parseDuration(d, v); err == nil {
					c.Leeway = dur
				}
			}
		default:
			return d.Errf("unrecognized jwt option '%s'", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (c *LockoutConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		if d.Val() != "off" || d.NextArg() {
			return d.Err("lockout takes 'off' or a block")
		}
		c.Disabled = true
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var err error
		switch opt {
		case "account_threshold":
			c.AccountThreshold, err = intArg(d)
		case "address_threshold":
			c.AddressThreshold, err = intArg(d)
		case "window":
			c.Window, err = durationArg(d)
		case "duration":
			c.Duration, err = durationArg(d)
		case "max_duration":
			c.MaxDuration, err = durationArg(d)
		default:
			return d.Errf("unrecognized lockout option '%s'", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *UnknownKeyBudget) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		if d.Val() != "off" || d.NextArg() {
			return d.Err("unknown_key_budget takes 'off' or a block")
		}
		b.Disabled = true
		return nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "rate":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			r, err := strconv.ParseFloat(v, 64)
			if err != nil || r <= 0 {
				return d.Errf("rate: want a positive number of reads per second, got %q", v)
			}
			b.Rate = r
		case "burst":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			b.Burst = n
		default:
			return d.Errf("unrecognized unknown_key_budget option '%s'", opt)
		}
	}
	return nil
}

// parseAPIHandler sets up the key-management endpoints. Syntax:
//
//	apikeys_api [<matcher>] {
//	    path_prefix    <path>
//	    max_body_bytes <n>
//	    cors_origins   <origin...>
//	}
func parseAPIHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	var handler APIHandler
	for h.NextBlock(0) {
		switch h.Val() {
		case "path_prefix":
			if !h.AllArgs(&handler.PathPrefix) {
				return nil, h.ArgErr()
			}
		case "max_body_bytes":
			n, err := intArg(h.Dispenser)
			if err != nil {
				return nil, err
			}
			handler.MaxBodyBytes = int64(n)
		case "cors_origins":
			args := h.RemainingArgs()
			if len(args) == 0 {
				return nil, h.ArgErr()
			}
			handler.CORSOrigins = append(handler.CORSOrigins, args...)
		default:
			return nil, h.Errf("unrecognized apikeys_api option '%s'", h.Val())
		}
	}
	return &handler, nil
}

// parseAPIKeyAuth sets up key checking with the apikey_auth handler.
// Syntax:
//
//	apikey_auth [<matcher>] {
//	    header           <field...>
//	    query            <param>
//	    body             [<max_bytes>]
//	    keep_credentials
//	    realm            <realm>
//	    require_scopes   <scope...>
//	    cost             <credits>
//	}
//
// With require_scopes, keys lacking any of the scopes get 403; cost is
// what a request spends of a key's credits (default 1, 0 for free); with
// body, bodies that cannot be read in full as JSON are refused.
func parseAPIKeyAuth(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	var g APIKeyGate
	for h.NextBlock(0) {
		switch h.Val() {
		case "header":
			args := h.RemainingArgs()
			if len(args) == 0 {
				return nil, h.ArgErr()
			}
			g.Headers = append(g.Headers, args...)
		case "query":
			if !h.AllArgs(&g.QueryParam) {
				return nil, h.ArgErr()
			}
		case "body":
			g.Body = true
			if h.NextArg() {
				n, err := strconv.ParseInt(h.Val(), 10, 64)
				if err != nil || n <= 0 || h.NextArg() {
					return nil, h.Errf("body takes an optional positive size in bytes")
				}
				g.MaxBodyBytes = n
			}
		case "keep_credentials":
			if h.NextArg() {
				return nil, h.ArgErr()
			}
			g.KeepCredentials = true
		case "realm":
			if !h.AllArgs(&g.Realm) {
				return nil, h.ArgErr()
			}
		case "require_scopes":
			args := h.RemainingArgs()
			if len(args) == 0 {
				return nil, h.ArgErr()
			}
			g.RequireScopes = append(g.RequireScopes, args...)
		case "cost":
			n, err := costArg(h.Dispenser)
			if err != nil {
				return nil, err
			}
			g.Cost = &n
		default:
			return nil, h.Errf("unrecognized apikey_auth option '%s'", h.Val())
		}
	}
	return &g, nil
}

// costArg reads a cost in credits: a whole number, 0 or more.
func costArg(d *caddyfile.Dispenser) (int64, error) {
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, d.Errf("cost: want a number of credits, 0 or more, got %q", v)
	}
	return n, nil
}

func intArg(d *caddyfile.Dispenser) (int, error) {
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, d.Errf("%s: want a positive integer, got %q", d.Val(), v)
	}
	return n, nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	return parseDuration(d, v)
}

func parseDuration(d *caddyfile.Dispenser, v string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, d.Errf("invalid duration %q: %v", v, err)
	}
	return caddy.Duration(dur), nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*App)(nil)

// unmarshalCaddyfile reads a plan block:
//
//	plan <name> {
//	    rate       <limit>/<window> [<name>]
//	    owner_rate <limit>/<window> [<name>]
//	    credits    <amount> [refill <duration>] [per_owner]
//	}
func (pc *PlanConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		switch opt {
		case "rate", "owner_rate":
			if len(args) < 1 || len(args) > 2 {
				return d.Errf("%s takes <limit>/<window> and an optional name", opt)
			}
			limit, window, ok := strings.Cut(args[0], "/")
			n, err := strconv.ParseInt(limit, 10, 64)
			if !ok || err != nil || n <= 0 {
				return d.Errf("%s %q: want <limit>/<window>, e.g. 100/1m", opt, args[0])
			}
			dur, err := parseDuration(d, window)
			if err != nil {
				return err
			}
			rc := RateConfig{Limit: n, Window: dur}
			if len(args) == 2 {
				rc.Name = args[1]
			}
			if opt == "rate" {
				pc.Rates = append(pc.Rates, rc)
			} else {
				pc.OwnerRates = append(pc.OwnerRates, rc)
			}
		case "credits":
			if len(args) == 0 {
				return d.ArgErr()
			}
			n, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || n <= 0 {
				return d.Errf("credits: want a positive amount, got %q", args[0])
			}
			c := &CreditsConfig{Amount: n}
			for i := 1; i < len(args); i++ {
				switch args[i] {
				case "refill":
					if i+1 >= len(args) {
						return d.Err("refill needs a duration")
					}
					i++
					if c.Refill, err = parseDuration(d, args[i]); err != nil {
						return err
					}
				case "per_owner":
					c.PerOwner = true
				default:
					return d.Errf("credits: unrecognized %q (want refill <duration> or per_owner)", args[i])
				}
			}
			pc.Credits = c
		default:
			return d.Errf("unrecognized plan option '%s'", opt)
		}
	}
	return nil
}

// unmarshalCaddyfile reads `notify [<url>] { … }`.
func (nc *NotifyConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		nc.URL = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "url":
			if !d.AllArgs(&nc.URL) {
				return d.ArgErr()
			}
		case "secret":
			if !d.AllArgs(&nc.Secret) {
				return d.ArgErr()
			}
		case "events":
			nc.Events = d.RemainingArgs()
			if len(nc.Events) == 0 {
				return d.ArgErr()
			}
		case "expiring_within":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			nc.ExpiringWithin = dur
		case "credits_below":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			nc.CreditsBelow = int64(n)
		default:
			return d.Errf("unrecognized notify option '%s'", d.Val())
		}
	}
	if nc.URL == "" {
		return d.Err("notify needs a url")
	}
	if nc.Secret == "" {
		return d.Err("notify needs a secret (whsec_ and base64: echo whsec_$(openssl rand -base64 32))")
	}
	return nil
}

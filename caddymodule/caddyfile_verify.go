package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// parseVerifyHandler sets up the apikeys_verify handler.
// Syntax:
//
//	apikeys_verify [<matcher>] {
//	    header         <field...>
//	    query          <param>
//	    realm          <realm>
//	    require_scopes <scope...>
//	    cost           <credits>
//	    cost_header    <field>
//	    route <path...> {
//	        method         <method...>
//	        require_scopes <scope...>
//	        cost           <credits>
//	    }
//	}
//
// Each route names path patterns of the forwarded request (none: any
// path); the first route that matches decides the cost and adds its
// scopes.
func parseVerifyHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	var v VerifyHandler
	if err := parseVerifyRules(h.Dispenser, &v.VerifyRules, "apikeys_verify"); err != nil {
		return nil, err
	}
	return &v, nil
}

// parseVerifyRules reads the options of a verifier's block into rules;
// directive names it in errors.
func parseVerifyRules(d *caddyfile.Dispenser, rules *VerifyRules, directive string) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := parseVerifyRule(d, rules, directive); err != nil {
			return err
		}
	}
	return nil
}

// parseVerifyRule reads the option d is on into rules.
func parseVerifyRule(d *caddyfile.Dispenser, rules *VerifyRules, directive string) error {
	switch d.Val() {
	case "header":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		rules.Headers = append(rules.Headers, args...)
	case "query":
		if !d.AllArgs(&rules.QueryParam) {
			return d.ArgErr()
		}
	case "realm":
		if !d.AllArgs(&rules.Realm) {
			return d.ArgErr()
		}
	case "require_scopes":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.ArgErr()
		}
		rules.RequireScopes = append(rules.RequireScopes, args...)
	case "cost":
		n, err := costArg(d)
		if err != nil {
			return err
		}
		rules.Cost = &n
	case "cost_header":
		if !d.AllArgs(&rules.CostHeader) {
			return d.ArgErr()
		}
	case "route":
		route := VerifyRoute{Paths: d.RemainingArgs()}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			switch d.Val() {
			case "method":
				args := d.RemainingArgs()
				if len(args) == 0 {
					return d.ArgErr()
				}
				route.Methods = append(route.Methods, args...)
			case "require_scopes":
				args := d.RemainingArgs()
				if len(args) == 0 {
					return d.ArgErr()
				}
				route.RequireScopes = append(route.RequireScopes, args...)
			case "cost":
				n, err := costArg(d)
				if err != nil {
					return err
				}
				route.Cost = &n
			default:
				return d.Errf("unrecognized %s route option '%s'", directive, d.Val())
			}
		}
		rules.Routes = append(rules.Routes, route)
	default:
		return d.Errf("unrecognized %s option '%s'", directive, d.Val())
	}
	return nil
}

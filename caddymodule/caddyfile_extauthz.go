package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("apikeys_ext_authz", parseExtAuthzOption)
}

// parseExtAuthzOption sets up the apikeys_ext_authz app. Syntax:
//
//	apikeys_ext_authz {
//	    listen            <address>
//	    tls <certificate_file> <key_file> [{
//	        client_ca <ca_file>
//	    }]
//	    max_request_bytes <n>
//	    header            <field...>
//	    query             <param>
//	    realm             <realm>
//	    require_scopes    <scope...>
//	    cost              <credits>
//	    route <path...> {
//	        method         <method...>
//	        require_scopes <scope...>
//	        cost           <credits>
//	    }
//	}
//
// The options from header on are apikeys_verify's; cost_header is
// refused, since Envoy sends the client's own header fields.
func parseExtAuthzOption(d *caddyfile.Dispenser, _ any) (any, error) {
	var e ExtAuthz
	if err := e.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "apikeys_ext_authz", Value: caddyconfig.JSON(e, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens; see
// parseExtAuthzOption for the syntax.
func (e *ExtAuthz) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "listen":
			if !d.AllArgs(&e.Listen) {
				return d.ArgErr()
			}
		case "tls":
			t := &ExtAuthzTLS{}
			if !d.AllArgs(&t.CertificateFile, &t.KeyFile) {
				return d.Err("tls needs a certificate file and a key file")
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "client_ca":
					if !d.AllArgs(&t.ClientCAFile) {
						return d.ArgErr()
					}
				default:
					return d.Errf("unrecognized apikeys_ext_authz tls option '%s'", d.Val())
				}
			}
			e.TLS = t
		case "max_request_bytes":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return d.Errf("max_request_bytes: %q is not a positive number of bytes", s)
			}
			e.MaxRequestBytes = n
		default:
			if err := parseVerifyRule(d, &e.VerifyRules, "apikeys_ext_authz"); err != nil {
				return err
			}
		}
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*ExtAuthz)(nil)

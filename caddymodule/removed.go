package caddymodule

import (
	"errors"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(removedProvider{})
	caddy.RegisterModule(removedRequireScopes{})
}

// errProviderRemoved says what to write instead of the apikey provider.
var errProviderRemoved = errors.New("the apikey authentication provider (http.authentication.providers.apikey) was removed: " +
	"Caddy's authentication handler answers every refusal with 401 and never shows a provider the response, " +
	"so it could neither answer 403 and 429 nor charge credits by the upstream's answer. " +
	`Use the apikey_auth handler, which takes the same fields: in JSON, {"handler": "apikey_auth", "headers": […], …} ` +
	`in place of {"handler": "authentication", "providers": {"apikey": {"headers": […], …}}}; ` +
	"in a Caddyfile, the apikey_auth directive")

// errRequireScopesRemoved says what to write instead of
// apikey_require_scopes.
var errRequireScopesRemoved = errors.New("the apikey_require_scopes handler was removed with the apikey authentication provider it followed: " +
	`give the scopes to the apikey_auth handler, {"handler": "apikey_auth", "require_scopes": […]} in JSON, ` +
	"require_scopes <scope...> in the apikey_auth directive")

// removedProvider keeps the module ID of the apikey authentication
// provider, which was removed, so that a config using it fails to load
// saying what to write instead rather than that the module is unknown.
type removedProvider struct{}

// CaddyModule returns the Caddy module information.
func (removedProvider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.authentication.providers.apikey",
		New: func() caddy.Module { return new(removedProvider) },
	}
}

// UnmarshalJSON accepts the removed module's fields, so that the config
// gets to Provision and its message.
func (*removedProvider) UnmarshalJSON([]byte) error { return nil }

// Provision fails, saying what to use instead.
func (*removedProvider) Provision(caddy.Context) error { return errProviderRemoved }

// removedRequireScopes keeps the module ID of the apikey_require_scopes
// handler, removed with the provider, as removedProvider does.
type removedRequireScopes struct{}

// CaddyModule returns the Caddy module information.
func (removedRequireScopes) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikey_require_scopes",
		New: func() caddy.Module { return new(removedRequireScopes) },
	}
}

// UnmarshalJSON accepts the removed module's fields.
func (*removedRequireScopes) UnmarshalJSON([]byte) error { return nil }

// Provision fails, saying what to use instead.
func (*removedRequireScopes) Provision(caddy.Context) error { return errRequireScopesRemoved }

// Interface guards
var (
	_ caddy.Provisioner = (*removedProvider)(nil)
	_ caddy.Provisioner = (*removedRequireScopes)(nil)
)

package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// ConfiguredApp reads the apikeys app of a config file, without running
// or provisioning it, for tools that work beside a gateway (the CLI).
func ConfiguredApp(file, adapter string) (*App, error) {
	cfgJSON, _, _, err := caddycmd.LoadConfig(file, adapter)
	if err != nil {
		return nil, err
	}
	var cfg struct {
		Apps struct {
			APIKeys *App `json:"apikeys"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, err
	}
	if cfg.Apps.APIKeys == nil {
		return nil, errors.New("the config has no apikeys app")
	}
	return cfg.Apps.APIKeys, nil
}

// KeyPolicy is the key policy a's configuration gives, as the running app
// builds it.
func (a *App) KeyPolicy() (keystore.Policy, error) { return a.keyPolicy(caddy.NewReplacer()) }

// UserNames are the password users a's configuration declares.
func (a *App) UserNames() []string {
	repl := caddy.NewReplacer()
	names := make([]string, 0, len(a.Users))
	for _, u := range a.Users {
		names = append(names, repl.ReplaceKnown(u.Username, ""))
	}
	return names
}

// OpenStore opens the store a's configuration names (bbolt in Caddy's
// data directory if none), without running the config, and returns it
// with its release.
func (a *App) OpenStore() (keystore.Store, func() error, error) {
	var raw map[string]json.RawMessage
	if len(a.StoreRaw) > 0 {
		if err := json.Unmarshal(a.StoreRaw, &raw); err != nil {
			return nil, nil, fmt.Errorf("store: %w", err)
		}
	}
	backend := "bolt"
	if b, ok := raw["backend"]; ok {
		if err := json.Unmarshal(b, &backend); err != nil {
			return nil, nil, fmt.Errorf("store backend: %w", err)
		}
		delete(raw, "backend") // the inline key is not a field of the module
	}
	modJSON, err := json.Marshal(raw)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	mod, err := ctx.LoadModuleByID("apikeys.stores."+backend, modJSON)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	opener, ok := mod.(StoreOpener)
	if !ok {
		cancel()
		return nil, nil, fmt.Errorf("apikeys.stores.%s is not a key store", backend)
	}
	store, release, err := opener.Open()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return store, func() error { defer cancel(); return release() }, nil
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/caddymodule"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/ops"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// action is what a command does, with the runner its operations go
// through.
type action func(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error

// withRunner makes an action a command's RunE: it opens the runner the
// flags name and closes it after.
func withRunner(f action) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cmd.SilenceUsage = true
		asJSON, _ := cmd.Flags().GetBool("json")
		r, err := openRunner(cmd)
		if err != nil {
			return err
		}
		defer r.Close()
		return explain(f(cmd, args, r, asJSON), r)
	}
}

// run runs op on r for a command.
func run[In, Out any](cmd *cobra.Command, r ops.Runner, op *ops.Op[In, Out], in In) (Out, error) {
	return ops.Do(cmd.Context(), r, op, in)
}

// openRunner is the store file of --db, or else the admin API.
func openRunner(cmd *cobra.Command) (ops.Runner, error) {
	flags := cmd.Flags()
	config, _ := flags.GetString("config")
	adapter, _ := flags.GetString("adapter")
	if db, _ := flags.GetString("db"); db != "" {
		return openLocal(db, config, adapter)
	}
	address, _ := flags.GetString("address")
	return dialAdmin(address, config, adapter)
}

// openLocal opens the store file path directly, with the key policy of
// the config file (when given; otherwise nothing that needs it can be
// done).
func openLocal(path, config, adapter string) (*ops.Local, error) {
	policy := keystore.Policy{Unknown: true}
	if config != "" {
		app, err := caddymodule.ConfiguredApp(config, adapter)
		if err != nil {
			return nil, err
		}
		if policy, err = app.KeyPolicy(); err != nil {
			return nil, fmt.Errorf("%s: %w", config, err)
		}
	}
	s, err := boltstore.Open(path, time.Second)
	if errors.Is(err, boltstore.ErrLocked) {
		return nil, fmt.Errorf("%s is in use, probably by a running Caddy: omit --db to go through its admin API", path)
	}
	if err != nil {
		return nil, err
	}
	kr := keystore.NewKeyring(s, keystore.Options{Policy: policy})
	env := &ops.Env{Keyring: kr, Audit: caddy.Log().Named("apikeys.audit"), Via: "cli", Offline: true}
	return &ops.Local{Env: env, Release: func() error { return errors.Join(kr.Close(), s.Close()) }}, nil
}

// dialAdmin reaches the running Caddy's admin API, at the address given,
// or in the config, or the default.
func dialAdmin(address, config, adapter string) (*adminAPI, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, config, adapter)
	if err != nil {
		return nil, fmt.Errorf("finding the admin API address: %w", err)
	}
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil || na.PortRangeSize() > 1 {
		return nil, fmt.Errorf("invalid admin address %s: %v", addr, err)
	}
	r := &adminAPI{Remote: ops.Remote{Base: "http://127.0.0.1", Client: &http.Client{Timeout: time.Minute}}, address: addr}
	dial := na.JoinHostPort(0)
	switch {
	case na.IsUnixNetwork():
		dial, _, _ = strings.Cut(na.Host, "|") // without the socket's permission bits
	case na.IsFdNetwork():
	default:
		r.Base = "http://" + dial
		r.Origin = r.Base // Caddy checks the Origin of admin requests on TCP
	}
	r.Client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, na.Network, dial)
	}}
	return r, nil
}

// adminAPI is the admin API of a running gateway, at address.
type adminAPI struct {
	ops.Remote
	address string
}

// explain adds to a refusal or a fault what the operator can do about
// it: where the admin API was not found, or the status it answered.
func explain(err error, r ops.Runner) error {
	admin, remote := r.(*adminAPI)
	var unreachable *ops.ErrUnreachable
	var refused *wire.Error
	switch {
	case !remote:
		return err
	case errors.As(err, &unreachable):
		return fmt.Errorf("cannot reach Caddy's admin API at %s (is Caddy running? use --address if its admin endpoint is elsewhere); "+
			"to manage a stopped gateway's store, pass --db <file> (by default %s): %w", admin.address, caddymodule.DefaultBoltPath(), unreachable.Err)
	case errors.As(err, &refused):
		return fmt.Errorf("%w (HTTP %d)", err, refused.Status)
	}
	return err
}

package caddymodule

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// migrateCommand copies a key store into another, as when a gateway on a
// bbolt file grows into several on etcd.
func migrateCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "migrate (--db <file> | --from <config>) --to <config>",
		Short: "Copies stored users and keys into the store another config uses",
		Long: `
Copies every stored user (with its password hash) and every key (digest,
owner, title, scopes, expiry, disabled, created and last-used times) from a
source store into the store configured by the apikeys app of the --to
config, e.g. from a gateway's bbolt file into the etcd cluster that several
gateways will share. Keys keep working: only their digests are copied.

The source is a bbolt file (--db; the Caddy using it must be stopped) or the
store of another config (--from). Users and keys already in the destination
are left as they are, so the copy can be run again.

  caddy apikeys migrate --db /var/lib/caddy/.local/share/caddy/apikeys.db --to Caddyfile.cluster`,
		Args: cobra.NoArgs,
		RunE: runMigrate,
	}
	c.Flags().String("from", "", "Config file whose apikeys store is the source")
	c.Flags().String("to", "", "Config file whose apikeys store receives the copy (required)")
	return c
}

// migration counts what a copy did.
type migration struct {
	UsersCopied  int `json:"users_copied"`
	UsersPresent int `json:"users_already_present"`
	KeysCopied   int `json:"keys_copied"`
	KeysPresent  int `json:"keys_already_present"`
	// Credit balances copied, and already in the destination.
	CreditsCopied  int `json:"credit_balances_copied,omitempty"`
	CreditsPresent int `json:"credit_balances_already_present,omitempty"`
	// KeysOrphaned counts keys of password users that the destination
	// has neither in its config nor in its store: they are refused there
	// until those users exist.
	KeysOrphaned int      `json:"keys_orphaned,omitempty"`
	Orphans      []string `json:"orphaned_users,omitempty"`
}

func runMigrate(cmd *cobra.Command, _ []string) error {
	cmd.SilenceUsage = true
	f := cmd.Flags()
	db, _ := f.GetString("db")
	from, _ := f.GetString("from")
	to, _ := f.GetString("to")
	adapter, _ := f.GetString("adapter")
	asJSON, _ := f.GetBool("json")
	switch {
	case to == "":
		return errors.New("--to <config> is required: the config whose store receives the copy")
	case (db == "") == (from == ""):
		return errors.New("give the source as either --db <file> or --from <config>")
	}

	var src keystore.Store
	var srcUsers []string
	if db != "" {
		s, err := boltstore.Open(db, time.Second)
		if errors.Is(err, boltstore.ErrLocked) {
			return fmt.Errorf("%s is in use, probably by a running Caddy: stop it first", db)
		}
		if err != nil {
			return err
		}
		defer s.Close()
		src = s
	} else {
		s, users, release, err := openConfiguredStore(from, adapter)
		if err != nil {
			return fmt.Errorf("source %s: %w", from, err)
		}
		defer release()
		src, srcUsers = s, users
	}
	dst, dstUsers, release, err := openConfiguredStore(to, adapter)
	if err != nil {
		return fmt.Errorf("destination %s: %w", to, err)
	}
	defer release()

	m, err := copyStore(context.Background(), src, dst, dstUsers)
	if err != nil {
		return fmt.Errorf("after copying %d users and %d keys: %w", m.UsersCopied, m.KeysCopied, err)
	}
	if asJSON {
		return printJSON(cmd, m)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "users: %d copied, %d already there\nkeys: %d copied, %d already there\n",
		m.UsersCopied, m.UsersPresent, m.KeysCopied, m.KeysPresent)
	if m.CreditsCopied+m.CreditsPresent > 0 {
		fmt.Fprintf(out, "credit balances: %d copied, %d already there\n", m.CreditsCopied, m.CreditsPresent)
	}
	if m.KeysOrphaned > 0 {
		fmt.Fprintf(out, "warning: %d keys belong to password users that %s has neither in its config nor in its store: %s.\n"+
			"They are refused there until those users exist: declare them in its config, or add them with `caddy apikeys user add --adopt-keys`.\n",
			m.KeysOrphaned, to, strings.Join(m.Orphans, ", "))
		if len(srcUsers) > 0 {
			fmt.Fprintf(out, "(users declared in %s: %s)\n", from, strings.Join(srcUsers, ", "))
		}
	}
	return nil
}

// openConfiguredStore opens the store that the apikeys app of a config
// file uses (bbolt in Caddy's data directory if it names none), without
// running the config, and lists the users the config declares.
func openConfiguredStore(file, adapter string) (keystore.Store, []string, func() error, error) {
	app, err := configuredApp(file, adapter)
	if err != nil {
		return nil, nil, nil, err
	}
	repl := caddy.NewReplacer()
	var users []string
	for _, u := range app.Users {
		users = append(users, repl.ReplaceKnown(u.Username, ""))
	}
	var raw map[string]json.RawMessage
	if len(app.StoreRaw) > 0 {
		if err := json.Unmarshal(app.StoreRaw, &raw); err != nil {
			return nil, nil, nil, fmt.Errorf("store: %w", err)
		}
	}
	store, release, err := openStore(raw)
	return store, users, release, err
}

// configuredApp reads the apikeys app of a config file, without running
// or provisioning it.
func configuredApp(file, adapter string) (*App, error) {
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

// openStore opens the store module configured by raw.
func openStore(raw map[string]json.RawMessage) (keystore.Store, func() error, error) {
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

// copyWorkers is how many keys are copied at once: a remote store answers
// each write in a round trip.
const copyWorkers = 16

// copyStore copies every stored user and key of src into dst, leaving
// those dst already has, and counts the keys of password users that dst
// has neither in dstUsers (its config) nor in its store.
func copyStore(ctx context.Context, src, dst keystore.Store, dstUsers []string) (migration, error) {
	var m migration
	users, err := src.Users(ctx)
	if err != nil {
		return m, fmt.Errorf("reading users: %w", err)
	}
	for _, u := range users {
		switch err := dst.CreateUser(ctx, u); {
		case errors.Is(err, keystore.ErrExists):
			m.UsersPresent++
		case err != nil:
			return m, fmt.Errorf("user %s: %w", u.Name, err)
		default:
			m.UsersCopied++
		}
	}
	keys, err := src.Keys(ctx)
	if err != nil {
		return m, fmt.Errorf("reading keys: %w", err)
	}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan keystore.Key)
	)
	for range copyWorkers {
		wg.Go(func() {
			for k := range next {
				err := dst.CreateKey(ctx, k, keystore.CreateOptions{})
				mu.Lock()
				switch {
				case errors.Is(err, keystore.ErrExists):
					m.KeysPresent++
				case err != nil:
					firstErr = cmp.Or(firstErr, fmt.Errorf("key %s: %w", k.ID, err))
				default:
					m.KeysCopied++
				}
				mu.Unlock()
			}
		})
	}
	for _, k := range keys {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- k
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return m, firstErr
	}
	if err := copyCredits(ctx, src, dst, &m); err != nil {
		return m, err
	}
	known := make(map[string]bool)
	for _, name := range dstUsers {
		known[name] = true
	}
	for _, k := range keys {
		if k.Owner.Source != keystore.SourcePassword {
			continue
		}
		name := k.Owner.Name
		if _, checked := known[name]; !checked {
			_, err := dst.User(ctx, name)
			if err != nil && !errors.Is(err, keystore.ErrNotFound) {
				return m, fmt.Errorf("looking up user %s: %w", name, err)
			}
			known[name] = err == nil
			if err != nil {
				m.Orphans = append(m.Orphans, name)
			}
		}
		if !known[name] {
			m.KeysOrphaned++
		}
	}
	slices.Sort(m.Orphans)
	return m, nil
}

// errPresent stops a copy of a credit account the destination has.
var errPresent = errors.New("already present")

// copyCredits copies every credit balance of src that dst does not have.
func copyCredits(ctx context.Context, src, dst keystore.Store, m *migration) error {
	accounts, err := src.CreditAccounts(ctx)
	if err != nil {
		return fmt.Errorf("reading credit balances: %w", err)
	}
	for _, a := range accounts {
		_, err := dst.UpdateCredits(ctx, a.ID, func(d *keystore.CreditAccount, exists bool) error {
			if exists {
				return errPresent
			}
			*d = a
			return nil
		})
		switch {
		case errors.Is(err, errPresent):
			m.CreditsPresent++
		case err != nil:
			return fmt.Errorf("credit balance %s: %w", a.ID, err)
		default:
			m.CreditsCopied++
		}
	}
	return nil
}

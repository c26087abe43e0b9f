package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/caddymodule"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/ops"
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

The source is a bbolt file (--db: a stopped gateway's store file, or a
backup, which is checked first) or the store of another config (--from). Users and keys already in the destination
are left as they are, so the copy can be run again.

  caddy apikeys migrate --db /var/lib/caddy/.local/share/caddy/apikeys.db --to Caddyfile.cluster`,
		Args: cobra.NoArgs,
		RunE: runMigrate,
	}
	c.Flags().String("from", "", "Config file whose apikeys store is the source")
	c.Flags().String("to", "", "Config file whose apikeys store receives the copy (required)")
	return c
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
		if rep, err := boltstore.Check(db); err == nil && rep.Backup != nil {
			var release func() error
			if src, release, err = openCheckedBackup(db, rep); err != nil {
				return err
			}
			defer release()
		} else if errors.Is(err, boltstore.ErrDamaged) {
			return fmt.Errorf("the source cannot be read: %w", err)
		}
	}
	switch {
	case src != nil: // a backup
	case db != "":
		s, err := boltstore.Open(db, time.Second)
		if errors.Is(err, boltstore.ErrLocked) {
			return fmt.Errorf("%s is in use, probably by a running Caddy: stop it first", db)
		}
		if err != nil {
			return err
		}
		defer s.Close()
		src = s
	default:
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

	m, err := ops.Copy(context.Background(), src, dst, dstUsers)
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
	app, err := caddymodule.ConfiguredApp(file, adapter)
	if err != nil {
		return nil, nil, nil, err
	}
	store, release, err := app.OpenStore()
	return store, app.UserNames(), release, err
}

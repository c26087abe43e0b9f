package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/ops"
)

// backupCommands are backup, restore and check: the store's bad days.
func backupCommands() []*cobra.Command {
	backup := &cobra.Command{
		Use:   "backup <file>",
		Short: "Writes a consistent backup of the key store while the gateway runs, and checks it",
		Long: `
Writes a snapshot of every key digest, user, credit balance and queued notice
of the key store, as of one moment, while the gateway keeps minting and
answering (through its admin API; with --db, from a stopped gateway's file).
The file is a bbolt database with a manifest (its record counts and a SHA-256
of its records); it is written to a temporary name, synced, checked and only
then renamed to <file>.`,
		Args: cobra.ExactArgs(1),
		RunE: withRunner(runBackup),
	}
	restore := &cobra.Command{
		Use:   "restore <backup> (--db <file> | --to <config>)",
		Short: "Restores a backup into a stopped gateway's file, or into the store a config names",
		Long: `
Checks the backup (bbolt's check, every record, its manifest's counts and
SHA-256), then makes it the store file of --db (the gateway must be stopped),
or copies its records into the store the apikeys app of --to uses (an etcd
cluster's prefix, for example). A destination that holds records is refused
unless --force: then a file is replaced, and a configured store keeps its
records, the backup's others being added beside them.`,
		Args: cobra.ExactArgs(1),
		RunE: runRestore,
	}
	restore.Flags().String("to", "", "Config file whose apikeys store receives the backup's records")
	restore.Flags().Bool("force", false, "Restore even though the destination holds records")
	check := &cobra.Command{
		Use:   "check (--db <file> | <file>)",
		Short: "Checks a store or backup file without starting Caddy",
		Long: `
Checks a stopped gateway's store file, or a backup: bbolt's check of every
page, the schema version, every record and index entry, and a backup's
manifest. It prints what the file holds, or what is wrong and what to do, and
exits with status 1 when the file is damaged.`,
		Args: cobra.MaximumNArgs(1),
		RunE: runCheck,
	}
	return []*cobra.Command{backup, restore, check}
}

func runBackup(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error {
	snap, err := run(cmd, r, ops.Backup, ops.None{})
	if err != nil {
		return err
	}
	defer snap.Close()
	rep, err := boltstore.SaveBackup(args[0], snap, snap.Size, snap.Counts, snap.Taken)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(cmd, rep)
	}
	c := rep.Counts
	fmt.Fprintf(cmd.OutOrStdout(), "backup written to %s (%d bytes, taken %s): %d keys, %d users, %d credit accounts, %d notices pending; checked\n",
		rep.Path, rep.Size, formatTime(snap.Taken), c.Keys, c.Users, c.Credits, c.Notices)
	return nil
}

func runRestore(cmd *cobra.Command, args []string) error {
	cmd.SilenceUsage = true
	f := cmd.Flags()
	db, _ := f.GetString("db")
	to, _ := f.GetString("to")
	adapter, _ := f.GetString("adapter")
	force, _ := f.GetBool("force")
	asJSON, _ := f.GetBool("json")
	if (db == "") == (to == "") {
		return errors.New("give the destination as either --db <file> (a stopped gateway's store file) or --to <config>")
	}
	if db != "" {
		rep, err := boltstore.Restore(args[0], db, force)
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd, rep)
		}
		c := rep.Counts
		fmt.Fprintf(cmd.OutOrStdout(), "restored %s into %s: %d keys, %d users, %d credit accounts, %d notices pending\n",
			args[0], db, c.Keys, c.Users, c.Credits, c.Notices)
		return nil
	}

	src, release, err := openBackup(args[0])
	if err != nil {
		return err
	}
	defer release()
	dst, dstUsers, closeDst, err := openConfiguredStore(to, adapter)
	if err != nil {
		return fmt.Errorf("destination %s: %w", to, err)
	}
	defer closeDst()
	m, err := ops.Restore(context.Background(), src, dst, dstUsers, force)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(cmd, m)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "restored %s into the store of %s: %d users, %d keys, %d credit balances, %d notices pending\n",
		args[0], to, m.UsersCopied, m.KeysCopied, m.CreditsCopied, m.NoticesCopied)
	return nil
}

// openBackup checks the backup at path and opens a copy of it as a store
// (opening writes to a bbolt file; the backup itself stays as it is).
func openBackup(path string) (keystore.Store, func() error, error) {
	rep, err := boltstore.Check(path)
	if err != nil {
		return nil, nil, fmt.Errorf("the backup cannot be restored: %w", err)
	}
	return openCheckedBackup(path, rep)
}

// openCheckedBackup is openBackup for a file Check has reported on.
func openCheckedBackup(path string, rep boltstore.Report) (keystore.Store, func() error, error) {
	if rep.Backup == nil {
		return nil, nil, fmt.Errorf("%s is a store file, not a backup: take one with 'caddy apikeys backup', or copy from it with 'caddy apikeys migrate --db'", path)
	}
	dir, err := os.MkdirTemp("", "apikeys-restore-")
	if err != nil {
		return nil, nil, err
	}
	copyPath := filepath.Join(dir, "backup.db")
	if _, err := boltstore.Restore(path, copyPath, false); err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	s, err := boltstore.Open(copyPath, time.Second)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	return s, func() error { return errors.Join(s.Close(), os.RemoveAll(dir)) }, nil
}

func runCheck(cmd *cobra.Command, args []string) error {
	cmd.SilenceUsage = true
	db, _ := cmd.Flags().GetString("db")
	asJSON, _ := cmd.Flags().GetBool("json")
	switch {
	case len(args) == 1 && db != "":
		return errors.New("give the file once: --db <file> or <file>")
	case len(args) == 1:
		db = args[0]
	case db == "":
		return errors.New("give the file to check: --db <file> (a stopped gateway's store) or a backup")
	}
	rep, err := boltstore.Check(db)
	if err != nil {
		if errors.Is(err, boltstore.ErrLocked) {
			return fmt.Errorf("%s is in use, probably by a running Caddy: its store was checked when it opened it; to check what it holds now, take a backup (caddy apikeys backup <file>) and check that", db)
		}
		return err
	}
	if asJSON {
		return printJSON(cmd, rep)
	}
	c := rep.Counts
	kind := "store file"
	if rep.Backup != nil {
		kind = "backup taken " + formatTime(rep.Backup.Taken)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: sound (%s, schema %d, %d bytes): %d keys, %d users, %d credit accounts, %d notices pending, %d done\n",
		db, kind, rep.Schema, rep.Size, c.Keys, c.Users, c.Credits, c.Notices, c.NoticesDone)
	return nil
}

package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "apikeys",
		Usage: "user|key|migrate|scan <command> [--address <admin>] [--db <file>] [--json]",
		Short: "Manages the users and API keys of the apikeys app",
		Long: `
Manages the users and API keys of the apikeys app.

While Caddy runs, the commands go through its admin API (the address comes
from --address, else from --config, else localhost:2019). When it does not
run, --db <file> opens its key store directly (the default file is
apikeys.db in Caddy's data directory).

  caddy apikeys user add <username> [--scopes a,b]
                                          password from stdin, or asked twice
  caddy apikeys user passwd <username>    same
  caddy apikeys user scopes <username> [scope...]
                                          sets the scopes the user may give keys
  caddy apikeys user remove <username>    also revokes all the user's keys
  caddy apikeys user list
  caddy apikeys key create (--user <name> [--source <s>] | --service <name>)
                           [--title <t>] [--expires-in <duration>] [--scopes a,b]
  caddy apikeys key list [--user <name> [--source <s>] | --service <name>]
  caddy apikeys key revoke <id>
  caddy apikeys key revoke (--user <name> [--source <s>] | --service <name>)
                                          revokes every key of that owner
  caddy apikeys key disable <id>
  caddy apikeys key enable <id>
  caddy apikeys key plan <id> <plan>      gives the key a plan of its own (- for its owner's)
  caddy apikeys key credits <id> [--set <n> | --add <n>]
                                          shows, sets or adds to the key's credits
  caddy apikeys user plan <username> <plan>
                                          sets the plan of the user's keys (- for the default)

An owner is a password user (--user), an owner that operators make for
programs (--service), or a token identity (--user with --source as key
listings show it, e.g. --source jwt:https://idp.example).
  caddy apikeys migrate (--db <file> | --from <config>) --to <config>
                                          copies users and keys into another store
  caddy apikeys scan [path...] [--prefix <p>] [--check | --revoke]
                                          finds keys in files, directories or
                                          stdin (-); exit status 1 if any

Output is a table; --json prints JSON for scripts.`,
		CobraFunc: apikeysCommand,
	})
}

func apikeysCommand(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.String("address", "", "Address of Caddy's admin API")
	pf.StringP("config", "c", "", "Config file to read the admin address from")
	pf.StringP("adapter", "a", "", "Adapter of the config file")
	pf.String("db", "", "Open this key store file directly instead of using the admin API (Caddy must be stopped)")
	pf.Bool("json", false, "Print JSON")

	user := &cobra.Command{Use: "user", Short: "Manages users kept in the key store"}
	add := &cobra.Command{Use: "add <username>", Short: "Adds a user; the password is read from stdin or asked for", Args: cobra.ExactArgs(1), RunE: withBackend(userAdd)}
	add.Flags().StringSlice("scopes", nil, "Scopes the user may give keys, comma separated")
	add.Flags().Bool("adopt-keys", false, "Keys a former user of this name left become the new user's (the same person)")
	add.Flags().Bool("revoke-keys", false, "Keys a former user of this name left are revoked")
	user.AddCommand(
		add,
		&cobra.Command{Use: "passwd <username>", Short: "Sets a user's password", Args: cobra.ExactArgs(1), RunE: withBackend(userPasswd)},
		&cobra.Command{Use: "scopes <username> [scope...]", Short: "Sets the scopes a user may give keys (none: no scopes)", Args: cobra.MinimumNArgs(1), RunE: withBackend(userScopes)},
		&cobra.Command{Use: "plan <username> <plan>", Short: "Sets the plan of the user's keys (- for the default)", Args: cobra.ExactArgs(2), RunE: withBackend(userPlan)},
		&cobra.Command{Use: "remove <username>", Short: "Removes a user and revokes all their keys", Args: cobra.ExactArgs(1), RunE: withBackend(userRemove)},
		&cobra.Command{Use: "list", Short: "Lists stored users", Args: cobra.NoArgs, RunE: withBackend(userList)},
	)

	key := &cobra.Command{Use: "key", Short: "Manages API keys"}
	create := &cobra.Command{Use: "create (--user <name> | --service <name>)", Short: "Creates a key and prints it once", Args: cobra.NoArgs, RunE: withBackend(keyCreate)}
	ownerFlags(create, "The key's owner: a password user (which must exist), or with --source a user of that source")
	create.Flags().String("title", keystore.DefaultTitle, "Title of the key")
	create.Flags().Duration("expires-in", 0, "Lifetime of the key, e.g. 720h; 0 means the policy's default")
	create.Flags().StringSlice("scopes", nil, "Scopes the key grants, comma separated")
	create.Flags().String("plan", "", "A plan of the key's own (default: its owner's)")
	credits := &cobra.Command{Use: "credits <id>", Short: "Shows, sets (--set) or adds to (--add) a key's credits", Args: cobra.ExactArgs(1), RunE: withBackend(keyCredits)}
	credits.Flags().Int64("set", -1, "Set the balance to this")
	credits.Flags().Int64("add", 0, "Add this to the balance (negative takes)")
	list := &cobra.Command{Use: "list", Short: "Lists keys", Args: cobra.NoArgs, RunE: withBackend(keyList)}
	ownerFlags(list, "Only this password user's keys, or with --source this user's of that source")
	revoke := &cobra.Command{Use: "revoke (<id> | --user <name> | --service <name>)", Short: "Deletes a key, or every key of an owner", Args: cobra.MaximumNArgs(1), RunE: withBackend(keyRevoke)}
	ownerFlags(revoke, "Revoke every key of this password user, or with --source of this user of that source")
	key.AddCommand(create, list, revoke, credits,
		&cobra.Command{Use: "plan <id> <plan>", Short: "Gives a key a plan of its own (- for its owner's)", Args: cobra.ExactArgs(2), RunE: withBackend(keyPlan)},
		&cobra.Command{Use: "disable <id>", Short: "Disables a key", Args: cobra.ExactArgs(1), RunE: withBackend(keyDisable)},
		&cobra.Command{Use: "enable <id>", Short: "Enables a key", Args: cobra.ExactArgs(1), RunE: withBackend(keyEnable)},
	)
	cmd.AddCommand(user, key, migrateCommand(), scanCommand())
}

// backend is where a command's action happens: the running Caddy's admin
// API, or the store file opened directly.
type backend interface {
	listKeys(owner ownerRef) ([]adminKey, error)
	createKey(req newKeyRequest) (createdKey, error)
	revokeKey(id string) error
	revokeOwner(owner ownerRef) (int, error)
	setDisabled(id string, disabled bool) (adminKey, error)
	listUsers() ([]adminUser, error)
	addUser(req userRequest) error
	setPassword(name string, req userRequest) error
	setScopes(name string, scopes []string) (adminUser, error)
	setUserPlan(name, plan string) (adminUser, error)
	setKeyPlan(id, plan string) (adminKey, error)
	credits(id string) (creditsView, error)
	adjustCredits(id string, amount int64, set bool) (creditsView, error)
	removeUser(name string) (int, error)
	lookupKeys(req hashesRequest) ([]*adminKey, error)
	reportLeaked(req hashesRequest) ([]*adminKey, error)
	close() error
}

// ownerFlags adds --user, --source and --service to a command.
func ownerFlags(cmd *cobra.Command, userHelp string) {
	cmd.Flags().String("user", "", userHelp)
	cmd.Flags().String("source", "", `Source of --user when it is not a password user, e.g. "jwt:https://idp.example"`)
	cmd.Flags().String("service", "", "An owner that operators make for programs, instead of --user")
}

func ownerFromFlags(cmd *cobra.Command) ownerRef {
	f := cmd.Flags()
	var r ownerRef
	r.User, _ = f.GetString("user")
	r.Source, _ = f.GetString("source")
	r.Service, _ = f.GetString("service")
	return r
}

type cliAction func(cmd *cobra.Command, args []string, b backend, asJSON bool) error

func withBackend(f cliAction) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cmd.SilenceUsage = true
		asJSON, _ := cmd.Flags().GetBool("json")
		b, err := openBackend(cmd)
		if err != nil {
			return err
		}
		defer b.close()
		return f(cmd, args, b, asJSON)
	}
}

// openBackend is the store file of --db, or else the admin API.
func openBackend(cmd *cobra.Command) (backend, error) {
	flags := cmd.Flags()
	config, _ := flags.GetString("config")
	adapter, _ := flags.GetString("adapter")
	if db, _ := flags.GetString("db"); db != "" {
		return openOffline(db, config, adapter)
	}
	address, _ := flags.GetString("address")
	return dialAdmin(address, config, adapter)
}

func userAdd(cmd *cobra.Command, args []string, b backend, _ bool) error {
	pw, err := readPassword(cmd)
	if err != nil {
		return err
	}
	f := cmd.Flags()
	scopes, _ := f.GetStringSlice("scopes")
	req := userRequest{Username: args[0], Password: pw, Scopes: scopes}
	adopt, _ := f.GetBool("adopt-keys")
	revoke, _ := f.GetBool("revoke-keys")
	switch {
	case adopt && revoke:
		return errors.New("give --adopt-keys or --revoke-keys, not both")
	case adopt:
		req.OrphanedKeys = "adopt"
	case revoke:
		req.OrphanedKeys = "revoke"
	}
	if err := b.addUser(req); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "user %s added\n", args[0])
	return nil
}

// planArg reads a plan argument, "-" meaning none.
func planArg(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

func userPlan(cmd *cobra.Command, args []string, b backend, asJSON bool) error {
	u, err := b.setUserPlan(args[0], planArg(args[1]))
	if err != nil || asJSON {
		return errOrJSON(cmd, err, u)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "user %s: plan %s\n", u.Username, dash(u.Plan))
	return nil
}

func keyPlan(cmd *cobra.Command, args []string, b backend, asJSON bool) error {
	k, err := b.setKeyPlan(args[0], planArg(args[1]))
	if err != nil || asJSON {
		return errOrJSON(cmd, err, k)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "key %s: plan %s\n", k.ID, dash(k.Plan))
	return nil
}

func keyCredits(cmd *cobra.Command, args []string, b backend, asJSON bool) error {
	f := cmd.Flags()
	set, _ := f.GetInt64("set")
	add, _ := f.GetInt64("add")
	var c creditsView
	var err error
	switch {
	case f.Changed("set") && f.Changed("add"):
		return errors.New("give --set or --add, not both")
	case f.Changed("set"):
		c, err = b.adjustCredits(args[0], set, true)
	case f.Changed("add"):
		c, err = b.adjustCredits(args[0], add, false)
	default:
		c, err = b.credits(args[0])
	}
	if err != nil || asJSON {
		return errOrJSON(cmd, err, c)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "key %s: %d of %d credits left", args[0], c.Remaining, c.Amount)
	if c.Shared {
		fmt.Fprint(out, " (shared by the owner's keys)")
	}
	switch {
	case c.NextRefill != nil:
		fmt.Fprintf(out, "; refills %s", formatTime(time.Time(*c.NextRefill)))
	case c.Refill > 0:
		fmt.Fprintf(out, "; refills every %s from the first request", time.Duration(c.Refill)*time.Second)
	}
	fmt.Fprintln(out)
	return nil
}

func userScopes(cmd *cobra.Command, args []string, b backend, asJSON bool) error {
	u, err := b.setScopes(args[0], args[1:])
	if err != nil || asJSON {
		return errOrJSON(cmd, err, u)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "user %s may give keys the scopes: %s\n", u.Username, dash(strings.Join(u.Scopes, " ")))
	return nil
}

func userPasswd(cmd *cobra.Command, args []string, b backend, _ bool) error {
	pw, err := readPassword(cmd)
	if err != nil {
		return err
	}
	if err := b.setPassword(args[0], userRequest{Password: pw}); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed\n", args[0])
	return nil
}

func userRemove(cmd *cobra.Command, args []string, b backend, asJSON bool) error {
	n, err := b.removeUser(args[0])
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(cmd, map[string]int{"keys_revoked": n})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "user %s removed; %d keys revoked\n", args[0], n)
	return nil
}

func userList(cmd *cobra.Command, _ []string, b backend, asJSON bool) error {
	users, err := b.listUsers()
	if err != nil || asJSON {
		return errOrJSON(cmd, err, users)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tCREATED\tSCOPES")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Username, formatTime(time.Time(u.Created)), dash(strings.Join(u.Scopes, ",")))
	}
	return tw.Flush()
}

func keyCreate(cmd *cobra.Command, _ []string, b backend, asJSON bool) error {
	f := cmd.Flags()
	owner := ownerFromFlags(cmd)
	title, _ := f.GetString("title")
	expiresIn, _ := f.GetDuration("expires-in")
	scopes, _ := f.GetStringSlice("scopes")
	plan, _ := f.GetString("plan")
	if owner.User == "" && owner.Service == "" {
		return errors.New("--user or --service is required")
	}
	if expiresIn < 0 {
		return errors.New("--expires-in must not be negative")
	}
	k, err := b.createKey(newKeyRequest{ownerRef: owner, Title: title, ExpiresIn: expiresIn.Seconds(), Scopes: scopes, Plan: plan})
	if err != nil || asJSON {
		return errOrJSON(cmd, err, k)
	}
	o, _, _ := owner.owner()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "%s\n\nThis is the only time the key is shown; store it now.\nid: %s  owner: %s  title: %s\n", k.APIKey, k.ID, o, k.Title)
	if k.Expires != nil {
		fmt.Fprintf(out, "expires: %s\n", formatTime(time.Time(*k.Expires)))
	}
	return nil
}

func keyList(cmd *cobra.Command, _ []string, b backend, asJSON bool) error {
	keys, err := b.listKeys(ownerFromFlags(cmd))
	if err != nil || asJSON {
		return errOrJSON(cmd, err, keys)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tOWNER\tSOURCE\tTITLE\tPREVIEW\tCREATED\tLAST USED\tEXPIRES\tSCOPES\tSTATUS")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Owner, k.Source, k.Title, k.KeyPreview,
			formatTime(time.Time(k.Created)), formatOptional(k.LastUsed), formatOptional(k.Expires),
			dash(strings.Join(k.Scopes, ",")), keyStatus(k))
	}
	return tw.Flush()
}

// keyStatus says whether a key works, and if not why, in a word.
func keyStatus(k adminKey) string {
	switch {
	case k.Orphaned:
		return "orphaned"
	case k.Leaked:
		return "leaked"
	case k.Disabled:
		return "disabled"
	case k.Expires != nil && time.Now().After(time.Time(*k.Expires)):
		return "expired"
	case k.Rotated:
		return "rotated"
	}
	return "active"
}

func keyRevoke(cmd *cobra.Command, args []string, b backend, asJSON bool) error {
	owner := ownerFromFlags(cmd)
	named := owner != (ownerRef{})
	switch {
	case named && len(args) == 1:
		return errors.New("give a key id or an owner, not both")
	case named:
		n, err := b.revokeOwner(owner)
		if err != nil || asJSON {
			return errOrJSON(cmd, err, map[string]int{"keys_revoked": n})
		}
		o, _, _ := owner.owner()
		fmt.Fprintf(cmd.OutOrStdout(), "%d keys of %s revoked\n", n, o)
		return nil
	case len(args) == 0:
		return errors.New("give a key id, or --user or --service to revoke every key of an owner")
	}
	if err := b.revokeKey(args[0]); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "key %s revoked\n", args[0])
	return nil
}

func keyDisable(cmd *cobra.Command, args []string, b backend, asJSON bool) error {
	return setDisabledCmd(cmd, args[0], b, asJSON, true)
}

func keyEnable(cmd *cobra.Command, args []string, b backend, asJSON bool) error {
	return setDisabledCmd(cmd, args[0], b, asJSON, false)
}

func setDisabledCmd(cmd *cobra.Command, id string, b backend, asJSON, disabled bool) error {
	k, err := b.setDisabled(id, disabled)
	if err != nil || asJSON {
		return errOrJSON(cmd, err, k)
	}
	state := "enabled"
	if disabled {
		state = "disabled"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "key %s %s\n", id, state)
	return nil
}

func errOrJSON(cmd *cobra.Command, err error, v any) error {
	if err != nil {
		return err
	}
	return printJSON(cmd, v)
}

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func formatTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") }

func formatOptional(t *epochSeconds) string {
	if t == nil {
		return "-"
	}
	return formatTime(time.Time(*t))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// readPassword reads a password from stdin, or asks for it twice when
// stdin is a terminal. It is never taken from a flag, where it would end
// up in shell history and process listings.
func readPassword(cmd *cobra.Command) (string, error) {
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), "Password: ")
		first, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", err
		}
		fmt.Fprint(cmd.ErrOrStderr(), "Repeat password: ")
		second, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", err
		}
		if !bytes.Equal(first, second) {
			return "", errors.New("the passwords do not match")
		}
		return checkPassword(string(first))
	}
	data, err := io.ReadAll(io.LimitReader(in, 4096))
	if err != nil {
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	return checkPassword(pw)
}

func checkPassword(pw string) (string, error) {
	if pw == "" {
		return "", errors.New("the password is empty (give it on stdin, e.g. `caddy apikeys user add alice < pwfile`)")
	}
	return pw, nil
}

// offlineBackend works on a store file opened directly.
type offlineBackend struct {
	op    operator
	store *boltstore.Store
}

// openOffline opens the store file path directly, with the key policy of
// the config file (when given; otherwise nothing that needs it can be
// done).
func openOffline(path, config, adapter string) (*offlineBackend, error) {
	policy := keystore.Policy{Unknown: true}
	if config != "" {
		app, err := configuredApp(config, adapter)
		if err != nil {
			return nil, err
		}
		if policy, err = app.keyPolicy(caddy.NewReplacer()); err != nil {
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
	return &offlineBackend{op: operator{keyring: kr, audit: caddy.Log().Named("apikeys.audit"), via: "cli", offline: true}, store: s}, nil
}

func (o *offlineBackend) close() error {
	return errors.Join(o.op.keyring.Close(), o.store.Close())
}

func (o *offlineBackend) listKeys(owner ownerRef) ([]adminKey, error) {
	return o.op.listKeys(context.Background(), owner)
}

func (o *offlineBackend) revokeOwner(owner ownerRef) (int, error) {
	return o.op.revokeOwner(context.Background(), owner)
}

func (o *offlineBackend) setScopes(name string, scopes []string) (adminUser, error) {
	return o.op.setScopes(context.Background(), name, scopes)
}

func (o *offlineBackend) setUserPlan(name, plan string) (adminUser, error) {
	return o.op.setUserPlan(context.Background(), name, plan)
}

func (o *offlineBackend) setKeyPlan(id, plan string) (adminKey, error) {
	return o.op.setKeyPlan(context.Background(), id, plan)
}

func (o *offlineBackend) credits(id string) (creditsView, error) {
	return o.op.credits(context.Background(), id)
}

func (o *offlineBackend) adjustCredits(id string, amount int64, set bool) (creditsView, error) {
	return o.op.adjustCredits(context.Background(), id, amount, set)
}

func (o *offlineBackend) createKey(req newKeyRequest) (createdKey, error) {
	return o.op.createKey(context.Background(), req)
}

func (o *offlineBackend) revokeKey(id string) error { return o.op.revokeKey(context.Background(), id) }

func (o *offlineBackend) setDisabled(id string, disabled bool) (adminKey, error) {
	return o.op.setDisabled(context.Background(), id, disabled)
}

func (o *offlineBackend) listUsers() ([]adminUser, error) {
	return o.op.listUsers(context.Background())
}

func (o *offlineBackend) addUser(req userRequest) error {
	return o.op.addUser(context.Background(), req)
}

func (o *offlineBackend) setPassword(name string, req userRequest) error {
	return o.op.setPassword(context.Background(), name, req)
}

func (o *offlineBackend) removeUser(name string) (int, error) {
	return o.op.removeUser(context.Background(), name)
}

func (o *offlineBackend) lookupKeys(req hashesRequest) ([]*adminKey, error) {
	return o.op.lookupKeys(context.Background(), req)
}

func (o *offlineBackend) reportLeaked(req hashesRequest) ([]*adminKey, error) {
	return o.op.reportLeaked(context.Background(), req)
}

// adminBackend talks to a running Caddy's admin API.
type adminBackend struct{ address string }

func dialAdmin(address, config, adapter string) (*adminBackend, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, config, adapter)
	if err != nil {
		return nil, fmt.Errorf("finding the admin API address: %w", err)
	}
	return &adminBackend{address: addr}, nil
}

func (a *adminBackend) close() error { return nil }

// call sends a request and decodes a JSON answer into out (if not nil).
func (a *adminBackend) call(method, uri string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(a.address, method, uri, nil, rd)
	if err != nil {
		// AdminAPIRequest turns error statuses into errors that carry the
		// admin API's message; a missing connection is the other case.
		var opErr interface{ Timeout() bool }
		if strings.Contains(err.Error(), "performing request") || errors.As(err, &opErr) {
			return fmt.Errorf("cannot reach Caddy's admin API at %s (is Caddy running? use --address if its admin endpoint is elsewhere); "+
				"to manage a stopped gateway's store, pass --db <file> (by default %s): %w", a.address, DefaultBoltPath(), err)
		}
		return adminError(err)
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("reading the admin API's answer: %w", err)
	}
	return nil
}

func (a *adminBackend) listKeys(owner ownerRef) ([]adminKey, error) {
	var out []adminKey
	return out, a.call(http.MethodGet, "/apikeys/keys"+owner.query(), nil, &out)
}

func (a *adminBackend) revokeOwner(owner ownerRef) (int, error) {
	var out struct {
		KeysRevoked int `json:"keys_revoked"`
	}
	return out.KeysRevoked, a.call(http.MethodDelete, "/apikeys/keys"+owner.query(), nil, &out)
}

func (a *adminBackend) setScopes(name string, scopes []string) (adminUser, error) {
	var out adminUser
	body := struct {
		Scopes []string `json:"scopes"`
	}{scopes}
	return out, a.call(http.MethodPut, "/apikeys/users/"+pathSegment(name)+"/scopes", body, &out)
}

func (a *adminBackend) setUserPlan(name, plan string) (adminUser, error) {
	var out adminUser
	body := struct {
		Plan string `json:"plan"`
	}{plan}
	return out, a.call(http.MethodPut, "/apikeys/users/"+pathSegment(name)+"/plan", body, &out)
}

func (a *adminBackend) setKeyPlan(id, plan string) (adminKey, error) {
	var out adminKey
	body := struct {
		Plan string `json:"plan"`
	}{plan}
	return out, a.call(http.MethodPut, "/apikeys/keys/"+pathSegment(id)+"/plan", body, &out)
}

func (a *adminBackend) credits(id string) (creditsView, error) {
	var out creditsView
	return out, a.call(http.MethodGet, "/apikeys/keys/"+pathSegment(id)+"/credits", nil, &out)
}

func (a *adminBackend) adjustCredits(id string, amount int64, set bool) (creditsView, error) {
	var out creditsView
	if set {
		body := struct {
			Balance int64 `json:"balance"`
		}{amount}
		return out, a.call(http.MethodPut, "/apikeys/keys/"+pathSegment(id)+"/credits", body, &out)
	}
	body := struct {
		Add int64 `json:"add"`
	}{amount}
	return out, a.call(http.MethodPost, "/apikeys/keys/"+pathSegment(id)+"/credits", body, &out)
}

// pathSegment escapes s as one segment of an admin API path, dots too,
// so that names such as "." and ".." stay names instead of moving up.
func pathSegment(s string) string {
	return strings.ReplaceAll(url.PathEscape(s), ".", "%2E")
}

// query is the reference as admin API query parameters, "" for none.
func (r ownerRef) query() string {
	q := url.Values{}
	for name, v := range map[string]string{"user": r.User, "service": r.Service, "source": r.Source} {
		if v != "" {
			q.Set(name, v)
		}
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func (a *adminBackend) createKey(req newKeyRequest) (createdKey, error) {
	var out createdKey
	return out, a.call(http.MethodPost, "/apikeys/keys", req, &out)
}

func (a *adminBackend) revokeKey(id string) error {
	return a.call(http.MethodDelete, "/apikeys/keys/"+pathSegment(id), nil, nil)
}

func (a *adminBackend) setDisabled(id string, disabled bool) (adminKey, error) {
	var out adminKey
	action := "enable"
	if disabled {
		action = "disable"
	}
	return out, a.call(http.MethodPost, "/apikeys/keys/"+pathSegment(id)+"/"+action, nil, &out)
}

func (a *adminBackend) listUsers() ([]adminUser, error) {
	var out []adminUser
	return out, a.call(http.MethodGet, "/apikeys/users", nil, &out)
}

var adminErrorBody = regexp.MustCompile(`^caddy responded with error: HTTP (\d+): (\{.*\})\s*$`)

// adminError turns the admin API's JSON error into its plain message.
func adminError(err error) error {
	m := adminErrorBody.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(m[2]), &body) != nil || body.Error == "" {
		return err
	}
	return fmt.Errorf("%s (HTTP %s)", body.Error, m[1])
}

// The CLI hashes passwords itself, so that only a hash crosses the admin
// socket.
func hashedRequest(req userRequest) (userRequest, error) {
	h, err := req.hash()
	return userRequest{Username: req.Username, PasswordHash: h, Scopes: req.Scopes, OrphanedKeys: req.OrphanedKeys}, err
}

func (a *adminBackend) addUser(req userRequest) error {
	req, err := hashedRequest(req)
	if err != nil {
		return err
	}
	return a.call(http.MethodPost, "/apikeys/users", req, nil)
}

func (a *adminBackend) setPassword(name string, req userRequest) error {
	req, err := hashedRequest(req)
	if err != nil {
		return err
	}
	return a.call(http.MethodPut, "/apikeys/users/"+pathSegment(name)+"/password", req, nil)
}

func (a *adminBackend) removeUser(name string) (int, error) {
	var out struct {
		KeysRevoked int `json:"keys_revoked"`
	}
	return out.KeysRevoked, a.call(http.MethodDelete, "/apikeys/users/"+pathSegment(name), nil, &out)
}

func (a *adminBackend) lookupKeys(req hashesRequest) ([]*adminKey, error) {
	var out []*adminKey
	return out, a.call(http.MethodPost, "/apikeys/keys/lookup", req, &out)
}

func (a *adminBackend) reportLeaked(req hashesRequest) ([]*adminKey, error) {
	var out []*adminKey
	return out, a.call(http.MethodPost, "/apikeys/keys/leaked", req, &out)
}

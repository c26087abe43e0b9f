package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/ops"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

func keyCommands() []*cobra.Command {
	create := &cobra.Command{Use: "create (--user <name> | --service <name>)", Short: "Creates a key and prints it once", Args: cobra.NoArgs, RunE: withRunner(keyCreate)}
	ownerFlags(create, "The key's owner: a password user (which must exist), or with --source a user of that source")
	create.Flags().String("title", keystore.DefaultTitle, "Title of the key")
	create.Flags().Duration("expires-in", 0, "Lifetime of the key, e.g. 720h; 0 means the policy's default")
	create.Flags().StringSlice("scopes", nil, "Scopes the key grants, comma separated")
	create.Flags().String("plan", "", "A plan of the key's own (default: its owner's)")
	list := &cobra.Command{Use: "list", Short: "Lists keys", Args: cobra.NoArgs, RunE: withRunner(keyList)}
	ownerFlags(list, "Only this password user's keys, or with --source this user's of that source")
	revoke := &cobra.Command{Use: "revoke (<id> | --user <name> | --service <name>)", Short: "Deletes a key, or every key of an owner", Args: cobra.MaximumNArgs(1), RunE: withRunner(keyRevoke)}
	ownerFlags(revoke, "Revoke every key of this password user, or with --source of this user of that source")
	credits := &cobra.Command{Use: "credits <id>", Short: "Shows, sets (--set) or adds to (--add) a key's credits", Args: cobra.ExactArgs(1), RunE: withRunner(keyCredits)}
	credits.Flags().Int64("set", 0, "Set the balance to this")
	credits.Flags().Int64("add", 0, "Add this to the balance (negative takes)")
	return []*cobra.Command{create, list, revoke, credits,
		{Use: "plan <id> <plan>", Short: "Gives a key a plan of its own (- for its owner's)", Args: cobra.ExactArgs(2), RunE: withRunner(keyPlan)},
		{Use: "disable <id>", Short: "Disables a key", Args: cobra.ExactArgs(1), RunE: withRunner(keyDisable)},
		{Use: "enable <id>", Short: "Enables a key", Args: cobra.ExactArgs(1), RunE: withRunner(keyEnable)},
	}
}

// ownerFlags adds --user, --source and --service to a command.
func ownerFlags(cmd *cobra.Command, userHelp string) {
	cmd.Flags().String("user", "", userHelp)
	cmd.Flags().String("source", "", `Source of --user when it is not a password user, e.g. "jwt:https://idp.example"`)
	cmd.Flags().String("service", "", "An owner that operators make for programs, instead of --user")
}

func ownerFromFlags(cmd *cobra.Command) ops.OwnerRef {
	f := cmd.Flags()
	var r ops.OwnerRef
	r.User, _ = f.GetString("user")
	r.Source, _ = f.GetString("source")
	r.Service, _ = f.GetString("service")
	return r
}

// planArg reads a plan argument, "-" meaning none.
func planArg(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

func keyCreate(cmd *cobra.Command, _ []string, r ops.Runner, asJSON bool) error {
	f := cmd.Flags()
	req := ops.NewKey{OwnerRef: ownerFromFlags(cmd)}
	req.Title, _ = f.GetString("title")
	expiresIn, _ := f.GetDuration("expires-in")
	req.Scopes, _ = f.GetStringSlice("scopes")
	req.Plan, _ = f.GetString("plan")
	if req.User == "" && req.Service == "" {
		return errors.New("--user or --service is required")
	}
	if expiresIn < 0 {
		return errors.New("--expires-in must not be negative")
	}
	req.ExpiresIn = expiresIn.Seconds()
	k, err := run(cmd, r, ops.CreateKey, req)
	if err != nil || asJSON {
		return errOrJSON(cmd, err, k)
	}
	o, _, _ := req.Owner()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "%s\n\nThis is the only time the key is shown; store it now.\nid: %s  owner: %s  title: %s\n", k.APIKey, k.ID, o, k.Title)
	if k.Expires != nil {
		fmt.Fprintf(out, "expires: %s\n", formatTime(k.Expires.Time()))
	}
	return nil
}

func keyList(cmd *cobra.Command, _ []string, r ops.Runner, asJSON bool) error {
	keys, err := run(cmd, r, ops.ListKeys, ownerFromFlags(cmd))
	if err != nil || asJSON {
		return errOrJSON(cmd, err, keys)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tOWNER\tSOURCE\tTITLE\tPREVIEW\tCREATED\tLAST USED\tEXPIRES\tSCOPES\tPLAN\tSTATUS")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Owner, k.Source, k.Title, k.KeyPreview,
			formatTime(k.Created.Time()), formatOptional(k.LastUsed), formatOptional(k.Expires),
			dash(strings.Join(k.Scopes, ",")), dash(k.Plan), keyStatus(k))
	}
	return tw.Flush()
}

// keyStatus says whether a key works, and if not why, in a word.
func keyStatus(k ops.Key) string {
	switch {
	case k.Orphaned:
		return "orphaned"
	case k.Leaked:
		return "leaked"
	case k.Disabled:
		return "disabled"
	case k.Expires != nil && time.Now().After(k.Expires.Time()):
		return "expired"
	case k.Rotated:
		return "rotated"
	}
	return "active"
}

func keyRevoke(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error {
	owner := ownerFromFlags(cmd)
	named := owner != (ops.OwnerRef{})
	switch {
	case named && len(args) == 1:
		return errors.New("give a key id or an owner, not both")
	case named:
		n, err := run(cmd, r, ops.RevokeOwner, owner)
		if err != nil || asJSON {
			return errOrJSON(cmd, err, n)
		}
		o, _, _ := owner.Owner()
		fmt.Fprintf(cmd.OutOrStdout(), "%d keys of %s revoked\n", n.KeysRevoked, o)
		return nil
	case len(args) == 0:
		return errors.New("give a key id, or --user or --service to revoke every key of an owner")
	}
	if _, err := run(cmd, r, ops.RevokeKey, ops.KeyID{ID: args[0]}); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "key %s revoked\n", args[0])
	return nil
}

func keyDisable(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error {
	return setDisabled(cmd, r, ops.DisableKey, args[0], "disabled", asJSON)
}

func keyEnable(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error {
	return setDisabled(cmd, r, ops.EnableKey, args[0], "enabled", asJSON)
}

func setDisabled(cmd *cobra.Command, r ops.Runner, op *ops.Op[ops.KeyID, ops.Key], id, state string, asJSON bool) error {
	k, err := run(cmd, r, op, ops.KeyID{ID: id})
	if err != nil || asJSON {
		return errOrJSON(cmd, err, k)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "key %s %s\n", id, state)
	return nil
}

func keyPlan(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error {
	k, err := run(cmd, r, ops.SetKeyPlan, ops.KeyPlan{KeyID: ops.KeyID{ID: args[0]}, Plan: planArg(args[1])})
	if err != nil || asJSON {
		return errOrJSON(cmd, err, k)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "key %s: plan %s\n", k.ID, dash(k.Plan))
	return nil
}

func keyCredits(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error {
	f := cmd.Flags()
	id := ops.KeyID{ID: args[0]}
	var c wire.CreditsView
	var err error
	switch {
	case f.Changed("set") && f.Changed("add"):
		return errors.New("give --set or --add, not both")
	case f.Changed("set"):
		set, _ := f.GetInt64("set")
		c, err = run(cmd, r, ops.SetCredits, ops.SetBalance{KeyID: id, Balance: &set})
	case f.Changed("add"):
		add, _ := f.GetInt64("add")
		c, err = run(cmd, r, ops.AddToCredits, ops.AddCredits{KeyID: id, Add: add})
	default:
		c, err = run(cmd, r, ops.Credits, id)
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
		fmt.Fprintf(out, "; refills %s", formatTime(c.NextRefill.Time()))
	case c.Refill > 0:
		fmt.Fprintf(out, "; refills every %s from the first request", time.Duration(c.Refill)*time.Second)
	}
	fmt.Fprintln(out)
	return nil
}

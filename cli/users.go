package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/ops"
)

func userCommands() []*cobra.Command {
	add := &cobra.Command{Use: "add <username>", Short: "Adds a user; the password is read from stdin or asked for", Args: cobra.ExactArgs(1), RunE: withRunner(userAdd)}
	add.Flags().StringSlice("scopes", nil, "Scopes the user may give keys, comma separated")
	add.Flags().Bool("adopt-keys", false, "Keys a former user of this name left become the new user's (the same person)")
	add.Flags().Bool("revoke-keys", false, "Keys a former user of this name left are revoked")
	return []*cobra.Command{
		add,
		{Use: "passwd <username>", Short: "Sets a user's password", Args: cobra.ExactArgs(1), RunE: withRunner(userPasswd)},
		{Use: "scopes <username> [scope...]", Short: "Sets the scopes a user may give keys (none: no scopes)", Args: cobra.MinimumNArgs(1), RunE: withRunner(userScopes)},
		{Use: "plan <username> <plan>", Short: "Sets the plan of the user's keys (- for the default)", Args: cobra.ExactArgs(2), RunE: withRunner(userPlan)},
		{Use: "remove <username>", Short: "Removes a user and revokes all their keys", Args: cobra.ExactArgs(1), RunE: withRunner(userRemove)},
		{Use: "list", Short: "Lists stored users", Args: cobra.NoArgs, RunE: withRunner(userList)},
	}
}

// hashedPassword reads a password and hashes it here, so that only a
// hash crosses the admin socket.
func hashedPassword(cmd *cobra.Command) (ops.Password, error) {
	pw, err := readPassword(cmd)
	if err != nil {
		return ops.Password{}, err
	}
	h, err := identity.HashPassword(pw)
	return ops.Password{PasswordHash: h}, err
}

func userAdd(cmd *cobra.Command, args []string, r ops.Runner, _ bool) error {
	f := cmd.Flags()
	adopt, _ := f.GetBool("adopt-keys")
	revoke, _ := f.GetBool("revoke-keys")
	req := ops.NewUser{Username: args[0]}
	switch {
	case adopt && revoke:
		return errors.New("give --adopt-keys or --revoke-keys, not both")
	case adopt:
		req.OrphanedKeys = "adopt"
	case revoke:
		req.OrphanedKeys = "revoke"
	}
	req.Scopes, _ = f.GetStringSlice("scopes")
	var err error
	if req.Password, err = hashedPassword(cmd); err != nil {
		return err
	}
	if _, err := run(cmd, r, ops.AddUser, req); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "user %s added\n", args[0])
	return nil
}

func userPasswd(cmd *cobra.Command, args []string, r ops.Runner, _ bool) error {
	pw, err := hashedPassword(cmd)
	if err != nil {
		return err
	}
	if _, err := run(cmd, r, ops.SetPassword, ops.NewPassword{UserName: ops.UserName{Name: args[0]}, Password: pw}); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed\n", args[0])
	return nil
}

func userScopes(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error {
	u, err := run(cmd, r, ops.SetUserScopes, ops.UserScopes{UserName: ops.UserName{Name: args[0]}, Scopes: args[1:]})
	if err != nil || asJSON {
		return errOrJSON(cmd, err, u)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "user %s may give keys the scopes: %s\n", u.Username, dash(strings.Join(u.Scopes, " ")))
	return nil
}

func userPlan(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error {
	u, err := run(cmd, r, ops.SetUserPlan, ops.UserPlan{UserName: ops.UserName{Name: args[0]}, Plan: planArg(args[1])})
	if err != nil || asJSON {
		return errOrJSON(cmd, err, u)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "user %s: plan %s\n", u.Username, dash(u.Plan))
	return nil
}

func userRemove(cmd *cobra.Command, args []string, r ops.Runner, asJSON bool) error {
	n, err := run(cmd, r, ops.RemoveUser, ops.UserName{Name: args[0]})
	if err != nil || asJSON {
		return errOrJSON(cmd, err, n)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "user %s removed; %d keys revoked\n", args[0], n.KeysRevoked)
	return nil
}

func userList(cmd *cobra.Command, _ []string, r ops.Runner, asJSON bool) error {
	users, err := run(cmd, r, ops.ListUsers, ops.None{})
	if err != nil || asJSON {
		return errOrJSON(cmd, err, users)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tCREATED\tSCOPES")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Username, formatTime(u.Created.Time()), dash(strings.Join(u.Scopes, ",")))
	}
	return tw.Flush()
}

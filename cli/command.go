// Package cli is `caddy apikeys`: the operator's commands over the
// operations of package ops, run through a running gateway's admin API
// or, with --db, on its store file opened here; and migrate and scan.
package cli

import (
	"fmt"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "apikeys",
		Usage: "user|key|migrate|scan|backup|restore|check <command> [--address <admin>] [--db <file>] [--json]",
		Short: "Manages the users and API keys of the apikeys app",
		Long: `
Manages the users and API keys of the apikeys app.

While Caddy runs, the commands go through its admin API (the address comes
from --address, else from --config, else localhost:2019). When it does not
run, --db <file> opens its key store directly (the default file is
apikeys.db in Caddy's data directory).

` + summary(commands()) + `
An owner is a password user (--user), an owner that operators make for
programs (--service), or a token identity (--user with --source as key
listings show it, e.g. --source jwt:https://idp.example). Passwords are read
from stdin, or asked for twice on a terminal; never from a flag.

Output is a table; --json prints JSON for scripts.`,
		CobraFunc: func(cmd *cobra.Command) {
			pf := cmd.PersistentFlags()
			pf.String("address", "", "Address of Caddy's admin API")
			pf.StringP("config", "c", "", "Config file to read the admin address (and, with --db, the key policy) from")
			pf.StringP("adapter", "a", "", "Adapter of the config file")
			pf.String("db", "", "Open this key store file directly instead of using the admin API (Caddy must be stopped)")
			pf.Bool("json", false, "Print JSON")
			cmd.AddCommand(commands()...)
		},
	})
}

// commands is the tree under `caddy apikeys`, each command declared once
// with its flags, beside the action it runs.
func commands() []*cobra.Command {
	user := &cobra.Command{Use: "user", Short: "Manages users kept in the key store"}
	user.AddCommand(userCommands()...)
	key := &cobra.Command{Use: "key", Short: "Manages API keys"}
	key.AddCommand(keyCommands()...)
	return append([]*cobra.Command{user, key, migrateCommand(), scanCommand()}, backupCommands()...)
}

// summary lists every command with its arguments and flags, from the tree
// itself, so that the help cannot leave one out.
func summary(cmds []*cobra.Command) string {
	var b strings.Builder
	var walk func(prefix string, c *cobra.Command)
	walk = func(prefix string, c *cobra.Command) {
		if c.HasSubCommands() {
			for _, sub := range c.Commands() {
				walk(prefix+c.Name()+" ", sub)
			}
			return
		}
		line := prefix + c.Use
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if name, _ := pflag.UnquoteUsage(f); name != "" {
				line += " [--" + f.Name + " <" + name + ">]"
			} else {
				line += " [--" + f.Name + "]"
			}
		})
		fmt.Fprintf(&b, "  %s\n      %s\n", line, c.Short)
	}
	for _, c := range cmds {
		walk("caddy apikeys ", c)
	}
	return b.String()
}

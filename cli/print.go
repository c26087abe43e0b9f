package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

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

func formatOptional(t *wire.Epoch) string {
	if t == nil {
		return "-"
	}
	return formatTime(t.Time())
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

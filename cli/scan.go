package cli

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/leaks"
	"github.com/caddy-apikeys/caddy-apikeys/ops"
)

func scanCommand() *cobra.Command {
	scan := &cobra.Command{
		Use:   "scan [path...]",
		Short: "Finds API keys in files, directories or stdin (-); exit status 1 when any is found",
		Long: `Finds strings that are API keys of this gateway's format (the prefix, 48
base62 characters and a valid checksum: random strings of the same shape are
not reported) in files, in directories (recursively, skipping .git and not
following links met inside) and on stdin ("-", or no path at all). Each key is printed as file:line:column and
its preview, never whole. The exit status is 1 when any key is found, so the
command works as a pre-commit hook and in CI.

With --check, it also says whether each key is live, asking the running
Caddy's admin API (or the store file of --db); only the keys' SHA-256
digests are sent. --revoke also revokes the keys found: they are disabled
for good and listed as leaked, as a secret scanner's alert does.`,
		RunE: runScan,
	}
	scan.Flags().String("prefix", keystore.DefaultPrefix, "The keys' prefix (the gateway's key_prefix)")
	scan.Flags().Bool("check", false, "Say whether each key found is live (admin API, or --db)")
	scan.Flags().Bool("revoke", false, "Revoke the keys found, as leaked (implies --check)")
	return scan
}

// scanFinding is one key found, as scan prints it.
type scanFinding struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Preview string `json:"key_preview"`
	// SHA256 is the key's digest (hex), what the store keeps.
	SHA256 string `json:"sha256"`
	// Status, with --check: active, expired, disabled, leaked, rotated,
	// orphaned, or unknown (not a key of this store).
	Status string `json:"status,omitempty"`
	// KeyID and Owner name the stored key, with --check.
	KeyID  string `json:"key_id,omitempty"`
	Owner  string `json:"owner,omitempty"`
	Source string `json:"source,omitempty"`
	// Revoked is true when this run revoked the key (--revoke).
	Revoked bool `json:"revoked,omitempty"`
}

func runScan(cmd *cobra.Command, args []string) error {
	cmd.SilenceUsage = true
	flags := cmd.Flags()
	prefix, _ := flags.GetString("prefix")
	check, _ := flags.GetBool("check")
	revoke, _ := flags.GetBool("revoke")
	asJSON, _ := flags.GetBool("json")
	if len(args) == 0 {
		args = []string{"-"}
	}
	var findings []scanFinding
	var unreadable int
	for _, path := range args {
		err := scanPath(cmd, path, prefix, func(f scanFinding) { findings = append(findings, f) })
		if err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "%v\n", err)
			unreadable++
		}
	}
	if (check || revoke) && len(findings) > 0 {
		r, err := openRunner(cmd)
		if err != nil {
			return err
		}
		defer r.Close()
		if err := checkFindings(cmd, r, findings, revoke); err != nil {
			return explain(err, r)
		}
	}
	if asJSON {
		if findings == nil {
			findings = []scanFinding{}
		}
		if err := printJSON(cmd, findings); err != nil {
			return err
		}
	} else {
		printFindings(cmd.OutOrStdout(), findings)
	}
	switch {
	case len(findings) > 0:
		return fmt.Errorf("%d API key(s) found", len(findings))
	case unreadable > 0:
		return fmt.Errorf("%d path(s) could not be read", unreadable)
	}
	return nil
}

// scanPath scans a file, a directory's files, or stdin ("-"). A path
// given is followed wherever it leads (a symbolic link, /dev/stdin, a
// pipe); within a directory, only regular files are read and links are
// not followed.
func scanPath(cmd *cobra.Command, path, prefix string, found func(scanFinding)) error {
	if path == "-" {
		return scanReader(cmd.InOrStdin(), "(stdin)", prefix, found)
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return scanFile(path, path, prefix, found)
	}
	// Walk where the path leads, and name files by the path given.
	root, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	var errs []error
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			errs = append(errs, err)
			return nil
		case d.IsDir() && d.Name() == ".git":
			return filepath.SkipDir
		case !d.Type().IsRegular():
			return nil // directories, and symbolic links, devices, …: not followed
		}
		name := p
		if rel, err := filepath.Rel(root, p); err == nil {
			name = filepath.Join(path, rel)
		}
		if err := scanFile(p, name, prefix, found); err != nil {
			errs = append(errs, err)
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// scanFile scans the file at path, naming its findings by name.
func scanFile(path, name, prefix string, found func(scanFinding)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := scanReader(f, name, prefix, found); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func scanReader(r io.Reader, name, prefix string, found func(scanFinding)) error {
	return leaks.ScanKeys(r, prefix, func(f leaks.Found) error {
		h := keystore.HashKey(f.Key)
		found(scanFinding{File: name, Line: f.Line, Column: f.Column,
			Preview: keystore.Preview(f.Key, prefix), SHA256: hex.EncodeToString(h[:])})
		return nil
	})
}

// checkFindings asks the store about the keys found, by digest, and with
// revoke reports them leaked.
func checkFindings(cmd *cobra.Command, r ops.Runner, findings []scanFinding, revoke bool) error {
	var hashes []string
	seen := map[string]bool{}
	for _, f := range findings {
		if !seen[f.SHA256] {
			seen[f.SHA256] = true
			hashes = append(hashes, f.SHA256)
		}
	}
	known := map[string]*ops.Key{}
	for start := 0; start < len(hashes); start += ops.MaxHashes {
		batch := ops.Hashes{Hashes: hashes[start:min(start+ops.MaxHashes, len(hashes))]}
		op := ops.LookupKeys
		if revoke {
			op = ops.ReportLeaked
		}
		keys, err := run(cmd, r, op, batch)
		if err != nil {
			return err
		}
		if len(keys) != len(batch.Hashes) {
			return fmt.Errorf("the store answered %d of %d digests", len(keys), len(batch.Hashes))
		}
		for i, k := range keys {
			known[batch.Hashes[i]] = k
		}
	}
	for i := range findings {
		f := &findings[i]
		k := known[f.SHA256]
		if k == nil {
			f.Status = "unknown"
			continue
		}
		f.Status, f.KeyID, f.Owner, f.Source, f.Revoked = keyStatus(*k), k.ID, k.Owner, k.Source, revoke
	}
	return nil
}

func printFindings(w io.Writer, findings []scanFinding) {
	for _, f := range findings {
		fmt.Fprintf(w, "%s:%d:%d: %s", f.File, f.Line, f.Column, f.Preview)
		switch {
		case f.Status == "unknown":
			fmt.Fprint(w, "  not a key of this store")
		case f.Revoked:
			fmt.Fprintf(w, "  revoked as leaked: key %s of %s", f.KeyID, ownerLabel(f.Owner, f.Source))
		case f.Status != "":
			fmt.Fprintf(w, "  %s: key %s of %s", f.Status, f.KeyID, ownerLabel(f.Owner, f.Source))
		}
		fmt.Fprintln(w)
	}
}

func ownerLabel(name, source string) string {
	if source == "" || source == keystore.SourcePassword {
		return name
	}
	return name + " (" + source + ")"
}

package caddymodule

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-apikeys/caddy-apikeys/boltstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func init() {
	caddy.RegisterModule(BoltStore{})
}

// boltPool shares one bbolt handle per file across overlapping configs:
// on reload Caddy provisions the new config before it cleans up the old
// one, and a second bolt.Open of a locked file would block.
var boltPool = caddy.NewUsagePool()

type boltHandle struct{ *boltstore.Store }

func (h boltHandle) Destruct() error { return h.Close() }

// BoltStore keeps keys and users in an embedded bbolt file. It is the
// default store: nothing to run beside Caddy.
type BoltStore struct {
	// Path of the database file. Placeholders such as {env.*} are
	// expanded. Default: "apikeys.db" in Caddy's data directory.
	Path string `json:"path,omitempty"`

	// How long to wait for the file lock before failing with a clear
	// error (another process holds the file). Default: 5s.
	OpenTimeout caddy.Duration `json:"open_timeout,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (BoltStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "apikeys.stores.bolt",
		New: func() caddy.Module { return new(BoltStore) },
	}
}

// DefaultBoltPath returns where the bbolt store lives unless configured.
func DefaultBoltPath() string { return filepath.Join(caddy.AppDataDir(), "apikeys.db") }

// resolvedPath returns the absolute path that keys the pool.
func (b *BoltStore) resolvedPath() (string, error) {
	p := caddy.NewReplacer().ReplaceKnown(b.Path, "")
	if p == "" {
		p = DefaultBoltPath()
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("bolt store path %q: %w", p, err)
	}
	return abs, nil
}

// Open acquires the shared handle for the configured file, opening it on
// first use.
func (b *BoltStore) Open() (keystore.Store, func() error, error) {
	path, err := b.resolvedPath()
	if err != nil {
		return nil, nil, err
	}
	val, _, err := boltPool.LoadOrNew(path, func() (caddy.Destructor, error) {
		s, err := boltstore.Open(path, time.Duration(b.OpenTimeout))
		if err != nil {
			return nil, err
		}
		return boltHandle{s}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	release := func() error {
		_, err := boltPool.Delete(path)
		return err
	}
	return val.(boltHandle).Store, release, nil
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens. Syntax:
//
//	store bolt [<path>] {
//	    path         <path>
//	    open_timeout <duration>
//	}
func (b *BoltStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // store name
	if d.NextArg() {
		b.Path = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "path":
			if !d.AllArgs(&b.Path) {
				return d.ArgErr()
			}
		case "open_timeout":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("open_timeout: %v", err)
			}
			b.OpenTimeout = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized bolt store option '%s'", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ StoreOpener           = (*BoltStore)(nil)
	_ CreditLedger          = (*BoltStore)(nil)
	_ caddyfile.Unmarshaler = (*BoltStore)(nil)
)

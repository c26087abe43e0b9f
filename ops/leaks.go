package ops

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/internal/audit"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// MaxHashes bounds the digests one lookup or leak report names (the CLI
// sends larger sets in batches).
const MaxHashes = 500

// Hashes names keys by their digests, the hex SHA-256 of the whole key,
// so that finding or revoking a key does not send the key.
type Hashes struct {
	Hashes []string `json:"hashes"`
	// DisableOnly, in leak reports, disables the keys instead of marking
	// them leaked (an operator may enable them again).
	DisableOnly bool `json:"disable_only,omitempty"`
}

func (req Hashes) digests() ([]keystore.Hash, error) {
	if len(req.Hashes) > MaxHashes {
		return nil, wire.Fail(http.StatusBadRequest, fmt.Sprintf("at most %d hashes at a time", MaxHashes))
	}
	out := make([]keystore.Hash, len(req.Hashes))
	for i, s := range req.Hashes {
		if len(s) != hex.EncodedLen(len(out[i])) {
			return nil, wire.Fail(http.StatusBadRequest, fmt.Sprintf("hash %d is not a hex SHA-256", i))
		}
		if _, err := hex.Decode(out[i][:], []byte(s)); err != nil {
			return nil, wire.Fail(http.StatusBadRequest, fmt.Sprintf("hash %d is not a hex SHA-256", i))
		}
	}
	return out, nil
}

// The operations on keys by digest.
var (
	// LookupKeys finds, for each digest, the key it names, or null.
	LookupKeys = register(&Op[Hashes, []*Key]{Name: "look keys up by digest", Method: http.MethodPost, Path: "keys/lookup",
		Run: func(ctx context.Context, env *Env, req Hashes) ([]*Key, error) {
			hashes, err := req.digests()
			if err != nil {
				return nil, err
			}
			keys, err := env.Keyring.KeysByHash(ctx, hashes)
			if err != nil {
				return nil, err
			}
			out := make([]*Key, len(hashes))
			for i, k := range keys {
				if k.ID == "" {
					continue
				}
				view, err := keyView(ctx, env.Keyring, k)
				if err != nil {
					return nil, err
				}
				out[i] = &view
			}
			return out, nil
		}})

	// ReportLeaked revokes the keys the digests name as leaked (or only
	// disables them), as a secret scanner's alert does; null for digests
	// that name no key.
	ReportLeaked = register(&Op[Hashes, []*Key]{Name: "report keys leaked", Method: http.MethodPost, Path: "keys/leaked",
		Run: func(ctx context.Context, env *Env, req Hashes) ([]*Key, error) {
			hashes, err := req.digests()
			if err != nil {
				return nil, err
			}
			action := "revoke"
			if req.DisableOnly {
				action = "disable"
			}
			reports, err := env.Keyring.ReportLeakedHashes(ctx, hashes, req.DisableOnly)
			if err != nil {
				return nil, err
			}
			out := make([]*Key, len(hashes))
			for i, rep := range reports {
				if !rep.Found {
					continue
				}
				env.count(func(c Counters) { c.Leaked(1) })
				if rep.Changed {
					env.event("key leaked", audit.OwnerFields(rep.Key.Owner, zap.String("key_id", rep.Key.ID), zap.String("action", action))...)
					env.notify(ctx, notify.KeyEvent(notify.KeyLeaked, rep.Key, "action", action, "via", env.Via))
				}
				out[i] = &Key{KeyView: wire.NewKeyView(rep.Key), Owner: rep.Key.Owner.Name, Source: rep.Key.Owner.Source}
			}
			return out, nil
		}})
)

package caddymodule

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
)

// maxHashesPerCall bounds the digests one lookup or leak report names
// (the CLI sends larger sets in batches).
const maxHashesPerCall = 500

// hashesRequest names keys by their digests, the hex SHA-256 of the
// whole key, so that finding or revoking a key does not send the key.
type hashesRequest struct {
	Hashes []string `json:"hashes"`
	// DisableOnly, in leak reports, disables the keys instead of marking
	// them leaked (an operator may enable them again).
	DisableOnly bool `json:"disable_only,omitempty"`
}

func (req hashesRequest) digests() ([]keystore.Hash, error) {
	if len(req.Hashes) > maxHashesPerCall {
		return nil, fail(http.StatusBadRequest, fmt.Sprintf("at most %d hashes at a time", maxHashesPerCall))
	}
	out := make([]keystore.Hash, len(req.Hashes))
	for i, s := range req.Hashes {
		if len(s) != hex.EncodedLen(len(out[i])) {
			return nil, fail(http.StatusBadRequest, fmt.Sprintf("hash %d is not a hex SHA-256", i))
		}
		if _, err := hex.Decode(out[i][:], []byte(s)); err != nil {
			return nil, fail(http.StatusBadRequest, fmt.Sprintf("hash %d is not a hex SHA-256", i))
		}
	}
	return out, nil
}

// lookupKeys returns, for each digest, the key it names, or nil.
func (o operator) lookupKeys(ctx context.Context, req hashesRequest) ([]*adminKey, error) {
	hashes, err := req.digests()
	if err != nil {
		return nil, err
	}
	keys, err := o.keyring.KeysByHash(ctx, hashes)
	if err != nil {
		return nil, err
	}
	out := make([]*adminKey, len(hashes))
	for i, k := range keys {
		if k.ID == "" {
			continue
		}
		view, err := o.listOne(ctx, k)
		if err != nil {
			return nil, err
		}
		out[i] = &view
	}
	return out, nil
}

// reportLeaked revokes the keys the digests name as leaked (or only
// disables them), as a secret scanner's alert does; nil for digests that
// name no key.
func (o operator) reportLeaked(ctx context.Context, req hashesRequest) ([]*adminKey, error) {
	hashes, err := req.digests()
	if err != nil {
		return nil, err
	}
	action := "revoke"
	if req.DisableOnly {
		action = "disable"
	}
	reports, err := o.keyring.ReportLeakedHashes(ctx, hashes, req.DisableOnly)
	if err != nil {
		return nil, err
	}
	out := make([]*adminKey, len(hashes))
	for i, rep := range reports {
		if !rep.Found {
			continue
		}
		if o.metrics != nil {
			o.metrics.leaks.WithLabelValues("true_positive").Inc()
		}
		if rep.Changed {
			o.event("key leaked", ownerFields(rep.Key.Owner, zap.String("key_id", rep.Key.ID), zap.String("action", action))...)
			o.notify(ctx, keyEvent(notify.KeyLeaked, rep.Key, "action", action, "via", o.via))
		}
		view := newAdminKey(rep.Key)
		out[i] = &view
	}
	return out, nil
}

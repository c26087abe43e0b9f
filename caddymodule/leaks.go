package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/internal/audit"
	"github.com/caddy-apikeys/caddy-apikeys/leaks"
	"github.com/caddy-apikeys/caddy-apikeys/notify"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

func init() {
	caddy.RegisterModule(LeakHandler{})
}

// DefaultLeakBodyBytes bounds an alert's body.
const DefaultLeakBodyBytes = 1 << 20

// LeakHandler receives secret scanners' reports of keys found in public,
// in GitHub's secret-scanning partner format: a POSTed JSON array of
// {"token", "type", "url", "source"}, signed (ECDSA P-256, SHA-256) with
// the key named by the Github-Public-Key-Identifier header, the base64
// signature in Github-Public-Key-Signature. Each token that is one of
// the store's keys is disabled at once, on every gateway sharing the
// store, and marked leaked (it cannot be enabled or rotated again); the
// answer labels each match true_positive or false_positive by the
// SHA-256 of its token. An alert without a valid signature gets 401 and
// changes nothing.
type LeakHandler struct {
	// Where the scanner publishes its signing keys (GitHub's format).
	// https, or http to loopback. Default: GitHub's,
	// https://api.github.com/meta/public_keys/secret_scanning.
	PublicKeysURL string `json:"public_keys_url,omitempty"`

	// How often the signing keys are fetched again. An alert signed with
	// a key not seen yet fetches them at once, at most once a minute.
	// Default: 1h.
	Refresh caddy.Duration `json:"refresh,omitempty"`

	// What becomes of a leaked key: "revoke" (disabled for good, listed
	// as leaked) or "disable" (an operator may enable it again after
	// review). Default: revoke.
	OnLeak string `json:"on_leak,omitempty"`

	// Largest alert body accepted, in bytes; larger ones get 413.
	// Default: 1048576.
	MaxBodyBytes int64 `json:"max_body_bytes,omitempty"`

	app    *App
	keys   *leaks.Keys
	cancel context.CancelFunc
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (LeakHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikeys_leaks",
		New: func() caddy.Module { return new(LeakHandler) },
	}
}

// Provision starts fetching the scanner's keys.
func (h *LeakHandler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	switch h.OnLeak {
	case "":
		h.OnLeak = "revoke"
	case "revoke", "disable":
	default:
		return fmt.Errorf(`on_leak: %q is neither "revoke" nor "disable"`, h.OnLeak)
	}
	if h.MaxBodyBytes <= 0 {
		h.MaxBodyBytes = DefaultLeakBodyBytes
	}
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	h.app = app
	fetchCtx, cancel := context.WithCancel(context.Background())
	keys, err := leaks.NewKeys(fetchCtx, leaks.KeysConfig{
		URL:     caddy.NewReplacer().ReplaceKnown(h.PublicKeysURL, ""),
		Refresh: time.Duration(h.Refresh), // 0: leaks.DefaultKeysRefresh
		OnError: func(err error) { h.logger.Warn("fetching the secret scanner's keys", zap.Error(err)) },
	})
	if err != nil {
		cancel()
		return fmt.Errorf("public_keys_url: %w", err)
	}
	h.keys, h.cancel = keys, cancel
	return nil
}

// Cleanup stops fetching the scanner's keys.
func (h *LeakHandler) Cleanup() error {
	if h.cancel != nil {
		h.cancel()
		<-h.keys.Done()
	}
	return nil
}

// ServeHTTP answers an alert.
func (h *LeakHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return wire.WriteError(w, wire.Fail(http.StatusMethodNotAllowed, "alerts are POSTed"))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return wire.WriteError(w, wire.Fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("alert larger than %d bytes", h.MaxBodyBytes)))
	case err != nil:
		return wire.WriteError(w, wire.Fail(http.StatusBadRequest, "reading the alert failed"))
	}
	if err := h.keys.Verify(body, r.Header.Get("Github-Public-Key-Identifier"), r.Header.Get("Github-Public-Key-Signature")); err != nil {
		h.logger.Warn("secret-scanning alert refused: bad signature", zap.String("remote_addr", r.RemoteAddr),
			zap.String("key_identifier", r.Header.Get("Github-Public-Key-Identifier")))
		return wire.WriteError(w, wire.Fail(http.StatusUnauthorized, err.Error()))
	}
	alerts, err := leaks.ParseAlerts(body)
	if err != nil {
		return wire.WriteError(w, wire.Fail(http.StatusBadRequest, err.Error()))
	}
	feedback := make([]leaks.Feedback, 0, len(alerts))
	var leaked []notify.Event
	for _, a := range alerts {
		rep, err := h.app.keyring.ReportLeak(r.Context(), a.Token, h.OnLeak == "disable")
		if err != nil {
			// Not answered: the scanner sends the alert again.
			h.logger.Error("key store failure while revoking a leaked key", zap.Error(err))
			return wire.WriteError(w, wire.Unavailable)
		}
		label := leaks.FalsePositive
		if rep.Found {
			label = leaks.TruePositive
		}
		if rep.Changed { // a report of what already was so tells nothing new
			k := rep.Key
			h.app.audit.Info("key leaked", audit.OwnerFields(k.Owner, zap.String("key_id", k.ID), zap.String("action", h.OnLeak),
				zap.String("found_at", a.URL), zap.String("found_in", a.Source), zap.String("via", "secret_scanning"),
				zap.String("remote_addr", r.RemoteAddr))...)
			leaked = append(leaked, notify.KeyEvent(notify.KeyLeaked, k, "action", h.OnLeak, "found_at", a.URL, "found_in", a.Source, "via", "secret_scanning"))
		}
		h.app.metrics.leaks.WithLabelValues(label).Inc()
		feedback = append(feedback, leaks.FeedbackFor(a, label))
	}
	h.app.publish(r.Context(), leaked...)
	return wire.WriteJSON(w, http.StatusOK, feedback)
}

// parseLeakHandler sets up an alert endpoint. Syntax:
//
//	apikeys_leaks [<matcher>] {
//	    public_keys_url <url>
//	    refresh         <duration>
//	    on_leak         revoke|disable
//	    max_body_bytes  <n>
//	}
func parseLeakHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // directive name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	var handler LeakHandler
	for h.NextBlock(0) {
		switch h.Val() {
		case "public_keys_url":
			if !h.AllArgs(&handler.PublicKeysURL) {
				return nil, h.ArgErr()
			}
		case "refresh":
			d, err := durationArg(h.Dispenser)
			if err != nil {
				return nil, err
			}
			handler.Refresh = d
		case "on_leak":
			if !h.AllArgs(&handler.OnLeak) {
				return nil, h.ArgErr()
			}
			if handler.OnLeak != "revoke" && handler.OnLeak != "disable" {
				return nil, h.Errf(`on_leak: %q is neither "revoke" nor "disable"`, handler.OnLeak)
			}
		case "max_body_bytes":
			n, err := intArg(h.Dispenser)
			if err != nil {
				return nil, err
			}
			handler.MaxBodyBytes = int64(n)
		default:
			return nil, h.Errf("unrecognized apikeys_leaks option '%s'", h.Val())
		}
	}
	return &handler, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*LeakHandler)(nil)
	_ caddy.CleanerUpper          = (*LeakHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*LeakHandler)(nil)
)

package leaks

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
)

// DefaultKeysURL is where GitHub publishes the keys that sign its
// secret-scanning alerts.
const DefaultKeysURL = "https://api.github.com/meta/public_keys/secret_scanning"

// Defaults of KeysConfig.
const (
	DefaultKeysRefresh    = time.Hour
	DefaultUnknownRefresh = time.Minute
	DefaultFetchTimeout   = 5 * time.Second
	maxKeysBody           = 1 << 20
	maxKeyIDLen           = 256
)

// ErrBadSignature means an alert is not signed by a key the scanner
// publishes.
var ErrBadSignature = errors.New("the alert's signature is missing or does not verify")

// KeysConfig says where a scanner publishes its signing keys.
type KeysConfig struct {
	// URL of the list, GitHub's format: {"public_keys": [{"key_identifier",
	// "key" (PEM), "is_current"}]}. https, or http to loopback.
	URL string
	// Refresh is how often the list is fetched again.
	Refresh time.Duration
	// UnknownRefresh bounds the fetches an unknown key identifier may
	// cause: at most one per interval.
	UnknownRefresh time.Duration
	// Client fetches the list; its CheckRedirect is replaced.
	Client *http.Client
	// OnError, if set, is told when a fetch fails.
	OnError func(error)
}

// Keys are a scanner's signing keys, fetched in the background.
type Keys struct {
	cfg     KeysConfig
	ctx     context.Context
	current atomic.Pointer[map[string]*ecdsa.PublicKey]
	limiter *rate.Limiter
	fetchMu sync.Mutex    // one fetch at a time
	fetched chan struct{} // closed when the first fetch has ended
	done    chan struct{}
}

// NewKeys starts fetching the keys until ctx ends.
func NewKeys(ctx context.Context, cfg KeysConfig) (*Keys, error) {
	if cfg.URL == "" {
		cfg.URL = DefaultKeysURL
	}
	if err := identity.CheckFetchURL(cfg.URL); err != nil {
		return nil, err
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultKeysRefresh
	}
	if cfg.UnknownRefresh <= 0 {
		cfg.UnknownRefresh = DefaultUnknownRefresh
	}
	client := &http.Client{Timeout: DefaultFetchTimeout}
	if cfg.Client != nil {
		*client = *cfg.Client
	}
	client.CheckRedirect = identity.RefuseUnsafeRedirects
	cfg.Client = client
	k := &Keys{cfg: cfg, ctx: ctx, limiter: rate.NewLimiter(rate.Every(cfg.UnknownRefresh), 1),
		fetched: make(chan struct{}), done: make(chan struct{})}
	empty := map[string]*ecdsa.PublicKey{}
	k.current.Store(&empty)
	go k.run()
	return k, nil
}

// Done is closed when the background fetcher has stopped.
func (k *Keys) Done() <-chan struct{} { return k.done }

func (k *Keys) run() {
	defer close(k.done)
	t := time.NewTicker(k.cfg.Refresh)
	defer t.Stop()
	k.fetchAndReport()
	close(k.fetched)
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-t.C:
			k.fetchAndReport()
		}
	}
}

func (k *Keys) fetchAndReport() {
	if err := k.fetch(); err != nil && k.cfg.OnError != nil && k.ctx.Err() == nil {
		k.cfg.OnError(err)
	}
}

// Verify checks that sig (base64, ASN.1 ECDSA) signs body with the key
// named id. An unknown id fetches the list again first, at most once per
// UnknownRefresh.
func (k *Keys) Verify(body []byte, id, sig string) error {
	if id == "" || len(id) > maxKeyIDLen || sig == "" {
		return ErrBadSignature
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return ErrBadSignature
	}
	// An alert that arrives as the gateway starts waits for the first
	// fetch rather than spending the unknown-identifier budget.
	select {
	case <-k.fetched:
	case <-k.ctx.Done():
		return ErrBadSignature
	}
	pub := (*k.current.Load())[id]
	if pub == nil && k.limiter.Allow() {
		k.fetchAndReport()
		pub = (*k.current.Load())[id]
	}
	sum := sha256.Sum256(body)
	if pub == nil || !ecdsa.VerifyASN1(pub, sum[:], raw) {
		return ErrBadSignature
	}
	return nil
}

// keyList is the scanner's published list.
type keyList struct {
	PublicKeys []struct {
		ID  string `json:"key_identifier"`
		Key string `json:"key"`
	} `json:"public_keys"`
}

// fetch loads the list and swaps it in whole; keys it cannot use (not
// ECDSA P-256) are left out, and a list without any usable key is an
// error that leaves the keys known in place.
func (k *Keys) fetch() error {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	ctx, cancel := context.WithTimeout(k.ctx, DefaultFetchTimeout)
	defer cancel()
	body, err := identity.FetchBounded(ctx, k.cfg.Client, k.cfg.URL, maxKeysBody)
	if err != nil {
		return fmt.Errorf("scanner keys: %w", err)
	}
	var list keyList
	if err := strictjson.Unmarshal(body, &list); err != nil {
		return fmt.Errorf("scanner keys from %s: %w", k.cfg.URL, err)
	}
	keys := make(map[string]*ecdsa.PublicKey, len(list.PublicKeys))
	for _, e := range list.PublicKeys {
		if pub := parseP256(e.Key); pub != nil && e.ID != "" {
			keys[e.ID] = pub
		}
	}
	if len(keys) == 0 {
		// A scanner always has a key: an empty list is a fault of the
		// source, and keeping the keys known keeps alerts working.
		return fmt.Errorf("scanner keys from %s: no usable ECDSA P-256 key in the list; keeping the keys known", k.cfg.URL)
	}
	k.current.Store(&keys)
	return nil
}

func parseP256(p string) *ecdsa.PublicKey {
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		return nil
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil
	}
	return ec
}

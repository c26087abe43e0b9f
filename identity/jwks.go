package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"golang.org/x/time/rate"
)

// JWKS defaults.
const (
	DefaultJWKSRefresh   = 10 * time.Minute
	DefaultJWKSTimeout   = 5 * time.Second
	DefaultUnknownKIDGap = 30 * time.Second
	maxKIDLen            = 256
	maxDiscoveryBytes    = 1 << 20
)

// JWKSConfig says where a JWK Set comes from.
type JWKSConfig struct {
	// URL of the JWK Set. Either it or Issuer (for OIDC discovery) is set.
	URL string
	// Issuer whose /.well-known/openid-configuration names the JWK Set.
	DiscoverFrom string
	// Refresh is how often the set is fetched again. Default 10 minutes.
	Refresh time.Duration
	// UnknownKIDRefresh is the shortest time between the extra fetches that
	// tokens with an unknown key id cause. Default 30 seconds.
	UnknownKIDRefresh time.Duration
	// Timeout bounds each fetch. Default 5 seconds.
	Timeout time.Duration
	// Client makes the requests. Default: a client with Timeout.
	Client *http.Client
	// OnError, if set, is told of failed fetches.
	OnError func(error)
}

// JWKSSource keeps a JWK Set fetched in the background. Requests never
// wait for the network: a token whose key id is not known yet is refused
// at once, and starts (at most every UnknownKIDRefresh) a fetch in the
// background, so that the signing keys of a rotation are picked up.
type JWKSSource struct {
	cfg     JWKSConfig
	ctx     context.Context
	current atomic.Pointer[jwkset.MemoryJWKSet]
	limiter *rate.Limiter
	kick    chan struct{}
	done    chan struct{}
	url     atomic.Pointer[string]
}

// NewJWKSSource starts fetching in the background until ctx ends. It does
// not wait for the first fetch.
func NewJWKSSource(ctx context.Context, cfg JWKSConfig) (*JWKSSource, error) {
	if (cfg.URL == "") == (cfg.DiscoverFrom == "") {
		return nil, errors.New("give exactly one of a JWKS URL and an issuer to discover it from")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultJWKSRefresh
	}
	if cfg.UnknownKIDRefresh <= 0 {
		cfg.UnknownKIDRefresh = DefaultUnknownKIDGap
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultJWKSTimeout
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout}
	}
	s := &JWKSSource{cfg: cfg, ctx: ctx,
		limiter: rate.NewLimiter(rate.Every(cfg.UnknownKIDRefresh), 1),
		kick:    make(chan struct{}, 1), done: make(chan struct{})}
	if cfg.URL != "" {
		u := cfg.URL
		s.url.Store(&u)
	}
	empty := jwkset.NewMemoryStorage()
	s.current.Store(empty)
	go s.run()
	return s, nil
}

// Done is closed when the background fetcher has stopped.
func (s *JWKSSource) Done() <-chan struct{} { return s.done }

// Key returns the key with the given id and its "alg" ("" if the set
// does not pin one). An unknown id is an error and schedules a fetch.
func (s *JWKSSource) Key(kid string) (any, string, error) {
	if kid == "" || len(kid) > maxKIDLen {
		return nil, "", errors.New("token has no usable key id")
	}
	jwk, err := s.current.Load().KeyRead(s.ctx, kid)
	if errors.Is(err, jwkset.ErrKeyNotFound) {
		if s.limiter.Allow() {
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
		return nil, "", errors.New("token signed with an unknown key")
	}
	if err != nil {
		return nil, "", err
	}
	return jwk.Key(), string(jwk.Marshal().ALG), nil
}

func (s *JWKSSource) run() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Refresh)
	defer t.Stop()
	retry := time.NewTimer(0) // first fetch now
	defer retry.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		case <-retry.C:
		}
		if err := s.fetch(); err != nil {
			if s.cfg.OnError != nil {
				s.cfg.OnError(err)
			}
			retry.Reset(min(s.cfg.UnknownKIDRefresh, s.cfg.Refresh))
		}
	}
}

// fetch loads the set (discovering its URL first if needed) and swaps it
// in whole, so that readers see either the old set or the new one.
func (s *JWKSSource) fetch() error {
	url := s.url.Load()
	if url == nil {
		u, err := s.discover()
		if err != nil {
			return err
		}
		s.url.Store(&u)
		url = &u
	}
	body, err := s.get(*url)
	if err != nil {
		return err
	}
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(body, &set); err != nil {
		return fmt.Errorf("JWK Set from %s: %w", *url, err)
	}
	store := jwkset.NewMemoryStorage()
	for _, m := range set.Keys {
		jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			continue // a key this library cannot use; the others still can be
		}
		if err := store.KeyWrite(s.ctx, jwk); err != nil {
			return err
		}
	}
	s.current.Store(store)
	return nil
}

func (s *JWKSSource) discover() (string, error) {
	base := strings.TrimSuffix(s.cfg.DiscoverFrom, "/")
	body, err := s.get(base + "/.well-known/openid-configuration")
	if err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.JWKSURI == "" {
		return "", fmt.Errorf("OIDC discovery at %s: no jwks_uri", base)
	}
	if strings.TrimSuffix(doc.Issuer, "/") != base {
		return "", fmt.Errorf("OIDC discovery at %s names another issuer, %q", base, doc.Issuer)
	}
	return doc.JWKSURI, nil
}

func (s *JWKSSource) get(url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := s.cfg.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: %s", url, res.Status)
	}
	return io.ReadAll(io.LimitReader(res.Body, maxDiscoveryBytes))
}

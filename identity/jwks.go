package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"golang.org/x/time/rate"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
)

// JWKS defaults.
const (
	DefaultJWKSRefresh    = 10 * time.Minute
	DefaultJWKSTimeout    = 5 * time.Second
	DefaultUnknownKIDGap  = time.Second
	DefaultUnknownKIDWait = time.Second
	maxKIDLen             = 256
	maxDiscoveryBytes     = 1 << 20
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
	// tokens with an unknown key id cause. Default 1 second: a client whose
	// token carries the key of a rotation then waits for the next fetch at
	// most UnknownKIDWait, even while made-up key ids use up every fetch
	// they can.
	UnknownKIDRefresh time.Duration
	// UnknownKIDWait is the longest a token with an unknown key id waits
	// for the fetch it caused (or the one in flight) before it is
	// refused. Default 1 second.
	UnknownKIDWait time.Duration
	// Timeout bounds each fetch. Default 5 seconds.
	Timeout time.Duration
	// Client makes the requests. Default: a client with Timeout.
	Client *http.Client
	// OnError, if set, is told of failed fetches.
	OnError func(error)
}

// JWKSSource keeps a JWK Set fetched in the background. A token whose key
// id is not known yet waits, at most UnknownKIDWait, for a fresh copy of
// the set: the fetch already in flight if there is one, else a new one,
// of which there is at most one per UnknownKIDRefresh, so that the first
// tokens signed after a key rotation at the issuer are accepted while
// made-up key ids cannot make the gateway fetch more often. A set that
// cannot be fetched never holds a request longer than UnknownKIDWait.
type JWKSSource struct {
	cfg     JWKSConfig
	ctx     context.Context
	current atomic.Pointer[jwkset.MemoryJWKSet]
	limiter *rate.Limiter
	kick    chan struct{}
	done    chan struct{}
	url     atomic.Pointer[string]
	// gen counts the sets fetched with other content than the one
	// before, so that verifications cached under older keys are redone.
	gen      atomic.Uint64
	lastBody [32]byte

	// Waiters for a fresh set: next is closed when the fetch after the
	// one in flight ends, inflight when the one in flight ends; nil when
	// there is none.
	mu       sync.Mutex
	next     chan struct{}
	inflight chan struct{}
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
	if cfg.UnknownKIDWait <= 0 {
		cfg.UnknownKIDWait = DefaultUnknownKIDWait
	}
	for _, u := range []string{cfg.URL, cfg.DiscoverFrom} {
		if u != "" {
			if err := CheckFetchURL(u); err != nil {
				return nil, err
			}
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultJWKSTimeout
	}
	client := &http.Client{Timeout: cfg.Timeout}
	if cfg.Client != nil {
		client = new(http.Client)
		*client = *cfg.Client
	}
	client.CheckRedirect = RefuseUnsafeRedirects
	cfg.Client = client
	s := &JWKSSource{cfg: cfg, ctx: ctx,
		limiter: rate.NewLimiter(rate.Every(cfg.UnknownKIDRefresh), 1),
		kick:    make(chan struct{}, 1), done: make(chan struct{})}
	if cfg.URL != "" {
		u := cfg.URL
		s.url.Store(&u)
	}
	empty := jwkset.NewMemoryStorage()
	s.current.Store(empty)
	s.next = make(chan struct{}) // the first fetch is due now
	go s.run()
	return s, nil
}

// Done is closed when the background fetcher has stopped.
func (s *JWKSSource) Done() <-chan struct{} { return s.done }

// Key returns the key with the given id and its "alg" ("" if the set
// does not pin one). An unknown id waits for a fresh set as JWKSSource
// describes, and is an error if that set does not have it either.
func (s *JWKSSource) Key(ctx context.Context, kid string) (any, string, error) {
	if kid == "" || len(kid) > maxKIDLen {
		return nil, "", errors.New("token has no usable key id")
	}
	jwk, err := s.current.Load().KeyRead(s.ctx, kid)
	if errors.Is(err, jwkset.ErrKeyNotFound) {
		if fresh := s.freshSet(); fresh != nil {
			timer := time.NewTimer(s.cfg.UnknownKIDWait)
			select {
			case <-fresh:
			case <-timer.C:
			case <-ctx.Done():
			}
			timer.Stop()
			jwk, err = s.current.Load().KeyRead(s.ctx, kid)
		}
	}
	if errors.Is(err, jwkset.ErrKeyNotFound) {
		return nil, "", errors.New("token signed with an unknown key")
	}
	if err != nil {
		return nil, "", err
	}
	return jwk.Key(), string(jwk.Marshal().ALG), nil
}

// freshSet returns a channel closed when a fetch that began after this
// call (or is in flight now) ends: one already due, the one in flight, or
// a new one, which may start once UnknownKIDRefresh has passed since the
// last; the caller waits at most UnknownKIDWait for it. It returns nil
// when no fetch can start within that wait.
func (s *JWKSSource) freshSet() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.next != nil:
		return s.next
	case s.inflight != nil:
		return s.inflight
	}
	r := s.limiter.Reserve()
	delay := r.Delay()
	if delay > s.cfg.UnknownKIDWait {
		r.Cancel()
		return nil
	}
	s.next = make(chan struct{})
	kick := func() {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if delay == 0 {
		kick()
	} else {
		time.AfterFunc(delay, kick)
	}
	return s.next
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
		s.mu.Lock()
		s.inflight, s.next = s.next, nil
		if s.inflight == nil {
			s.inflight = make(chan struct{})
		}
		s.mu.Unlock()
		err := s.fetch()
		s.mu.Lock()
		close(s.inflight)
		s.inflight = nil
		s.mu.Unlock()
		if err != nil {
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
	sum := sha256.Sum256(body)
	changed := sum != s.lastBody
	var set jwkset.JWKSMarshal
	if err := strictjson.Unmarshal(body, &set); err != nil {
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
	if changed { // after the store: a verification that read the old set
		s.lastBody = sum // took the generation before, and is voided
		s.gen.Add(1)
	}
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
	if err := strictjson.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("OIDC discovery at %s: %w", base, err)
	}
	if doc.JWKSURI == "" {
		return "", fmt.Errorf("OIDC discovery at %s: no jwks_uri", base)
	}
	if strings.TrimSuffix(doc.Issuer, "/") != base {
		return "", fmt.Errorf("OIDC discovery at %s names another issuer, %q", base, doc.Issuer)
	}
	if err := CheckFetchURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("OIDC discovery at %s: jwks_uri: %w", base, err)
	}
	return doc.JWKSURI, nil
}

func (s *JWKSSource) get(url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	return FetchBounded(ctx, s.cfg.Client, url, maxDiscoveryBytes)
}

// FetchBounded GETs url with client and returns at most limit bytes of
// a 200 answer; any other status is an error.
func FetchBounded(ctx context.Context, client *http.Client, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: %s", url, res.Status)
	}
	return io.ReadAll(io.LimitReader(res.Body, limit))
}

// CheckFetchURL accepts https URLs, and http ones only to a loopback
// host: keys fetched in the clear could be swapped by anyone on the path.
func CheckFetchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL %q: %v", raw, err)
	}
	switch {
	case u.Host == "":
		return fmt.Errorf("URL %q has no host", raw)
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	}
	return fmt.Errorf("URL %q must use https (plain http is allowed only to a loopback address)", raw)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// RefuseUnsafeRedirects, an http.Client's CheckRedirect, follows
// redirects only to URLs CheckFetchURL accepts, and never from https to
// http.
func RefuseUnsafeRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("too many redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing a redirect from https to %s", req.URL.Redacted())
	}
	return CheckFetchURL(req.URL.String())
}

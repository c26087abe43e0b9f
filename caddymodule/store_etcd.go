package caddymodule

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-apikeys/caddy-apikeys/etcdstore"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func init() {
	caddy.RegisterModule(EtcdStore{})
}

// EtcdStore keeps keys and users in an etcd v3 cluster shared by several
// gateways. Each gateway caches key lookups and follows the cluster
// through a watch, so a key revoked on one gateway is refused by all of
// them as soon as the change arrives (milliseconds on a healthy cluster).
//
// When the cluster cannot be reached, minting and other writes fail with
// 503, unknown keys are refused, and keys this gateway verified recently
// keep working for max_stale after the watch last caught up; then they are
// refused too until the cluster answers again.
type EtcdStore struct {
	// Client URLs of the cluster's members, e.g. "https://10.0.0.1:2379".
	// Placeholders such as {env.*} are expanded. Required.
	Endpoints []string `json:"endpoints,omitempty"`

	// Prefix of every etcd key the store writes; gateways that share
	// keys use the same prefix, separate deployments different ones.
	// Default: "/caddy-apikeys/".
	Prefix string `json:"prefix,omitempty"`

	// Username and password for etcd's authentication, if enabled.
	// Placeholders are expanded, so the password may come from
	// {env.ETCD_PASSWORD} or {file./run/secrets/etcd}.
	Username string `json:"username,omitempty"`
	// See Username.
	Password string `json:"password,omitempty"`

	// TLS to the cluster: a CA to trust and a client certificate to
	// present. Default: none for http:// endpoints; for https:// ones,
	// the system's roots and no client certificate.
	TLS *EtcdTLS `json:"tls,omitempty"`

	// How long startup waits for the cluster to answer before failing
	// with a clear error, and how long each later try to connect to a
	// member may take (tries follow each other at most 1s apart).
	// Default: 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// Bound on each etcd request; a write that cannot complete in time
	// is answered with 503. Default: 3s.
	RequestTimeout caddy.Duration `json:"request_timeout,omitempty"`

	// How long keys verified recently keep working after this gateway
	// lost touch with the cluster (more exactly, after its watch last
	// confirmed it had every change). It is the longest a revoked key can
	// still be accepted here during an outage. Default: 15s.
	MaxStale caddy.Duration `json:"max_stale,omitempty"`

	// How the gateways sharing the cluster divide each rate limit:
	// "follow_load" (the default) gives a gateway that runs short of its
	// part what the others do not use, through a small table per busy
	// limit written a few times a second at most; "equal" keeps every
	// gateway at an equal part (100/10s on three gateways: 34 + 33 +
	// 33), which never writes. Either way the gateways together admit
	// at most the limit in any window while their membership is steady.
	// Read when the gateway starts; a reload does not change it.
	// Default: "follow_load".
	RateShares string `json:"rate_shares,omitempty"`

	logger, clientLogger *zap.Logger
}

// EtcdTLS configures TLS to etcd.
type EtcdTLS struct {
	// PEM file of the CA that signed the members' certificates; the
	// system roots are used if empty.
	CAFile string `json:"ca_file,omitempty"`
	// PEM files of the client certificate and its key, for clusters that
	// require client certificates.
	CertFile string `json:"cert_file,omitempty"`
	// See CertFile.
	KeyFile string `json:"key_file,omitempty"`
	// Name to verify in the members' certificates, if it is not the
	// endpoint's host.
	ServerName string `json:"server_name,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (EtcdStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "apikeys.stores.etcd",
		New: func() caddy.Module { return new(EtcdStore) },
	}
}

// Provision keeps the logger for the etcd client.
func (e *EtcdStore) Provision(ctx caddy.Context) error {
	e.logger = ctx.Logger()
	// The client logs every retry at warn level; while the cluster is
	// down that would flood the log with one line per request.
	e.clientLogger = e.logger.Named("client").WithOptions(zap.IncreaseLevel(zapcore.ErrorLevel))
	return nil
}

// Validate checks the configuration.
func (e *EtcdStore) Validate() error {
	if len(e.Endpoints) == 0 {
		return errors.New("etcd store: at least one endpoint is required")
	}
	if e.TLS != nil && (e.TLS.CertFile == "") != (e.TLS.KeyFile == "") {
		return errors.New("etcd store: tls cert_file and key_file go together")
	}
	if e.Password != "" && e.Username == "" {
		return errors.New("etcd store: password without username")
	}
	switch e.RateShares {
	case "", rateSharesFollowLoad, rateSharesEqual:
	default:
		return fmt.Errorf("etcd store: rate_shares: want %s or %s, got %q", rateSharesFollowLoad, rateSharesEqual, e.RateShares)
	}
	return nil
}

// The ways of dividing rate limits among gateways (EtcdStore.RateShares).
const (
	rateSharesFollowLoad = "follow_load"
	rateSharesEqual      = "equal"
)

// SharesFollowLoad reports whether rate limits follow the load across the
// gateways (rate_shares).
func (e *EtcdStore) SharesFollowLoad() bool { return e.RateShares != rateSharesEqual }

// StaleBound returns how long cached lookups stay trusted without word
// from the cluster.
func (e *EtcdStore) StaleBound() time.Duration { return time.Duration(e.MaxStale) }

// Open connects to the cluster. Each config has its own client; etcd
// serves many, and the release closes it.
func (e *EtcdStore) Open() (keystore.Store, func() error, error) {
	repl := caddy.NewReplacer()
	cfg := clientv3.Config{
		Username:    repl.ReplaceKnown(e.Username, ""),
		Password:    repl.ReplaceKnown(e.Password, ""),
		DialTimeout: time.Duration(e.DialTimeout),
		Logger:      e.clientLogger,
	}
	for _, ep := range e.Endpoints {
		cfg.Endpoints = append(cfg.Endpoints, repl.ReplaceKnown(ep, ""))
	}
	if e.TLS != nil || anyHTTPS(cfg.Endpoints) {
		tc, err := e.TLS.config(repl)
		if err != nil {
			return nil, nil, err
		}
		cfg.TLS = tc
	}
	s, err := etcdstore.Open(cfg, etcdstore.Options{
		Prefix:         e.Prefix,
		RequestTimeout: time.Duration(e.RequestTimeout),
		Logger:         e.logger,
	})
	if err != nil {
		return nil, nil, err
	}
	return s, s.Close, nil
}

func anyHTTPS(endpoints []string) bool {
	for _, ep := range endpoints {
		if strings.HasPrefix(ep, "https://") {
			return true
		}
	}
	return false
}

// config builds the client TLS configuration; t may be nil for https
// endpoints with publicly trusted certificates.
func (t *EtcdTLS) config(repl *caddy.Replacer) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t == nil {
		return tc, nil
	}
	tc.ServerName = t.ServerName
	if ca := repl.ReplaceKnown(t.CAFile, ""); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("etcd store: tls ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd store: tls ca_file %s holds no PEM certificate", ca)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(repl.ReplaceKnown(t.CertFile, ""), repl.ReplaceKnown(t.KeyFile, ""))
		if err != nil {
			return nil, fmt.Errorf("etcd store: tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// UnmarshalCaddyfile sets up the store from Caddyfile tokens. Syntax:
//
//	store etcd [<endpoints...>] {
//	    endpoints       <url...>
//	    prefix          <prefix>
//	    username        <name>
//	    password        <password>
//	    tls {
//	        ca          <pem file>
//	        cert        <pem file>
//	        key         <pem file>
//	        server_name <name>
//	    }
//	    dial_timeout    <duration>
//	    request_timeout <duration>
//	    max_stale       <duration>
//	    rate_shares     follow_load|equal
//	}
func (e *EtcdStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // store name
	e.Endpoints = append(e.Endpoints, d.RemainingArgs()...)
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "endpoints":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			e.Endpoints = append(e.Endpoints, args...)
		case "prefix":
			if !d.AllArgs(&e.Prefix) {
				return d.ArgErr()
			}
		case "username":
			if !d.AllArgs(&e.Username) {
				return d.ArgErr()
			}
		case "password":
			if !d.AllArgs(&e.Password) {
				return d.ArgErr()
			}
		case "tls":
			if err := e.unmarshalTLS(d); err != nil {
				return err
			}
		case "rate_shares":
			if !d.AllArgs(&e.RateShares) {
				return d.ArgErr()
			}
		case "dial_timeout", "request_timeout", "max_stale":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("%s: want a positive duration, got %q", opt, v)
			}
			switch opt {
			case "dial_timeout":
				e.DialTimeout = caddy.Duration(dur)
			case "request_timeout":
				e.RequestTimeout = caddy.Duration(dur)
			case "max_stale":
				e.MaxStale = caddy.Duration(dur)
			}
		default:
			return d.Errf("unrecognized etcd store option '%s'", opt)
		}
	}
	return nil
}

func (e *EtcdStore) unmarshalTLS(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	e.TLS = new(EtcdTLS)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var dst *string
		switch d.Val() {
		case "ca":
			dst = &e.TLS.CAFile
		case "cert":
			dst = &e.TLS.CertFile
		case "key":
			dst = &e.TLS.KeyFile
		case "server_name":
			dst = &e.TLS.ServerName
		default:
			return d.Errf("unrecognized etcd tls option '%s'", d.Val())
		}
		if !d.AllArgs(dst) {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guards
var (
	_ StoreOpener           = (*EtcdStore)(nil)
	_ StaleBounder          = (*EtcdStore)(nil)
	_ CreditLedger          = (*EtcdStore)(nil)
	_ Membership            = (*etcdstore.Store)(nil)
	_ caddy.Provisioner     = (*EtcdStore)(nil)
	_ caddy.Validator       = (*EtcdStore)(nil)
	_ caddyfile.Unmarshaler = (*EtcdStore)(nil)
)

package caddymodule

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func init() {
	caddy.RegisterModule(ExtAuthz{})
}

// ExtAuthz is the apikeys_ext_authz app: Envoy's external authorization
// service (envoy.service.auth.v3.Authorization/Check, gRPC) on a listener
// of its own. It admits the key of each request Envoy asks about exactly
// as apikey_auth and apikeys_verify do, by the same code (see
// VerifyRules), and answers:
//
//   - admitted: OK, with the identity fields (X-Apikeys-User, …; see
//     identityfields.go) set on the request for the upstream, the key's
//     header field (or query parameter) and any identity field the
//     client sent itself removed from it, and the RateLimit fields added
//     to the client's answer;
//   - refused: the status, header fields (WWW-Authenticate, Retry-After,
//     RateLimit) and JSON body that apikeys_verify would answer, as
//     Envoy's denied response.
//
// This port decides who gets in: serve it on loopback, or with TLS and a
// client certificate required (TLS.ClientCAFile).
type ExtAuthz struct {
	// Network address to listen on, in Caddy's form ("127.0.0.1:9191",
	// "unix//run/apikeys.sock", "fd/3"). Required.
	Listen string `json:"listen,omitempty"`

	// TLS for the listener. Default: plaintext (a warning is logged
	// when the address is beyond loopback).
	TLS *ExtAuthzTLS `json:"tls,omitempty"`

	// Largest Check request read, in bytes; a larger one is refused with
	// RESOURCE_EXHAUSTED, which Envoy treats as a denial. Default: 131072
	// (Envoy's request headers are at most 60 KiB by default; the service
	// reads no body).
	MaxRequestBytes int `json:"max_request_bytes,omitempty"`

	VerifyRules

	ctx      caddy.Context
	verifier *verifier
	logger   *zap.Logger
	server   *grpc.Server
	ln       net.Listener
	addr     caddy.NetworkAddress
}

// ExtAuthzTLS is the TLS of the ext_authz listener.
type ExtAuthzTLS struct {
	// PEM file of the server's certificate chain. Required.
	CertificateFile string `json:"certificate_file,omitempty"`

	// PEM file of the certificate's private key. Required.
	KeyFile string `json:"key_file,omitempty"`

	// PEM file of the certificate authorities whose client certificates
	// are accepted. When set, every client must present a certificate
	// that one of them signed, or the connection is refused before any
	// request is read.
	ClientCAFile string `json:"client_ca_file,omitempty"`
}

// defaultMaxCheckBytes is ExtAuthz.MaxRequestBytes's default.
const defaultMaxCheckBytes = 128 << 10

// CaddyModule returns the Caddy module information.
func (ExtAuthz) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "apikeys_ext_authz",
		New: func() caddy.Module { return new(ExtAuthz) },
	}
}

// Provision checks the configuration, loads the TLS files and connects
// to the apikeys app.
func (e *ExtAuthz) Provision(ctx caddy.Context) error {
	app, err := appFrom(ctx)
	if err != nil {
		return err
	}
	return e.provision(ctx, app)
}

// provision sets up the app to decide by app's keys.
func (e *ExtAuthz) provision(ctx caddy.Context, app *App) error {
	e.ctx, e.logger = ctx, ctx.Logger()
	if e.Listen == "" {
		return errors.New("listen: an address is required")
	}
	addr, err := caddy.ParseNetworkAddress(e.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if addr.PortRangeSize() > 1 {
		return fmt.Errorf("listen: %s is a range of ports; give one", e.Listen)
	}
	e.addr = addr
	if e.MaxRequestBytes < 0 {
		return errors.New("max_request_bytes must not be negative")
	}
	if e.MaxRequestBytes == 0 {
		e.MaxRequestBytes = defaultMaxCheckBytes
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(e.MaxRequestBytes),
		grpc.MaxConcurrentStreams(1024),
		grpc.ConnectionTimeout(10 * time.Second),
	}
	if e.TLS != nil {
		cfg, err := e.TLS.config()
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	if e.CostHeader != "" {
		// Envoy sends the client's own header fields: a client would
		// state its cost.
		return errors.New("cost_header: Envoy's Check request carries the client's own header fields, which a client could set; give costs by route")
	}
	v, err := newVerifier(ctx, app, e.logger, e.VerifyRules)
	if err != nil {
		return err
	}
	e.verifier = v
	e.server = grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(e.server, &checker{v: v})
	return nil
}

// config is the listener's TLS configuration.
func (t *ExtAuthzTLS) config() (*tls.Config, error) {
	if t.CertificateFile == "" || t.KeyFile == "" {
		return nil, errors.New("certificate_file and key_file are required")
	}
	cert, err := tls.LoadX509KeyPair(t.CertificateFile, t.KeyFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client_ca_file %s holds no PEM certificate", t.ClientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Start listens and serves Check requests.
func (e *ExtAuthz) Start() error {
	ln, err := e.addr.Listen(e.ctx, 0, net.ListenConfig{})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", e.Listen, err)
	}
	l, ok := ln.(net.Listener)
	if !ok {
		return fmt.Errorf("listen on %s: not a stream listener", e.Listen)
	}
	e.ln = l
	if e.TLS == nil && !e.addr.IsUnixNetwork() && !e.addr.IsFdNetwork() && !isLoopbackHost(e.addr.Host) {
		e.logger.Warn("ext_authz serves plaintext gRPC beyond loopback: anyone who reaches it can test keys; add tls with client_ca_file",
			zap.String("listen", e.Listen))
	}
	go func() {
		if err := e.server.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			e.logger.Error("ext_authz server stopped", zapError(err))
		}
	}()
	e.logger.Info("serving Envoy ext_authz", zap.String("listen", l.Addr().String()), zap.Bool("tls", e.TLS != nil))
	return nil
}

// stopGrace bounds how long Stop lets Check requests in flight finish.
const stopGrace = 5 * time.Second

// Stop stops accepting connections and lets the requests in flight
// finish, for at most stopGrace.
func (e *ExtAuthz) Stop() error {
	if e.server == nil {
		return nil
	}
	done := make(chan struct{})
	go func() { e.server.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopGrace):
		e.server.Stop()
	}
	return nil
}

// isLoopbackHost reports whether host is a loopback address or
// "localhost".
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Interface guards
var (
	_ caddy.App         = (*ExtAuthz)(nil)
	_ caddy.Provisioner = (*ExtAuthz)(nil)
)

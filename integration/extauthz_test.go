package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authzfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
)

// The gateway of README's "Envoy" section, asked as Envoy asks it: no
// Envoy binary can be had here, so a gRPC client built from Envoy's own
// protos sends the Check requests Envoy would, with the header fields
// apart (encode_raw_headers, as README's Envoy configuration sets).

// envoyGateway is the real binary on README's gateway configuration with
// README's apikeys_ext_authz block in its global options, its TLS files
// made for the test.
type envoyGateway struct {
	*verifyGateway
	authz  string
	files  *etcdtest.TLSFiles
	client authv3.AuthorizationClient
}

func startEnvoyGateway(t *testing.T, upstream string) *envoyGateway {
	t.Helper()
	files := etcdtest.NewTLSFiles(t, "envoy")
	ports := holdPorts(t, 1)
	authz := rewrite(t, readmeBlock(t, "### Envoy", "caddyfile"),
		"listen 127.0.0.1:9191", "listen fd/5",
		"/etc/apikeys/ext_authz.pem", files.ServerCert,
		"/etc/apikeys/ext_authz-key.pem", files.ServerKey,
		"/etc/apikeys/envoy-ca.pem", files.CA)
	authz = "\t" + strings.ReplaceAll(strings.TrimSpace(authz), "\n", "\n\t") + "\n"
	gw := startVerifyGatewayWith(t, upstream, authz, ports...)
	cfg, err := files.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	g := &envoyGateway{verifyGateway: gw, authz: ports[0].Addr, files: files}
	g.client = dialAuthz(t, g.authz, credentials.NewTLS(cfg))
	return g
}

func dialAuthz(t testing.TB, addr string, creds credentials.TransportCredentials) authv3.AuthorizationClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// envoyCheck is the Check request Envoy sends for a client's request
// method uri with header fields kv, repeated fields kept apart.
func envoyCheck(method, uri string, kv ...string) *authv3.CheckRequest {
	fields := []*corev3.HeaderValue{
		{Key: ":authority", RawValue: []byte("api.example")},
		{Key: ":path", RawValue: []byte(uri)},
		{Key: ":method", RawValue: []byte(method)},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		fields = append(fields, &corev3.HeaderValue{Key: strings.ToLower(kv[i]), RawValue: []byte(kv[i+1])})
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: uri, Host: "api.example", Scheme: "http", Protocol: "HTTP/1.1",
			HeaderMap: &corev3.HeaderMap{Headers: fields},
		}},
	}}
}

func (g *envoyGateway) check(t testing.TB, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := g.client.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return res
}

// envoyFields are header options as name → value.
func envoyFields(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

// envoyStatus is the HTTP status Envoy answers the client with for res:
// 200 when it lets the request through.
func envoyStatus(res *authv3.CheckResponse) int {
	if codes.Code(res.GetStatus().GetCode()) == codes.OK {
		return 200
	}
	return int(res.GetDeniedResponse().GetStatus().GetCode())
}

// TestEnvoyAsksTheGateway runs the battery of the other proxies against
// README's ext_authz configuration, over its mutual TLS.
func TestEnvoyAsksTheGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway")
	}
	up := newVerifyUpstream(t)
	gw := startEnvoyGateway(t, up.addr())
	plain := gw.mint(t, `{"service": "svc-plain", "scopes": ["read"]}`)
	admin := gw.mint(t, `{"service": "svc-admin", "scopes": ["admin"]}`)
	revoked := gw.mint(t, `{"service": "svc-revoked"}`)
	gw.call(t, "DELETE", "keys/"+revoked.ID)
	disabled := gw.mint(t, `{"service": "svc-disabled"}`)
	gw.call(t, "POST", "keys/"+disabled.ID+"/disable")
	rated := gw.mint(t, `{"service": "svc-rated", "plan": "rated"}`)
	metered := gw.mint(t, `{"service": "svc-metered", "plan": "metered"}`)
	bare := gw.mint(t, `{"service": "svc-bare"}`)
	unknown := plain.APIKey[:10] + strings.Repeat("A", len(plain.APIKey)-10)
	secrets := []string{plain.APIKey, admin.APIKey, revoked.APIKey, disabled.APIKey, rated.APIKey, metered.APIKey, bare.APIKey}
	bearer := func(k createdKey) []string { return []string{"Authorization", "Bearer " + k.APIKey} }

	cases := []struct {
		name      string
		method    string
		uri       string
		headers   []string
		status    int
		challenge string // a prefix of WWW-Authenticate
		user      string // X-Apikeys-User set upstream
		removed   string // the key's field, removed before the upstream
	}{
		{"bearer", "GET", "/v1/x", bearer(plain), 200, "", "svc-plain", "authorization"},
		{"X-Api-Key", "POST", "/v1/x", []string{"X-Api-Key", plain.APIKey}, 200, "", "svc-plain", "x-api-key"},
		{"forged identity is replaced", "GET", "/v1/x", append(bearer(plain), "X-Apikeys-User", "root", "X-Apikeys-Source", "password"), 200, "", "svc-plain", "authorization"},
		{"forged fields a key without scopes or plan has no value for", "GET", "/v1/x", append(bearer(bare), "X-Apikeys-Scopes", "admin", "X-Apikeys-Credits-Remaining", "1000000"), 200, "", "svc-bare", "x-apikeys-scopes"},
		{"forged forwarded URI", "GET", "/admin/users", append(bearer(plain), "X-Forwarded-Uri", "/v1/x", "X-Original-Uri", "/v1/x"), 403, `Bearer realm="apikeys", error="insufficient_scope"`, "", ""},
		{"admin route with the scope", "GET", "/admin/users", bearer(admin), 200, "", "svc-admin", "authorization"},
		{"no key", "GET", "/v1/x", nil, 401, `Bearer realm="apikeys"`, "", ""},
		{"unknown", "GET", "/v1/x", []string{"Authorization", "Bearer " + unknown}, 401, `Bearer realm="apikeys", error="invalid_token"`, "", ""},
		{"revoked", "GET", "/v1/x", bearer(revoked), 401, `Bearer realm="apikeys", error="invalid_token"`, "", ""},
		{"disabled", "GET", "/v1/x", bearer(disabled), 401, `Bearer realm="apikeys", error="invalid_token"`, "", ""},
		{"two keys", "GET", "/v1/x", append(bearer(plain), "X-Api-Key", admin.APIKey), 401, `Bearer realm="apikeys", error="invalid_request"`, "", ""},
		{"one field twice", "GET", "/v1/x", []string{"X-Api-Key", plain.APIKey, "X-Api-Key", admin.APIKey}, 401, `Bearer realm="apikeys", error="invalid_request"`, "", ""},
		{"out of scope", "GET", "/admin/users", bearer(plain), 403, `Bearer realm="apikeys", error="insufficient_scope", scope="admin"`, "", ""},
		{"out of scope, another case", "GET", "/ADMIN/users", bearer(plain), 403, `Bearer realm="apikeys", error="insufficient_scope"`, "", ""},
		{"rated 1", "GET", "/v1/x", bearer(rated), 200, "", "svc-rated", "authorization"},
		{"rated 2", "GET", "/v1/x", bearer(rated), 200, "", "svc-rated", "authorization"},
		{"rated 3: over the limit", "GET", "/v1/x", bearer(rated), 429, "", "", ""},
		{"metered, costly", "GET", "/v1/costly/x", bearer(metered), 200, "", "svc-metered", "authorization"},
		{"malformed path", "GET", "v1/x", bearer(plain), 400, "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := gw.check(t, envoyCheck(c.method, c.uri, c.headers...))
			if got := envoyStatus(res); got != c.status {
				t.Fatalf("%d, want %d: %v", got, c.status, res)
			}
			for _, k := range secrets {
				if strings.Contains(res.String(), k[len(k)-16:]) {
					t.Fatalf("the answer holds a key: %v", res)
				}
			}
			if c.status != 200 {
				d := envoyFields(res.GetDeniedResponse().GetHeaders())
				if got := d["www-authenticate"]; !strings.HasPrefix(got, c.challenge) || (c.challenge == "") != (got == "") {
					t.Fatalf("WWW-Authenticate %q, want %q", got, c.challenge)
				}
				var body struct {
					Success *bool  `json:"success"`
					Error   string `json:"error"`
				}
				if err := json.Unmarshal([]byte(res.GetDeniedResponse().GetBody()), &body); err != nil || body.Success == nil || *body.Success || body.Error == "" {
					t.Fatalf("body %q: %v", res.GetDeniedResponse().GetBody(), err)
				}
				if c.status == 429 {
					if ra := d["retry-after"]; ra == "" || ra == "0" {
						t.Fatalf("429 without Retry-After: %v", d)
					}
					if !strings.HasPrefix(d["ratelimit"], `"per-minute";r=0;t=`) || d["ratelimit-policy"] != `"per-minute";q=2;w=60` {
						t.Fatalf("RateLimit %q, RateLimit-Policy %q", d["ratelimit"], d["ratelimit-policy"])
					}
				}
				return
			}
			ok := res.GetOkResponse()
			set := envoyFields(ok.GetHeaders())
			if set["x-apikeys-user"] != c.user || set["x-apikeys-source"] != "service" || len(set["x-apikeys-key-id"]) != 32 {
				t.Fatalf("identity set upstream: %v", set)
			}
			if c.user == "svc-metered" && set["x-apikeys-credits-remaining"] != "997" {
				t.Fatalf("credits remaining upstream: %q, want 997", set["x-apikeys-credits-remaining"])
			}
			if !slices.Contains(ok.GetHeadersToRemove(), c.removed) {
				t.Fatalf("%s is not removed before the upstream: %q", c.removed, ok.GetHeadersToRemove())
			}
			for _, name := range []string{"x-apikeys-scopes", "x-apikeys-credits-remaining"} {
				if _, set := set[name]; !set && c.user == "svc-bare" && !slices.Contains(ok.GetHeadersToRemove(), name) {
					t.Fatalf("the forged %s reaches the upstream: removed %q", name, ok.GetHeadersToRemove())
				}
			}
		})
	}

	t.Run("a client without its certificate", func(t *testing.T) {
		cfg, err := gw.files.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		noCert := dialAuthz(t, gw.authz, credentials.NewTLS(&tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if res, err := noCert.Check(ctx, envoyCheck("GET", "/v1/x", bearer(plain)...)); status.Code(err) != codes.Unavailable || res != nil {
			t.Fatalf("%v %v, want the connection refused", res, err)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := gw.client.Check(ctx, envoyCheck("GET", "/v1/x", append(bearer(plain), "X-Pad", strings.Repeat("p", 200<<10))...))
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("%v, want ResourceExhausted", err)
		}
	})
	t.Run("a reload", func(t *testing.T) {
		// A config that differs, so that Caddy replaces the app: the new
		// one takes over the listener, the old one lets its calls finish.
		loadConfig(t, gw.admin, rewrite(t, gw.config, "\t\tlisten fd/5\n", "\t\tlisten fd/5\n\t\tmax_request_bytes 131072\n"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := gw.client.Check(ctx, envoyCheck("GET", "/v1/x", bearer(plain)...), grpc.WaitForReady(true))
		if err != nil || envoyStatus(res) != 200 {
			t.Fatalf("after a reload: %v %v", res, err)
		}
		if n := strings.Count(gw.Output(), "serving Envoy ext_authz"); n != 2 {
			t.Fatalf("the app started %d times, want 2 (not reloaded?)", n)
		}
	})
	t.Run("revoked from the next request", func(t *testing.T) {
		d := revocationDelay(t, gw.verifyGateway, gw.ask, 50)
		t.Logf("revocation to first refusal through ext_authz, 50 keys: p50 %v, p99 %v, max %v", percentile(d, 0.5), percentile(d, 0.99), d[len(d)-1])
	})
	t.Run("exact credits", func(t *testing.T) { exactCredits(t, gw.verifyGateway, nil, gw.ask) })
}

// ask asks as Envoy would about a client's request presenting key.
func (g *envoyGateway) ask(path, key string) (int, error) {
	res, err := g.client.Check(context.Background(), envoyCheck("GET", path, "X-Api-Key", key))
	if err != nil {
		return 0, err
	}
	return envoyStatus(res), nil
}

// TestEnvoyConfigIsValid reads README's Envoy configuration into Envoy's
// bootstrap with the protos' own validation, and checks that it asks the
// gateway as the gateway expects: gRPC v3, failing closed, repeated
// fields apart, over HTTP/2 with a client certificate.
func TestEnvoyConfigIsValid(t *testing.T) {
	var doc any
	if err := yaml.Unmarshal([]byte(readmeBlock(t, "### Envoy", "yaml")), &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var boot bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &boot); err != nil {
		t.Fatalf("README's Envoy configuration is not a bootstrap: %v", err)
	}
	if err := boot.ValidateAll(); err != nil {
		t.Fatalf("README's Envoy configuration: %v", err)
	}
	var hcm hcmv3.HttpConnectionManager
	if err := boot.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	if err := hcm.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	var authz authzfilterv3.ExtAuthz
	if err := hcm.GetHttpFilters()[0].GetTypedConfig().UnmarshalTo(&authz); err != nil {
		t.Fatalf("the first HTTP filter is not ext_authz: %v", err)
	}
	if err := authz.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	if authz.GetTransportApiVersion() != corev3.ApiVersion_V3 || authz.GetFailureModeAllow() || !authz.GetEncodeRawHeaders() ||
		authz.GetGrpcService().GetEnvoyGrpc().GetClusterName() != "apikeys" || authz.GetStatusOnError().GetCode() != 503 {
		t.Fatalf("ext_authz does not ask the gateway as it expects: %v", &authz)
	}
	clusters := boot.GetStaticResources().GetClusters()
	if len(clusters) != 2 || clusters[0].GetName() != "apikeys" || clusters[0].GetTransportSocket() == nil ||
		clusters[0].GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] == nil {
		t.Fatalf("the apikeys cluster has no TLS or no HTTP/2: %v", clusters)
	}
	if addr := clusters[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress(); addr.GetPortValue() != 9191 {
		t.Fatalf("the apikeys cluster asks %v, not the gateway's 9191", addr)
	}
	if !strings.Contains(readmeBlock(t, "### Envoy", "caddyfile"), "listen 127.0.0.1:9191") {
		t.Fatal("the gateway's block does not listen where Envoy asks")
	}
}

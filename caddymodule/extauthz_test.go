package caddymodule

import (
	"context"
	"crypto/tls"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/presented"
)

// startExtAuthz runs e on a loopback port, deciding by a fresh app with
// the plans of config's "plans" member (may be empty), and returns the
// app and the address.
func startExtAuthz(t *testing.T, e *ExtAuthz, plans string) (*App, string) {
	t.Helper()
	app := appWithPlans(t, plans)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	e.Listen = "127.0.0.1:0"
	if err := e.provision(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	return app, e.ln.Addr().String()
}

// dialExtAuthz is a client of the service at addr.
func dialExtAuthz(t *testing.T, addr string, creds credentials.TransportCredentials) authv3.AuthorizationClient {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// checkOf is the Check request Envoy sends for method and path (with its
// query) with the header fields kv, in Envoy's map form: names in lower
// case.
func checkOf(method, path string, kv ...string) *authv3.CheckRequest {
	h := map[string]string{":path": path, ":method": method, ":authority": "api.example"}
	for i := 0; i+1 < len(kv); i += 2 {
		h[strings.ToLower(kv[i])] = kv[i+1]
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "192.0.2.7"}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "api.example", Headers: h,
		}},
	}}
}

func check(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return res
}

// fields are header options as name → value.
func fields(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

// noKeyInCheck fails if res holds secret anywhere.
func noKeyInCheck(t *testing.T, res *authv3.CheckResponse, secret string) {
	t.Helper()
	if s := res.String(); strings.Contains(s, secret) || strings.Contains(s, secret[len(secret)-12:]) {
		t.Fatalf("the answer holds the key: %s", s)
	}
}

func TestExtAuthzAdmitsWithTheIdentity(t *testing.T) {
	e := &ExtAuthz{VerifyRules: VerifyRules{Headers: []string{"X-Api-Key"}, QueryParam: "api_key"}}
	app, addr := startExtAuthz(t, e, `{"metered": {"credits": {"amount": 10}}}`)
	c := dialExtAuthz(t, addr, nil)
	m := mintFor(t, app, keystore.KeyRequest{Scopes: []string{"read", "write"}, Plan: "metered"})
	cases := []struct {
		name   string
		req    *authv3.CheckRequest
		remove []string
		query  bool
	}{
		{"bearer", checkOf("GET", "/v1/x", "Authorization", "Bearer "+m.Secret), []string{"authorization"}, false},
		{"header", checkOf("POST", "/v1/x", "X-Api-Key", m.Secret), []string{"x-api-key"}, false},
		{"query", checkOf("GET", "/v1/x?a=1&api_key="+m.Secret), nil, true},
		{"forged identity", checkOf("GET", "/v1/x", "X-Api-Key", m.Secret, FieldUser, "root", FieldCreditsRemaining, "9999"), []string{"x-api-key"}, false},
		{"forged with underscores", checkOf("GET", "/v1/x", "X-Api-Key", m.Secret, "X_Apikeys_User", "root", "x_api_key", "sk-other"), []string{"x-api-key", "x_api_key", "x_apikeys_user"}, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := check(t, c, tc.req)
			ok := res.GetOkResponse()
			if codes.Code(res.GetStatus().GetCode()) != codes.OK || ok == nil {
				t.Fatalf("not admitted: %v", res)
			}
			up := fields(ok.GetHeaders())
			want := map[string]string{"x-apikeys-user": "alice", "x-apikeys-source": "service", "x-apikeys-key-id": m.Key.ID,
				"x-apikeys-scopes": "read write", "x-apikeys-credits-remaining": strconv.Itoa(9 - i)}
			for f, v := range want {
				if up[f] != v {
					t.Errorf("upstream %s: %q, want %q", f, up[f], v)
				}
			}
			for _, o := range ok.GetHeaders() {
				if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
					t.Errorf("%s is not set over what the client sent", o.GetHeader().GetKey())
				}
			}
			if got := slices.Sorted(slices.Values(ok.GetHeadersToRemove())); !slices.Equal(got, tc.remove) {
				t.Errorf("headers removed: %q, want %q", ok.GetHeadersToRemove(), tc.remove)
			}
			if tc.query != slices.Equal(ok.GetQueryParametersToRemove(), []string{"api_key"}) {
				t.Errorf("query parameters removed: %q", ok.GetQueryParametersToRemove())
			}
			if down := fields(ok.GetResponseHeadersToAdd()); down["ratelimit"] == "" {
				t.Errorf("no RateLimit field for the client: %v", down)
			}
			noKeyInCheck(t, res, m.Secret)
		})
	}
	// Envoy removes parameters by their names as sent: every spelling of
	// the key's parameter is named.
	res0 := check(t, c, checkOf("GET", "/v1/x?api%5Fkey="+m.Secret+"&a=1&%61pi_key="+m.Secret))
	if got := res0.GetOkResponse().GetQueryParametersToRemove(); !slices.Equal(got, []string{"api_key", "api%5Fkey", "%61pi_key"}) {
		t.Fatalf("query parameters removed: %q", got)
	}
	// A forged field the key has no value for is removed.
	plain := mintFor(t, app, keystore.KeyRequest{})
	res := check(t, c, checkOf("GET", "/", "X-Api-Key", plain.Secret, FieldScopes, "admin"))
	if got := res.GetOkResponse().GetHeadersToRemove(); !slices.Contains(got, "x-apikeys-scopes") {
		t.Fatalf("a forged X-Apikeys-Scopes is left to the upstream: removed %q", got)
	}
}

func TestExtAuthzRefusals(t *testing.T) {
	e := &ExtAuthz{VerifyRules: VerifyRules{
		Headers: []string{"X-Api-Key"},
		Routes:  []VerifyRoute{{Paths: []string{"/admin/*"}, RequireScopes: []string{"admin"}}},
	}}
	app, addr := startExtAuthz(t, e, `{"rated": {"rates": [{"limit": 1, "window": "1m", "name": "per-minute"}]}}`)
	c := dialExtAuthz(t, addr, nil)
	plain := mintFor(t, app, keystore.KeyRequest{})
	other := mintFor(t, app, keystore.KeyRequest{})
	rated := mintFor(t, app, keystore.KeyRequest{Plan: "rated"})
	revoked := mintFor(t, app, keystore.KeyRequest{})
	if _, err := app.keyring.Delete(context.Background(), keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, revoked.Key.ID); err != nil {
		t.Fatal(err)
	}
	check(t, c, checkOf("GET", "/", "X-Api-Key", rated.Secret)) // the one request of its minute
	noHTTP := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}
	cases := []struct {
		name      string
		req       *authv3.CheckRequest
		code      codes.Code
		status    int32
		challenge string
	}{
		{"no key", checkOf("GET", "/"), codes.Unauthenticated, 401, `Bearer realm="apikeys"`},
		{"unknown", checkOf("GET", "/", "X-Api-Key", plain.Secret[:len(plain.Secret)-4]+"AAAA"), codes.Unauthenticated, 401, `Bearer realm="apikeys", error="invalid_token"`},
		{"revoked", checkOf("GET", "/", "X-Api-Key", revoked.Secret), codes.Unauthenticated, 401, `Bearer realm="apikeys", error="invalid_token"`},
		{"two keys", checkOf("GET", "/", "X-Api-Key", plain.Secret, "Authorization", "Bearer "+other.Secret), codes.Unauthenticated, 401, `Bearer realm="apikeys", error="invalid_request"`},
		{"joined by Envoy", checkOf("GET", "/", "X-Api-Key", plain.Secret+","+other.Secret), codes.Unauthenticated, 401, `Bearer realm="apikeys", error="invalid_request"`},
		{"a bearer behind another credential, joined", checkOf("GET", "/", "Authorization", "Basic eDp5,Bearer "+other.Secret, "X-Api-Key", plain.Secret), codes.Unauthenticated, 401, `Bearer realm="apikeys", error="invalid_request"`},
		{"path parameters", checkOf("GET", "/admin;x/users", "X-Api-Key", plain.Secret), codes.InvalidArgument, 400, ""},
		{"a backslash", checkOf("GET", "/admin%5cusers", "X-Api-Key", plain.Secret), codes.InvalidArgument, 400, ""},
		{"encoded twice", checkOf("GET", "/admin%252fusers", "X-Api-Key", plain.Secret), codes.InvalidArgument, 400, ""},
		{"a trailing dot", checkOf("GET", "/admin./users", "X-Api-Key", plain.Secret), codes.InvalidArgument, 400, ""},
		{"a NUL", checkOf("GET", "/admin%00/users", "X-Api-Key", plain.Secret), codes.InvalidArgument, 400, ""},
		{"out of scope", checkOf("GET", "/Admin/users", "X-Api-Key", plain.Secret), codes.PermissionDenied, 403, `Bearer realm="apikeys", error="insufficient_scope", scope="admin"`},
		{"over the limit", checkOf("GET", "/", "X-Api-Key", rated.Secret), codes.ResourceExhausted, 429, ""},
		{"no HTTP request", noHTTP, codes.InvalidArgument, 400, ""},
		{"bad method", checkOf("G ET", "/", "X-Api-Key", plain.Secret), codes.InvalidArgument, 400, ""},
		{"absolute URI", checkOf("GET", "http://evil/", "X-Api-Key", plain.Secret), codes.InvalidArgument, 400, ""},
		{"no path", checkOf("GET", "", "X-Api-Key", plain.Secret), codes.InvalidArgument, 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := check(t, c, tc.req)
			d := res.GetDeniedResponse()
			if got := codes.Code(res.GetStatus().GetCode()); got != tc.code || d == nil || int32(d.GetStatus().GetCode()) != tc.status {
				t.Fatalf("%v / %d, want %v / %d: %v", got, d.GetStatus().GetCode(), tc.code, tc.status, res)
			}
			h := fields(d.GetHeaders())
			if h["www-authenticate"] != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", h["www-authenticate"], tc.challenge)
			}
			if h["content-type"] != "application/json" || !strings.HasPrefix(d.GetBody(), `{"success":false,"error":"`) {
				t.Errorf("body %q as %q", d.GetBody(), h["content-type"])
			}
			if tc.status == 429 && (h["retry-after"] == "" || !strings.HasPrefix(h["ratelimit"], `"per-minute";r=0;t=`)) {
				t.Errorf("429 fields: %v", h)
			}
			for _, k := range []string{plain.Secret, other.Secret, rated.Secret, revoked.Secret} {
				noKeyInCheck(t, res, k)
			}
		})
	}
}

// Envoy's encode_raw_headers form keeps repeated fields apart: a second
// key in a repeated field is two keys, whatever the map form would have
// joined.
// A client sets the header fields Envoy sends: none may state the cost.
func TestExtAuthzRefusesCostHeader(t *testing.T) {
	app := appWithPlans(t, "")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	e := &ExtAuthz{Listen: "127.0.0.1:0", VerifyRules: VerifyRules{CostHeader: "X-Cost"}}
	if err := e.provision(ctx, app); err == nil || !strings.Contains(err.Error(), "cost_header") {
		t.Fatalf("cost_header accepted: %v", err)
	}
}

func TestExtAuthzReadsRawHeaders(t *testing.T) {
	e := &ExtAuthz{VerifyRules: VerifyRules{Headers: []string{"X-Api-Key"}}}
	app, addr := startExtAuthz(t, e, "")
	c := dialExtAuthz(t, addr, nil)
	a, b := mintFor(t, app, keystore.KeyRequest{}), mintFor(t, app, keystore.KeyRequest{})
	raw := func(kv ...string) *authv3.CheckRequest {
		req := checkOf("GET", "/")
		hr := req.Attributes.Request.Http
		hr.Headers = nil
		hr.HeaderMap = &corev3.HeaderMap{}
		for i := 0; i+1 < len(kv); i += 2 {
			hr.HeaderMap.Headers = append(hr.HeaderMap.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return req
	}
	if res := check(t, c, raw(":path", "/", "x-api-key", a.Secret)); res.GetOkResponse() == nil {
		t.Fatalf("one raw key: %v", res)
	}
	res := check(t, c, raw("x-api-key", a.Secret, "x-api-key", b.Secret))
	if d := res.GetDeniedResponse(); d == nil || d.GetStatus().GetCode() != 401 || !strings.Contains(fields(d.GetHeaders())["www-authenticate"], "invalid_request") {
		t.Fatalf("two raw keys: %v", res)
	}
}

// Requests gRPC cannot hand over are refused by gRPC itself, which Envoy
// counts as a denial: larger than max_request_bytes, or not a
// CheckRequest at all.
func TestExtAuthzRefusesOversizedAndMalformedRequests(t *testing.T) {
	e := &ExtAuthz{MaxRequestBytes: 4096}
	app, addr := startExtAuthz(t, e, "")
	c := dialExtAuthz(t, addr, nil)
	m := mintFor(t, app, keystore.KeyRequest{})
	_, err := c.Check(context.Background(), checkOf("GET", "/", "Authorization", "Bearer "+m.Secret, "X-Pad", strings.Repeat("p", 8192)))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("an oversized request: %v, want ResourceExhausted", err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var out authv3.CheckResponse
	err = conn.Invoke(context.Background(), authv3.Authorization_Check_FullMethodName, rawBytes{0xff, 0xff, 0xff, 0x07}, &out, grpc.ForceCodec(rawCodec{}))
	if code := status.Code(err); code != codes.Internal {
		t.Fatalf("undecodable bytes: %v, want Internal", err)
	}
	// The service still answers after both.
	if res := check(t, c, checkOf("GET", "/", "Authorization", "Bearer "+m.Secret)); res.GetOkResponse() == nil {
		t.Fatalf("after the bad requests: %v", res)
	}
}

func TestExtAuthzRequiresTheClientsCertificate(t *testing.T) {
	files := etcdtest.NewTLSFiles(t, "envoy")
	e := &ExtAuthz{TLS: &ExtAuthzTLS{CertificateFile: files.ServerCert, KeyFile: files.ServerKey, ClientCAFile: files.CA}}
	app, addr := startExtAuthz(t, e, "")
	m := mintFor(t, app, keystore.KeyRequest{})
	withCert, err := files.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if res := check(t, dialExtAuthz(t, addr, credentials.NewTLS(withCert)), checkOf("GET", "/", "Authorization", "Bearer "+m.Secret)); res.GetOkResponse() == nil {
		t.Fatalf("with the client certificate: %v", res)
	}
	noCert := &tls.Config{RootCAs: withCert.RootCAs, MinVersion: tls.VersionTLS12}
	for name, creds := range map[string]credentials.TransportCredentials{
		"no certificate": credentials.NewTLS(noCert),
		"plaintext":      insecure.NewCredentials(),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := dialExtAuthz(t, addr, creds).Check(ctx, checkOf("GET", "/", "Authorization", "Bearer "+m.Secret))
		cancel()
		if status.Code(err) != codes.Unavailable || res != nil {
			t.Fatalf("%s: %v %v, want the connection refused", name, res, err)
		}
	}
}

// rawBytes is a message sent as it is, by rawCodec.
type rawBytes []byte

// rawCodec sends rawBytes as they are and reads answers as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.(rawBytes), nil }

func (rawCodec) Unmarshal(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }

func (rawCodec) Name() string { return "proto" }

// FuzzAskedByEnvoy reads arbitrary Check requests: a request is read only
// when its method is a token and its path a path, never a pseudo-header
// as a field.
func FuzzAskedByEnvoy(f *testing.F) {
	for _, req := range []*authv3.CheckRequest{
		checkOf("GET", "/v1/x?api_key=k", "Authorization", "Bearer k", "X-Api-Key", "k"),
		checkOf("POST", "//evil/%2e%2e"),
		{Attributes: &authv3.AttributeContext{}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req authv3.CheckRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		q, err := askedByEnvoy(&req, &presented.Places{Headers: []string{"X-Api-Key"}})
		if err != nil {
			return
		}
		if !validMethod(q.method) || !strings.HasPrefix(q.path, "/") && q.path != "" {
			t.Fatalf("read %q %q", q.method, q.path)
		}
		for name := range q.header {
			if strings.HasPrefix(name, ":") {
				t.Fatalf("pseudo-header %q read as a field", name)
			}
		}
	})
}

// Plaintext beyond loopback lets anyone who reaches the port test keys:
// the start says so; on loopback it does not.
func TestExtAuthzWarnsOfPlaintextBeyondLoopback(t *testing.T) {
	for listen, warned := range map[string]bool{"0.0.0.0:0": true, "127.0.0.1:0": false} {
		app := appWithPlans(t, "")
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		e := &ExtAuthz{Listen: listen}
		if err := e.provision(ctx, app); err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zap.WarnLevel)
		e.logger = zap.New(core)
		if err := e.Start(); err != nil {
			t.Fatal(err)
		}
		_ = e.Stop()
		if got := logs.FilterMessageSnippet("plaintext").Len() > 0; got != warned {
			t.Errorf("%s: warned %v, want %v", listen, got, warned)
		}
	}
}

// BenchmarkExtAuthzCheck is one Check of apikeys_ext_authz in process (no
// gRPC): Envoy's request read, the key admitted, the answer built, for a
// key without and with a plan of a rate limit and credits.
func BenchmarkExtAuthzCheck(b *testing.B) {
	for _, plan := range []string{"", "p"} {
		name := "plan=none"
		if plan != "" {
			name = "plan=rate+credits"
		}
		b.Run(name, func(b *testing.B) {
			app := appWithPlans(b, `{"p": {"rates": [{"limit": 1000000000, "window": "1m"}], "credits": {"amount": 1000000000000}}}`)
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			v, err := newVerifier(ctx, app, zap.NewNop(), VerifyRules{Headers: []string{"X-Api-Key"}})
			if err != nil {
				b.Fatal(err)
			}
			m := mintFor(b, app, keystore.KeyRequest{Plan: plan})
			c := &checker{v: v}
			req := checkOf("GET", "/v1/x", "X-Api-Key", m.Secret, "User-Agent", "bench", "Accept", "*/*")
			b.ReportAllocs()
			for b.Loop() {
				res, err := c.Check(b.Context(), req)
				if err != nil || res.GetOkResponse() == nil {
					b.Fatalf("%v %v", res, err)
				}
			}
		})
	}
}

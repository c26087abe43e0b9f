package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/caddy-apikeys/caddy-apikeys/presented"
)

// How a Check request of Envoy's ext_authz becomes the request the
// verifier decides about, and its decision an answer Envoy applies.
// Envoy describes the client's request in attributes.request.http: the
// method, the path as sent (":path", with its query) and the header
// fields, either as a map (names in lower case, repeated fields joined
// with commas) or, with encode_raw_headers, as a list that keeps each
// field apart. A request that does not describe an HTTP request, or
// whose method or path cannot be read, is denied with 400.

// checker serves envoy.service.auth.v3.Authorization.
type checker struct {
	authv3.UnimplementedAuthorizationServer
	v *verifier
}

// Check decides about the request Envoy asks about. Every decision is a
// CheckResponse; the gRPC call itself fails only for requests gRPC
// refuses before this (oversized, undecodable).
func (c *checker) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	q, err := askedByEnvoy(req, &c.v.places)
	if err != nil {
		return denied(http.Header{}, refuse(http.StatusBadRequest, msgCheckMalformed)), nil
	}
	if len(c.v.routes) > 0 {
		// Path patterns may hold placeholders.
		ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, caddy.NewReplacer())
	}
	answer := http.Header{}
	a, err := c.v.decide(ctx, answer, q)
	if err != nil {
		return denied(answer, err), nil
	}
	return allowed(c.v, q, a, answer), nil
}

// msgCheckMalformed refuses a Check request that does not describe an
// HTTP request the verifier can read.
const msgCheckMalformed = "the request to check has no readable HTTP method, path or header fields"

var errCheckMalformed = errors.New("malformed check request")

// askedByEnvoy reads the client's request from req, where places are
// the places a key is read from.
func askedByEnvoy(req *authv3.CheckRequest, places *presented.Places) (asked, error) {
	hr := req.GetAttributes().GetRequest().GetHttp()
	if hr == nil || !validMethod(hr.GetMethod()) {
		return asked{}, errCheckMalformed
	}
	path, rawPath, rawQuery, err := parseForwardedURI(hr.GetPath())
	if err != nil {
		return asked{}, errCheckMalformed
	}
	h := http.Header{}
	if m := hr.GetHeaderMap(); m != nil {
		for _, f := range m.GetHeaders() {
			v := f.GetValue()
			if raw := f.GetRawValue(); len(raw) > 0 {
				v = string(raw)
			}
			addField(h, f.GetKey(), v)
		}
	} else {
		// Envoy joined repeated fields with commas; a key never holds
		// one, so a key field's parts are read apart: a second key
		// behind a comma is a second key.
		for name, v := range hr.GetHeaders() {
			if !places.ReadsHeader(http.CanonicalHeaderKey(name)) {
				addField(h, name, v)
				continue
			}
			for part := range strings.SplitSeq(v, ",") {
				addField(h, name, strings.TrimSpace(part))
			}
		}
	}
	ip := req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
	return asked{header: h, method: strings.ToUpper(hr.GetMethod()), path: path, rawPath: rawPath, rawQuery: rawQuery, ip: ip}, nil
}

// addField adds a header field Envoy sent, leaving out pseudo-headers
// (":path", ":authority", …), which the request's own members carry.
func addField(h http.Header, name, value string) {
	if name == "" || name[0] == ':' {
		return
	}
	h.Add(name, value)
}

// allowed is the OK answer for the admitted key a of q: the identity set
// on the request, the key and any identity field the client forged
// removed from it, and the RateLimit fields in answer added to the
// client's response.
func allowed(v *verifier, q asked, a admitted, answer http.Header) *authv3.CheckResponse {
	identity := http.Header{}
	writeIdentity(identity, a)
	ok := &authv3.OkHttpResponse{Headers: headerOptions(identity), ResponseHeadersToAdd: headerOptions(answer)}
	for _, name := range identityFieldNames {
		if _, set := identity[name]; !set && q.header[name] != nil {
			ok.HeadersToRemove = append(ok.HeadersToRemove, strings.ToLower(name))
		}
	}
	// An identity or key field spelt with underscores is another field to
	// Envoy, but the same one to upstreams that fold "_" into "-" (CGI,
	// WSGI, Rack): a forged identity, or a second key.
	for name := range q.header {
		if strings.Contains(name, "_") && v.guarded(http.CanonicalHeaderKey(strings.ReplaceAll(name, "_", "-"))) {
			ok.HeadersToRemove = append(ok.HeadersToRemove, strings.ToLower(name))
		}
	}
	// The places the key was in, as Strip finds them on a copy.
	r := &http.Request{Header: q.header.Clone(), URL: q.url()}
	v.places.Strip(r, a.found)
	for name := range q.header {
		if r.Header[name] == nil {
			ok.HeadersToRemove = append(ok.HeadersToRemove, strings.ToLower(name))
		}
	}
	if r.URL.RawQuery != q.rawQuery {
		ok.QueryParametersToRemove = presented.RawNames(q.rawQuery, v.places.QueryParam)
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
}

// guarded reports whether name (canonical) is an identity field or a
// header field the key is read from.
func (v *verifier) guarded(name string) bool {
	return v.places.ReadsHeader(name) || slices.Contains(identityFieldNames, name)
}

// denied is the answer refusing a request with err, a refusal of
// refuse's, and the header fields in answer: the JSON body and status
// apikeys_verify's shipped error route gives.
func denied(answer http.Header, err error) *authv3.CheckResponse {
	status, msg := http.StatusServiceUnavailable, "the request could not be checked"
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		status, msg = he.StatusCode, he.Err.Error()
	}
	answer.Set("Content-Type", "application/json")
	answer.Set("Cache-Control", "no-store")
	body, _ := json.Marshal(struct {
		Success bool   `json:"success"`
		Error   string `json:"error"`
	}{false, msg})
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(grpcCode(status)), Message: msg},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			Headers: headerOptions(answer),
			Body:    string(body),
		}},
	}
}

// grpcCode is the gRPC status of a denial with HTTP status.
func grpcCode(status int) codes.Code {
	switch status {
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusBadRequest:
		return codes.InvalidArgument
	default:
		return codes.Unavailable
	}
}

// headerOptions are h's fields as Envoy header options, each replacing
// a field of the same name.
func headerOptions(h http.Header) []*corev3.HeaderValueOption {
	var opts []*corev3.HeaderValueOption
	for _, name := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[name] {
			opts = append(opts, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: strings.ToLower(name), Value: v},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			})
		}
	}
	return opts
}

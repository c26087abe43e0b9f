package ops

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// Prefix is where the admin API serves the operations.
const Prefix = "/apikeys/"

// MaxBody caps admin request bodies.
const MaxBody = 64 << 10

// Serve answers an admin API request under Prefix with the operation its
// method and path name, run on env. Refusals are *wire.Error; any other
// error is a fault of the store, for the caller to log and hide.
func Serve(w http.ResponseWriter, r *http.Request, env *Env) error {
	segments, err := pathSegments(r)
	if err != nil {
		return err
	}
	op, params := match(r.Method, segments)
	if op == nil {
		return wire.Fail(http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	}
	in := op.newInput()
	if err := bindPath(in, params); err != nil {
		return err
	}
	if hasBody(r.Method) {
		if err := decodeBody(r, in); err != nil {
			return err
		}
	} else if err := bindQuery(in, r.URL.Query()); err != nil {
		return wire.Fail(http.StatusBadRequest, err.Error())
	}
	res, err := op.run(r.Context(), env, in)
	if err != nil {
		return err
	}
	if st, ok := res.(streamed); ok {
		return st.serve(w)
	}
	if _, none := res.(None); none {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return wire.WriteJSON(w, http.StatusOK, res)
}

// pathSegments splits the path after Prefix into its segments, unescaped
// one by one, so that a user name may contain "/".
func pathSegments(r *http.Request) ([]string, error) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.EscapedPath(), Prefix), "/")
	parts := strings.Split(rest, "/")
	for i, p := range parts {
		var err error
		if parts[i], err = url.PathUnescape(p); err != nil {
			return nil, wire.Fail(http.StatusBadRequest, fmt.Sprintf("invalid path segment %q", p))
		}
	}
	return parts, nil
}

// decodeBody reads the request body into *in by the strict reader,
// refusing members it does not have; errors name the member as the API
// does. An empty body is an empty object.
func decodeBody(r *http.Request, in any) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return wire.Fail(http.StatusBadRequest, "could not read the request body")
	}
	if len(data) > MaxBody {
		return wire.Fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than the limit of %d bytes", MaxBody))
	}
	if len(bytes.TrimSpace(data)) == 0 {
		data = []byte("{}") // nothing given: the operation says what it lacks
	}
	var fe *strictjson.FieldError
	var se *strictjson.Error
	switch err := strictjson.DecodeObject(data, in); {
	case errors.As(err, &fe):
		return wire.Fail(http.StatusBadRequest, "request body: "+fe.Error())
	case errors.As(err, &se):
		return wire.Fail(http.StatusBadRequest, se.Describe("request body"))
	case err != nil:
		return wire.Fail(http.StatusBadRequest, "request body is not valid JSON")
	}
	return nil
}

package ops

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
)

// routes are the operations the admin API serves, in the order they were
// registered.
var routes []route

// register adds op to the operations the admin API serves, and returns
// it.
func register[In, Out any](op *Op[In, Out]) *Op[In, Out] {
	routes = append(routes, op)
	return op
}

// match finds the operation for method and the path's segments, and its
// path parameters. A literal segment wins over a {parameter}, so a key
// whose id is "lookup" cannot shadow keys/lookup.
func match(method string, segments []string) (route, map[string]string) {
	var best route
	var bestParams map[string]string
	bestLiterals := -1
	for _, op := range routes {
		if op.method() != method {
			continue
		}
		pattern := strings.Split(op.path(), "/")
		if len(pattern) != len(segments) {
			continue
		}
		params, literals := map[string]string{}, 0
		for i, p := range pattern {
			switch {
			case segments[i] == "":
				params = nil
			case strings.HasPrefix(p, "{"):
				params[strings.Trim(p, "{}")] = segments[i]
			case p == segments[i]:
				literals++
			default:
				params = nil
			}
			if params == nil {
				break
			}
		}
		if params != nil && literals > bestLiterals {
			best, bestParams, bestLiterals = op, params, literals
		}
	}
	return best, bestParams
}

// hasBody reports whether an operation of method takes its input from a
// JSON body rather than the query string.
func hasBody(method string) bool { return method == http.MethodPost || method == http.MethodPut }

// fields walks the fields of the struct v points to (embedded structs
// included), giving each its path parameter name (tag `path`) or its
// member name (tag `json`).
func fields(v reflect.Value, fn func(f reflect.Value, param, member string) error) error {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		fv := v.Field(i)
		if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
			if err := fields(fv, fn); err != nil {
				return err
			}
			continue
		}
		if !sf.IsExported() {
			continue
		}
		member, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if member == "-" {
			member = ""
		}
		if err := fn(fv, sf.Tag.Get("path"), member); err != nil {
			return err
		}
	}
	return nil
}

// bindPath sets the path parameters of *in from params.
func bindPath(in any, params map[string]string) error {
	return fields(reflect.ValueOf(in).Elem(), func(f reflect.Value, param, _ string) error {
		if param != "" {
			f.SetString(params[param])
		}
		return nil
	})
}

// bindQuery sets the string members of *in from the query string,
// refusing parameters it does not have.
func bindQuery(in any, q url.Values) error {
	known := map[string]bool{}
	err := fields(reflect.ValueOf(in).Elem(), func(f reflect.Value, param, member string) error {
		if param != "" || member == "" {
			return nil
		}
		known[member] = true
		if vs := q[member]; len(vs) > 0 {
			if len(vs) > 1 {
				return fmt.Errorf("the query parameter %q is given %d times", member, len(vs))
			}
			f.SetString(vs[0])
		}
		return nil
	})
	if err != nil {
		return err
	}
	for name := range q {
		if !known[name] {
			return fmt.Errorf("unknown query parameter %q", name)
		}
	}
	return nil
}

// encodeQuery is bindQuery's inverse: the non-empty string members of
// *in as a query string.
func encodeQuery(in any) string {
	q := url.Values{}
	_ = fields(reflect.ValueOf(in).Elem(), func(f reflect.Value, param, member string) error {
		if param == "" && member != "" && f.Kind() == reflect.String && f.String() != "" {
			q.Set(member, f.String())
		}
		return nil
	})
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// encodePath is the path of op for *in, its parameters escaped as path
// segments.
func encodePath(op route, in any) string {
	params := map[string]string{}
	_ = fields(reflect.ValueOf(in).Elem(), func(f reflect.Value, param, _ string) error {
		if param != "" {
			params[param] = f.String()
		}
		return nil
	})
	segments := strings.Split(op.path(), "/")
	for i, s := range segments {
		if strings.HasPrefix(s, "{") {
			segments[i] = pathSegment(params[strings.Trim(s, "{}")])
		}
	}
	return strings.Join(segments, "/")
}

// pathSegment escapes s as one segment of an admin API path, dots too, so
// that names such as "." and ".." stay names instead of moving up.
func pathSegment(s string) string {
	return strings.ReplaceAll(url.PathEscape(s), ".", "%2E")
}

// assign stores the value res in *out.
func assign(out, res any) {
	reflect.ValueOf(out).Elem().Set(reflect.ValueOf(res))
}

// Route is where the admin API serves an operation.
type Route struct {
	Name, Method, Path string
}

// Routes lists the operations the admin API serves, for its docs.
func Routes() []Route {
	out := make([]Route, len(routes))
	for i, op := range routes {
		out[i] = Route{Name: op.name(), Method: op.method(), Path: op.path()}
	}
	return out
}

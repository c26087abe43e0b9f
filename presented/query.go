package presented

import (
	"net/url"
	"slices"
	"strings"
)

// queryParam finds the parameter name in a raw query string as sent, and
// returns its values, the query without it (every other byte as sent),
// and whether the parameter may hide behind ';' (a separator for some
// servers, not for Go), which makes the request ambiguous.
//
// Re-encoding the parsed query instead (url.Values.Encode) would reorder
// parameters, change their escaping and drop pairs that Go cannot parse,
// so that the upstream would see another request than the one checked.
func queryParam(raw, name string) (values []string, rest string, ambiguous bool) {
	if raw == "" {
		return nil, raw, false
	}
	kept := make([]string, 0, strings.Count(raw, "&")+1)
	removed := false
	for seg := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(seg, "=")
		if paramName(k) == name {
			if val, err := url.QueryUnescape(v); err == nil {
				v = val
			}
			values = append(values, v)
			removed = true
			continue
		}
		if strings.Contains(seg, ";") {
			for part := range strings.SplitSeq(seg, ";") {
				k, _, _ := strings.Cut(part, "=")
				if paramName(k) == name {
					ambiguous = true
				}
			}
		}
		kept = append(kept, seg)
	}
	if !removed {
		return values, raw, ambiguous
	}
	return values, strings.Join(kept, "&"), ambiguous
}

// RawNames are the names, as sent, of the parameters of a raw query that
// decode to name (name itself first): a proxy that removes parameters by
// the names as sent (Envoy) needs every spelling, or `api%5Fkey=…` would
// pass on a key that `api_key` names.
func RawNames(raw, name string) []string {
	names := []string{name}
	for seg := range strings.SplitSeq(raw, "&") {
		k, _, _ := strings.Cut(seg, "=")
		if paramName(k) == name && !slices.Contains(names, k) {
			names = append(names, k)
		}
	}
	return names
}

// paramName decodes a parameter name as url.ParseQuery does; a name that
// does not decode is compared as sent.
func paramName(k string) string {
	if n, err := url.QueryUnescape(k); err == nil {
		return n
	}
	return k
}

// withQuery returns requestURI with its query replaced by query.
func withQuery(requestURI, query string) string {
	if i := strings.IndexByte(requestURI, '?'); i >= 0 {
		requestURI = requestURI[:i]
	}
	if query == "" {
		return requestURI
	}
	return requestURI + "?" + query
}

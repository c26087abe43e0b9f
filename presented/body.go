package presented

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
)

// keyFromBody reads the whole body, as strictly as the API's endpoints
// do (keyInBody), returns the key of {"auth": {"api_key": …}} in it, and
// puts the body back so that the upstream receives it as it came. A body
// the gate cannot read in full as a JSON object within max_body_bytes is
// refused (413 over it, 415 not JSON, 400 malformed), never passed on
// unread: the upstream might find a key in it that the gate did not
// check. A request without a body, or with an empty one, carries no key
// there.
func (p *Places) keyFromBody(r *http.Request) (string, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return "", nil
	}
	if r.ContentLength > p.MaxBodyBytes {
		return "", p.bodyTooLarge()
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, p.MaxBodyBytes+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	switch {
	case err != nil:
		return "", &BodyError{http.StatusBadRequest, msgBodyUnreadable}
	case int64(len(buf)) > p.MaxBodyBytes: // a body of unknown length
		return "", p.bodyTooLarge()
	case len(bytes.TrimSpace(buf)) == 0:
		return "", nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !IsJSON(ct) {
		return "", &BodyError{http.StatusUnsupportedMediaType, msgBodyNotJSON}
	}
	key, fault := keyInBody(buf)
	if msg := bodyFaults[fault]; msg != "" {
		return "", &BodyError{http.StatusBadRequest, msg}
	}
	return key, nil
}

// Messages of the body's refusals that say the same each time.
const (
	msgBodyUnreadable = "the request body could not be read"
	msgBodyNotJSON    = "the request body must be JSON (Content-Type application/json)"
)

func (p *Places) bodyTooLarge() error {
	return &BodyError{http.StatusRequestEntityTooLarge, "the request body is larger than the limit of " + strconv.FormatInt(p.MaxBodyBytes, 10) + " bytes"}
}

// bodyFaults are the messages of the body's faults, without the names
// the body holds (a refusal's message holds nothing of the request).
var bodyFaults = map[bodyFault]string{
	bodyNotObject:    "the request body must be a JSON object",
	bodyNotUTF8:      "the request body is not valid UTF-8",
	bodyNotJSON:      "the request body is not valid JSON",
	bodyRepeats:      "the request body repeats a member name (names match in any letter case)",
	bodyKeyNotString: "auth.api_key in the request body must be a string",
}

// bodyFault is why a request body is not a JSON object read strictly.
type bodyFault int

// The faults keyInBody finds.
const (
	bodyOK           bodyFault = iota
	bodyNotObject              // something other than a JSON object
	bodyNotUTF8                // not valid UTF-8
	bodyNotJSON                // not valid JSON
	bodyRepeats                // a member name twice in one object, in any letter case
	bodyKeyNotString           // auth.api_key is there, not null, and not a string
)

// keyInBody returns auth.api_key of a body read once by the strict reader
// (as the API's bodies are), matching names as json.Unmarshal matches
// fields, or what is wrong with the body. A body without it carries no
// key ("").
func keyInBody(data []byte) (string, bodyFault) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return "", bodyOK
	}
	if data[0] != '{' {
		return "", bodyNotObject
	}
	auth, err := memberOf(data, "auth")
	var se *strictjson.Error
	switch {
	case errors.As(err, &se) && se.Reason == strictjson.NotUTF8:
		return "", bodyNotUTF8
	case errors.As(err, &se) && se.Reason == strictjson.Duplicate:
		return "", bodyRepeats
	case err != nil:
		return "", bodyNotJSON
	case len(auth) == 0 || auth[0] != '{':
		return "", bodyOK // no auth object: a string auth is a token
	}
	v, _ := memberOf(auth, "api_key") // within a body read strictly: cannot fail
	switch {
	case len(v) == 0 || string(v) == "null":
		return "", bodyOK
	case v[0] != '"':
		return "", bodyKeyNotString
	}
	key, err := strictjson.Unquote(v)
	if err != nil {
		return "", bodyNotJSON // not reached: the body is valid JSON
	}
	return key, bodyOK
}

// memberOf is the value of the member of the strict JSON object obj that
// encoding/json would match to a field name, or nil.
func memberOf(obj []byte, name string) ([]byte, error) {
	var value []byte
	err := strictjson.Object(obj, func(m strictjson.Member) {
		if bytes.EqualFold(m.Name, []byte(name)) {
			value = m.Value
		}
	})
	return value, err
}

type readCloser struct {
	io.Reader
	io.Closer
}

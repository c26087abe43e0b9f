package wire

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
)

// Success is the QueryLake success envelope.
type Success struct {
	Success bool `json:"success"`
	Result  any  `json:"result"`
}

// Done is the success envelope without a result, QueryLake's bare True.
type Done struct {
	Success bool `json:"success"`
}

// Failure is the error envelope.
type Failure struct {
	Success bool   `json:"success"`
	Error   string `json:"error"`
}

// WriteJSON writes v compactly, without HTML escaping (titles are echoed
// as the caller sent them), with the given status; answers are never
// cached.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	buf := answers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledAnswer {
			buf.Reset()
			answers.Put(buf)
		}
	}()
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	body := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// WriteError writes the error envelope of e, with Retry-After when e
// says when to try again.
func WriteError(w http.ResponseWriter, e *Error) error {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	return WriteJSON(w, e.Status, Failure{Error: e.Msg})
}

// answers hold the bytes of answers between requests: every mint answers
// with one.
var answers = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 512)) }}

// maxPooledAnswer is the largest buffer kept in answers.
const maxPooledAnswer = 4096

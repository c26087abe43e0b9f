package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// epochSeconds is a time written as float seconds since the Unix epoch,
// always with a fractional part, as Python's time.time() prints it.
type epochSeconds time.Time

func (t epochSeconds) MarshalJSON() ([]byte, error) {
	return appendEpoch(nil, time.Time(t)), nil
}

// UnmarshalJSON reads float seconds, for clients of the admin API.
func (t *epochSeconds) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("epoch seconds: %w", err)
	}
	*t = epochSeconds(time.UnixMicro(int64(math.Round(f * 1e6))))
	return nil
}

// optionalEpoch is an epochSeconds that is null when zero.
func optionalEpoch(t time.Time) *epochSeconds {
	if t.IsZero() {
		return nil
	}
	e := epochSeconds(t)
	return &e
}

// successBody is the QueryLake success envelope.
type successBody struct {
	Success bool `json:"success"`
	Result  any  `json:"result"`
}

// errorBody is the failure envelope.
type errorBody struct {
	Success bool   `json:"success"`
	Error   string `json:"error"`
}

// writeJSON writes v compactly, without HTML escaping (titles are echoed
// as the caller sent them), with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	pooled := answerBuffers.Get().(*[]byte)
	defer func() {
		if cap(*pooled) <= maxPooledAnswer {
			answerBuffers.Put(pooled)
		}
	}()
	body, ok := appendSuccess((*pooled)[:0], v)
	if ok {
		*pooled = body // keeps a buffer that grew
	} else {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return err
		}
		body = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}

// answerBuffers hold the bytes of answers appendSuccess writes, between
// requests: every mint answers with one.
var answerBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledAnswer is the largest buffer kept in answerBuffers.
const maxPooledAnswer = 4096

// appendSuccess appends to dst a successBody whose result is a
// jsonAppender, encoded without reflection.
func appendSuccess(dst []byte, v any) ([]byte, bool) {
	sb, ok := v.(successBody)
	if !ok {
		return nil, false
	}
	a, ok := sb.Result.(jsonAppender)
	if !ok {
		return nil, false
	}
	body := strconv.AppendBool(append(dst, `{"success":`...), sb.Success)
	body, ok = a.appendJSON(append(body, `,"result":`...))
	return append(body, '}'), ok
}

func writeError(w http.ResponseWriter, status int, msg string) error {
	return writeJSON(w, status, errorBody{Success: false, Error: msg})
}

package caddymodule

import (
	"io"
	"net/http"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// When a request is charged: by what the upstream did, not by how its
// client left. A request is charged if its answer started, which is when
// the handlers after apikey_auth (the upstream's reverse_proxy) wrote the
// response's header: a final status (1xx informational ones do not
// count; 101 Switching Protocols does), or a byte of body or a flush
// before it. Then it is charged however the body's transfer ended:
// complete, cut by the client, or aborted (http.ErrAbortHandler). A
// request whose handlers ended without writing (an error such as
// reverse_proxy's 502 for an upstream it cannot reach, answered by the
// server's error routes on the writer apikey_auth was given; a panic)
// spends nothing. Nor does Caddy's 499, which reverse_proxy records
// without sending anything when the client left before the upstream
// answered.
//
// The credits are settled when the handlers end, returning or
// panicking, so that a gateway killed in the middle of an answer, which
// cannot have delivered it, holds them in its ledger and gives them back
// at its next start.

// statusClientClosed is the status reverse_proxy writes, to be logged,
// when the client left before the upstream answered.
const statusClientClosed = 499

// chargeWriter is the ResponseWriter the handlers after apikey_auth get
// for a request that holds credits: it notes when the answer starts, and
// settle spends or gives back the credits by that. It unwraps
// (http.ResponseController) to the writer it wraps, so that flushing and
// hijacking work through it.
type chargeWriter struct {
	caddyhttp.ResponseWriterWrapper
	charge   keystore.Charge
	answered atomic.Bool // a handler may flush from another goroutine
}

// settle spends the credits of an answered request and gives back those
// of any other; it runs once, when the handlers return or panic.
func (w *chargeWriter) settle() {
	if w.answered.Load() {
		w.charge.Commit()
	} else {
		w.charge.Cancel()
	}
}

func (w *chargeWriter) answer() {
	if !w.answered.Load() {
		w.answered.Store(true)
	}
}

// WriteHeader notes the answer at the first final status.
func (w *chargeWriter) WriteHeader(status int) {
	if status >= http.StatusOK && status != statusClientClosed || status == http.StatusSwitchingProtocols {
		w.answer()
	}
	w.ResponseWriter.WriteHeader(status)
}

// Write notes the answer: a body's first byte sends the header.
func (w *chargeWriter) Write(b []byte) (int, error) {
	w.answer()
	return w.ResponseWriter.Write(b)
}

// ReadFrom notes the answer, as Write does.
func (w *chargeWriter) ReadFrom(r io.Reader) (int64, error) {
	w.answer()
	return w.ResponseWriterWrapper.ReadFrom(r)
}

// FlushError notes the answer: a flush sends the header.
func (w *chargeWriter) FlushError() error {
	w.answer()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is FlushError for callers that look for http.Flusher.
func (w *chargeWriter) Flush() { _ = w.FlushError() }

// Interface guards
var (
	_ http.ResponseWriter = (*chargeWriter)(nil)
	_ http.Flusher        = (*chargeWriter)(nil)
	_ io.ReaderFrom       = (*chargeWriter)(nil)
)

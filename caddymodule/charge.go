package caddymodule

import (
	"io"
	"net/http"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// When a request is charged: by what the upstream did, not by how its
// client left. The credits a request holds are spent the moment its
// answer starts, which is when the handlers after apikey_auth (the
// upstream's reverse_proxy) write the response's header: the first final
// status (1xx informational ones do not count; 101 Switching Protocols
// does), or the first byte of body or flush before it. From then on the
// request is charged, however the body's transfer ends: complete, cut by
// the client, or aborted (http.ErrAbortHandler). A request whose handlers
// end without writing (an error such as reverse_proxy's 502 for an
// upstream it cannot reach, answered by the server's error routes on the
// writer apikey_auth was given; a panic) spends nothing. Nor does Caddy's
// 499, which reverse_proxy records without sending anything when the
// client left before the upstream answered.

// statusClientClosed is the status reverse_proxy writes, to be logged,
// when the client left before the upstream answered.
const statusClientClosed = 499

// chargeWriter is the ResponseWriter the handlers after apikey_auth get
// for a request that holds credits: it spends them when the answer
// starts, and finish gives back what an unanswered request held. It
// unwraps (http.ResponseController) to the writer it wraps, so flushing
// and hijacking work through it.
type chargeWriter struct {
	caddyhttp.ResponseWriterWrapper
	charge  keystore.Charge
	settled atomic.Bool // handlers may flush from another goroutine
}

// settle spends the credits held (spent) or gives them back, once.
func (w *chargeWriter) settle(spent bool) {
	if w.settled.Load() || !w.settled.CompareAndSwap(false, true) {
		return
	}
	if spent {
		w.charge.Commit()
	} else {
		w.charge.Cancel()
	}
}

// finish gives back the credits of a request that was not answered; it
// runs when the handlers return or panic.
func (w *chargeWriter) finish() { w.settle(false) }

// WriteHeader spends the credits at the first final status.
func (w *chargeWriter) WriteHeader(status int) {
	if status >= http.StatusOK && status != statusClientClosed || status == http.StatusSwitchingProtocols {
		w.settle(true)
	}
	w.ResponseWriter.WriteHeader(status)
}

// Write spends the credits: a body's first byte sends the header.
func (w *chargeWriter) Write(b []byte) (int, error) {
	w.settle(true)
	return w.ResponseWriter.Write(b)
}

// ReadFrom spends the credits, as Write does.
func (w *chargeWriter) ReadFrom(r io.Reader) (int64, error) {
	w.settle(true)
	return w.ResponseWriterWrapper.ReadFrom(r)
}

// FlushError spends the credits: a flush sends the header.
func (w *chargeWriter) FlushError() error {
	w.settle(true)
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

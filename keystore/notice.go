package keystore

import (
	"encoding/json"
	"time"
)

// Notice is one event waiting for (or done with) delivery to one
// endpoint. Notices are kept in the store so that deliveries survive
// restarts and are shared by every gateway of a cluster: a gateway
// leases a notice before it sends it, so that one delivers it.
type Notice struct {
	// Endpoint is the id of the endpoint it goes to; ID the event's id,
	// the same for every endpoint. Together they name the notice.
	Endpoint string `json:"-"`
	ID       string `json:"-"`
	// Type is the event's type, e.g. key.leaked.
	Type string `json:"type"`
	// Body is the payload sent, exactly (it is signed as it is).
	Body json.RawMessage `json:"body,omitempty"`
	// Created is when the event happened.
	Created time.Time `json:"created"`
	// Attempts counts failed deliveries; NextAttempt is when the next
	// may start.
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// LeaseUntil: a gateway delivers the notice until then; others
	// leave it alone.
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Done is when it was delivered, or given up; it is then kept (so
	// that the same event is not queued again) until KeepUntil.
	Done      time.Time `json:"done,omitzero"`
	GaveUp    bool      `json:"gave_up,omitempty"`
	KeepUntil time.Time `json:"keep_until"`
	// LastError says why the last delivery failed.
	LastError string `json:"last_error,omitempty"`
}

package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// Remote runs operations through a running gateway's admin API.
type Remote struct {
	// Client reaches the admin endpoint (a TCP address or a Unix socket).
	Client *http.Client
	// Base is the URL the paths are joined to, e.g. "http://localhost:2019".
	Base string
	// Origin, if set, is sent as the Origin header, which Caddy's admin
	// endpoint checks on TCP.
	Origin string
}

// ErrUnreachable wraps the failure to reach the admin API at all.
type ErrUnreachable struct{ Err error }

func (e *ErrUnreachable) Error() string { return e.Err.Error() }
func (e *ErrUnreachable) Unwrap() error { return e.Err }

func (c *Remote) call(ctx context.Context, op route, in, out any) error {
	var body io.Reader
	uri := c.Base + Prefix + encodePath(op, in)
	if hasBody(op.method()) {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	} else {
		uri += encodeQuery(in)
	}
	req, err := http.NewRequestWithContext(ctx, op.method(), uri, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Origin != "" {
		req.Header.Set("Origin", c.Origin)
	}
	client := c.Client
	stream, isStream := out.(received)
	if isStream {
		// A backup takes as long as its size needs; ctx bounds it.
		unbounded := *client
		unbounded.Timeout = 0
		client = &unbounded
	}
	res, err := client.Do(req)
	if err != nil {
		return &ErrUnreachable{err}
	}
	if isStream && res.StatusCode == http.StatusOK {
		return stream.receive(res)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the admin API's answer: %w", err)
	}
	if res.StatusCode >= 300 {
		// Caddy writes an admin error as {"error": "<message>"}.
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(res.StatusCode)
		}
		return wire.Fail(res.StatusCode, e.Error)
	}
	if res.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("reading the admin API's answer: %w", err)
	}
	return nil
}

// Close does nothing: each call makes its own request.
func (c *Remote) Close() error { return nil }

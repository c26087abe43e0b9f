// Package loopback gives servers that tests and benchmarks run as child
// processes loopback ports that no other process can take.
//
// A port found free and closed again, for the child to bind, can be taken
// by another process in between. A Port is instead listened on here, on a
// port the kernel picks, and handed to the child as an inherited file
// (Caddy names it fd/3, fd/4, … in its listen addresses); it stays
// listening for as long as it is held, so a child restarted on it finds
// the same socket.
package loopback

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// Port is a listening loopback TCP socket.
type Port struct {
	// Addr is its address, "127.0.0.1:<port>".
	Addr string
	// File is the socket, for exec.Cmd's ExtraFiles.
	File *os.File
}

// Hold listens on a loopback port the kernel picks. Close it when done.
func Hold() (Port, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Port{}, err
	}
	defer ln.Close() // the file is a second descriptor: it keeps listening
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return Port{}, err
	}
	return Port{Addr: ln.Addr().String(), File: f}, nil
}

// Number is the port's number, as a string.
func (p Port) Number() string {
	_, port, _ := net.SplitHostPort(p.Addr)
	return port
}

// Close stops listening (once no child holds the socket either).
func (p Port) Close() error { return p.File.Close() }

// WaitHTTP waits until a server answers an HTTP request on addr, whatever
// the answer, or ctx ends. Connecting proves nothing on a held port: the
// kernel accepts connections into its backlog before the server takes
// them.
func WaitHTTP(ctx context.Context, addr string) error {
	probe := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			return err
		}
		res, err := probe.Do(req)
		if err == nil {
			res.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nothing answered HTTP on %s: %w", addr, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

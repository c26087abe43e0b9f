package loopback

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

// A server given the port's file serves on it; once it stops, the held
// port still takes connections (for the next server); once the port is
// closed, connections are refused.
func TestHeldPortOutlivesItsServer(t *testing.T) {
	p, err := Hold()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(p.File) // what a child process does with fd/3
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go func() { _ = srv.Serve(ln) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := WaitHTTP(ctx, p.Addr); err != nil {
		t.Fatal(err)
	}
	_ = srv.Close()

	c, err := net.DialTimeout("tcp", p.Addr, time.Second)
	if err != nil {
		t.Fatalf("the held port refused a connection after its server stopped: %v", err)
	}
	_ = c.Close()

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr, time.Second); err == nil {
		_ = c.Close()
		t.Fatal("a closed port still took a connection")
	}
}

// WaitHTTP does not take a connection into the backlog for a server.
func TestWaitHTTPNeedsAnAnswer(t *testing.T) {
	p, err := Hold()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := WaitHTTP(ctx, p.Addr); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with nothing serving the port: %v, want the deadline", err)
	}
}

package testutil

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpEcho serves lines back on a loopback port until the test ends.
func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// lineConn is a connection to a line echo.
type lineConn struct {
	net.Conn
	r *bufio.Reader
}

func dialLines(t *testing.T, addr string) *lineConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &lineConn{Conn: c, r: bufio.NewReader(c)}
}

// echoWithin sends a line and reads it back, giving up after wait.
func (c *lineConn) echoWithin(wait time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err == nil && line != "ping\n" {
		return errors.New("echoed " + line)
	}
	return err
}

// mustBeSilent fails unless the line sent on c is neither answered nor
// refused within a while: the connection stays open and nothing passes.
func (c *lineConn) mustBeSilent(t *testing.T, what string) {
	t.Helper()
	if err := c.echoWithin(300 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: %v, want no answer and no close", what, err)
	}
}

func TestFaultProxy(t *testing.T) {
	p := NewFaultProxy(t, tcpEcho(t))
	used, idle := dialLines(t, p.Addr()), dialLines(t, p.Addr())
	for _, c := range []*lineConn{used, idle} {
		if err := c.echoWithin(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}

	p.Delay(100 * time.Millisecond)
	start := time.Now()
	if err := used.echoWithin(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 200*time.Millisecond {
		t.Fatalf("a round trip with 100ms each way took %v", rtt)
	}

	p.Blackhole()
	used.mustBeSilent(t, "an open connection in the black hole")
	during := dialLines(t, p.Addr()) // accepted, never answered
	during.mustBeSilent(t, "a new connection in the black hole")

	p.Pass()
	if err := dialLines(t, p.Addr()).echoWithin(5 * time.Second); err != nil {
		t.Fatalf("a new connection once the black hole closed: %v", err)
	}
	if err := idle.echoWithin(5 * time.Second); err != nil {
		t.Fatalf("a connection that sent nothing into the black hole: %v", err)
	}
	used.mustBeSilent(t, "a connection that lost bytes, after the black hole")
	during.mustBeSilent(t, "a connection made during the black hole, after it")
}

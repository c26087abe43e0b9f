package testutil

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// echo serves lines back, prefixed with name, on a unix socket at path.
func echo(t *testing.T, path, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, name+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln
}

func roundTrip(addr, line string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestForwardReachesTheSocketThroughARestart(t *testing.T) {
	path := filepath.Join(SocketDir(t, "fwd"), "s")
	addr := Forward(t, path)

	first := echo(t, path, "first:")
	if got, err := roundTrip(addr, "hello\n"); err != nil || got != "first:hello\n" {
		t.Fatalf("through the forwarder: %q, %v", got, err)
	}

	// Nothing behind the port: the connection is closed at once.
	_ = first.Close()
	if got, err := roundTrip(addr, "hello\n"); err == nil {
		t.Fatalf("with no server, got %q", got)
	}

	second := echo(t, path, "second:")
	defer second.Close()
	if got, err := roundTrip(addr, "again\n"); err != nil || got != "second:again\n" {
		t.Fatalf("after the restart: %q, %v", got, err)
	}
}

func TestForwardPassesTheServersClose(t *testing.T) {
	path := filepath.Join(SocketDir(t, "fwd"), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "bye")
		_ = c.Close()
	}()
	c, err := net.Dial("tcp", Forward(t, path))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want the server's bytes and its close", got, err)
	}
}

package testutil

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
)

// Forward listens on a loopback TCP port that the kernel picks, keeps it
// until the test ends, and passes each connection to the unix socket at
// path, returning the port's address ("127.0.0.1:port").
//
// It is for servers that cannot be handed a listener (etcd, Ory Hydra):
// they listen on unix sockets in a directory of the test's own, where no
// other process can take their address, and clients reach them here. A
// port found free and closed again, by contrast, can be taken by another
// process before the server binds it. The port outlives the server behind
// it: while nothing listens on path, connections are accepted and closed at
// once, as a dead server's would be refused, and a restarted server is
// reached at the same address.
func Forward(tb testing.TB, path string) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	f := &forwarder{path: path, ln: ln, conns: make(map[net.Conn]struct{})}
	f.wg.Add(1)
	go f.serve()
	tb.Cleanup(f.close)
	return ln.Addr().String()
}

// SocketDir returns a new directory for unix sockets, removed when the
// test ends. It is short, unlike t.TempDir's (named after the test): a
// socket's path may not exceed 107 bytes.
func SocketDir(tb testing.TB, prefix string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

type forwarder struct {
	path string
	ln   net.Listener
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return // closed
		}
		f.wg.Add(1)
		go f.pass(c)
	}
}

// pass copies between the client's connection and a new one to the
// socket, each direction until its end, and closes both.
func (f *forwarder) pass(client net.Conn) {
	defer f.wg.Done()
	server, err := net.Dial("unix", f.path)
	if err != nil {
		_ = client.Close()
		return
	}
	if !f.track(client, server) {
		return
	}
	defer f.untrack(client, server)
	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); halfCopy(server, client) }()
	go func() { defer copies.Done(); halfCopy(client, server) }()
	copies.Wait()
}

// halfCopy copies src to dst, then tells dst that nothing more comes, so
// that each side sees the other's close as it would without a forwarder.
func halfCopy(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := dst.(closeWriter); ok && err == nil {
		_ = cw.CloseWrite()
		return
	}
	// An error (a reset, or the forwarder closing) ends both directions.
	if err != nil && !errors.Is(err, net.ErrClosed) {
		_ = dst.Close()
		_ = src.Close()
	}
}

func (f *forwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *forwarder) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
		delete(f.conns, c)
	}
}

// close stops accepting, cuts every connection and waits for the copies.
func (f *forwarder) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

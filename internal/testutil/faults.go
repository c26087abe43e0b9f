package testutil

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FaultProxy is a TCP proxy from a loopback port to one address, whose
// behaviour the test switches while connections are open: it passes
// bytes, delays them, or black-holes them, as a network cut that drops
// packets would (no byte passes, and no connection is reset or closed).
//
// A connection that lost bytes to the black hole stays one after it ends:
// TCP never loses bytes from the middle of a stream, so passing the rest
// would hand each end a stream no network could. Such a connection is
// what a cut leaves when it also lost the connection's state (a NAT or
// firewall entry), and only the ends' own timeouts can clear it; new
// connections pass again. A connection that sent nothing during the cut
// goes on as before.
type FaultProxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup
	mode   atomic.Pointer[faultMode]

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// faultMode is what the proxy does with the bytes it reads.
type faultMode struct {
	blackhole bool
	delay     time.Duration
}

// NewFaultProxy listens on a loopback port that the kernel picks and
// passes each connection to target (host:port), until the test ends.
func NewFaultProxy(tb testing.TB, target string) *FaultProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &FaultProxy{target: target, ln: ln, conns: make(map[net.Conn]struct{})}
	p.mode.Store(&faultMode{})
	p.wg.Add(1)
	go p.serve()
	tb.Cleanup(p.close)
	return p
}

// Addr is where clients connect ("127.0.0.1:port").
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Pass lets bytes through at once, as a healthy network would.
func (p *FaultProxy) Pass() { p.mode.Store(&faultMode{}) }

// Delay holds every chunk of bytes for d in each direction before passing
// it on, so that a round trip takes 2d more; it does not limit bandwidth.
func (p *FaultProxy) Delay(d time.Duration) { p.mode.Store(&faultMode{delay: d}) }

// Blackhole drops every byte read from now on, both ways, and from then
// on every byte of the connections that lost one; connections and new
// ones are accepted and kept open, never reset.
func (p *FaultProxy) Blackhole() { p.mode.Store(&faultMode{blackhole: true}) }

func (p *FaultProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.pass(c)
	}
}

// faultConn is one proxied connection; lost is set once it dropped a byte.
type faultConn struct {
	p              *FaultProxy
	client, server net.Conn
	lost           atomic.Bool
}

// chunk is bytes read from one end, due at the other at due.
type chunk struct {
	data []byte
	due  time.Time
}

func (p *FaultProxy) pass(client net.Conn) {
	defer p.wg.Done()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	if !p.track(client, server) {
		return
	}
	defer p.untrack(client, server)
	c := &faultConn{p: p, client: client, server: server}
	var dirs sync.WaitGroup
	dirs.Go(func() { c.direction(client, server, true) })
	dirs.Go(func() { c.direction(server, client, false) })
	dirs.Wait()
}

// direction carries src's bytes to dst until src ends. toServer says
// which way: when the server ends a connection that lost bytes the
// client is not told, as nothing passes; when the client does, both ends
// are closed, so that connections do not pile up (the client's side is
// what a test watches).
func (c *faultConn) direction(src, dst net.Conn, toServer bool) {
	queue := make(chan chunk, 64)
	var delivered sync.WaitGroup
	delivered.Go(func() { c.deliver(dst, queue) })
	err := c.read(src, queue)
	close(queue)
	delivered.Wait()
	switch {
	case c.lost.Load() && !toServer:
	case c.lost.Load(), !errors.Is(err, io.EOF):
		// The client left a lost connection, or an end reset it (or
		// the proxy closed): end both directions.
		_ = c.client.Close()
		_ = c.server.Close()
	default:
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
}

// read passes what src sends to queue, dropping what the black hole
// takes, and returns the error that ended src (io.EOF for a close).
func (c *faultConn) read(src net.Conn, queue chan<- chunk) error {
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			if m := c.p.mode.Load(); m.blackhole || c.lost.Load() {
				c.lost.Store(true)
			} else {
				queue <- chunk{data: buf[:n], due: time.Now().Add(m.delay)}
			}
		}
		if err != nil {
			return err
		}
	}
}

// deliver writes each chunk to dst once it is due, unless the black hole
// opened meanwhile.
func (c *faultConn) deliver(dst net.Conn, queue <-chan chunk) {
	for ch := range queue {
		if d := time.Until(ch.due); d > 0 {
			time.Sleep(d) // the added latency
		}
		if c.p.mode.Load().blackhole || c.lost.Load() {
			c.lost.Store(true)
			continue
		}
		if _, err := dst.Write(ch.data); err != nil {
			// That end is gone: end both directions, as a reset would.
			_ = c.client.Close()
			_ = c.server.Close()
			for range queue {
			}
			return
		}
	}
}

func (p *FaultProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *FaultProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// close stops accepting, cuts every connection and waits for them.
func (p *FaultProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

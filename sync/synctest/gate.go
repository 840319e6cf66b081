package synctest

import (
	"io"
	"net"
	gosync "sync"
	"testing"
)

// Gate is a TCP forwarder in front of a broker that a test shuts and
// opens: shut, it drops the connections through it and closes new ones at
// once, as a network that lost the broker would, while the broker and the
// sessions it keeps stay up. A test holds a device away with it until the
// broker holds what the test needs (a command queued in the device's
// session, say), whatever the device's reconnection backoff does.
type Gate struct {
	Addr   string
	target string
	ln     net.Listener

	// mu guards the fields that follow.
	mu    gosync.Mutex
	open  bool
	conns map[net.Conn]bool
}

// NewGate forwards a loopback port to target (host:port); it starts open
// and closes at cleanup.
func NewGate(t testing.TB, target string) *Gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{Addr: ln.Addr().String(), target: target, ln: ln, open: true, conns: map[net.Conn]bool{}}
	go g.accept()
	t.Cleanup(func() { ln.Close(); g.Shut() })
	return g
}

// URL is the gate's address as a broker URL.
func (g *Gate) URL() string { return "tcp://" + g.Addr }

// Shut drops every connection through the gate and refuses new ones.
func (g *Gate) Shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = false
	for c := range g.conns {
		c.Close()
	}
	clear(g.conns)
}

// Open lets connections through again.
func (g *Gate) Open() {
	g.mu.Lock()
	g.open = true
	g.mu.Unlock()
}

func (g *Gate) accept() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		go g.forward(c)
	}
}

func (g *Gate) forward(c net.Conn) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	if !open {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", g.target)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if !g.open { // shut meanwhile
		g.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	g.conns[c], g.conns[up] = true, true
	g.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) { io.Copy(dst, src); done <- struct{}{} }
	go pipe(up, c)
	go pipe(c, up)
	<-done
	c.Close()
	up.Close()
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.conns, up)
	g.mu.Unlock()
}

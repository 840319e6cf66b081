//go:build linux && !386

package sipproxy

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestRawUDP checks that the raw socket calls give what net.UDPConn gives:
// the same datagrams, the same sender address as ReadMsgUDP would return
// (a dual-stack socket's IPv4 senders v4-mapped), the kernel's receive
// time, sends to IPv4 and IPv6 peers, and net.ErrClosed once the socket is
// closed (sipgo's reader stops on it).
func TestRawUDP(t *testing.T) {
	cases := []struct {
		name       string
		listen     string // the raw socket
		peer       string // a plain net.UDPConn talking to it
		want16Byte bool   // the sender as ReadMsgUDP gives it on this socket
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", false},
		{"ipv6", "[::1]:0", "[::1]:0", true},
		{"dual stack, ipv4 peer", "[::]:0", "127.0.0.1:0", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.ListenUDP("udp", mustUDPAddr(t, tc.listen))
			if err != nil {
				t.Skipf("no %s socket here: %v", tc.listen, err)
			}
			defer conn.Close()
			enableRxTimestamps(conn)
			raw, err := newRawUDP(conn)
			if err != nil {
				t.Fatal(err)
			}
			peer, err := net.ListenUDP("udp", mustUDPAddr(t, tc.peer))
			if err != nil {
				t.Skipf("no %s socket here: %v", tc.peer, err)
			}
			defer peer.Close()
			// The peer's own loopback address, at the raw socket's port.
			to := &net.UDPAddr{IP: peer.LocalAddr().(*net.UDPAddr).IP, Port: conn.LocalAddr().(*net.UDPAddr).Port}
			for _, payload := range []string{"OPTIONS sip:a SIP/2.0\r\n\r\n", ""} {
				// Twice: once for net.UDPConn, once for the raw calls.
				for range 2 {
					if _, err := peer.WriteToUDP([]byte(payload), to); err != nil {
						t.Fatal(err)
					}
				}
				b, oob := make([]byte, 2048), make([]byte, 128)
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _, _, netFrom, err := conn.ReadMsgUDP(b, oob)
				if err != nil {
					t.Fatal(err)
				}
				n, oobn, from, err := raw.readMsg(b, oob)
				if err != nil {
					t.Fatal(err)
				}
				if string(b[:n]) != payload {
					t.Fatalf("read %q, sent %q", b[:n], payload)
				}
				if rxTime(oob[:oobn]).IsZero() {
					t.Errorf("no receive time among %d bytes of control messages", oobn)
				}
				if string(from.IP) != string(netFrom.IP) || from.Port != netFrom.Port || from.Zone != netFrom.Zone {
					t.Errorf("sender %#v, net.UDPConn gives %#v", from, netFrom)
				}
				if got := len(from.IP) == 16; got != tc.want16Byte {
					t.Errorf("sender IP of %d bytes, want 16 bytes: %v", len(from.IP), tc.want16Byte)
				}
				// And back, to the address as read.
				reply := []byte("SIP/2.0 200 OK\r\n\r\n" + payload)
				if n, err := raw.writeTo(reply, from); err != nil || n != len(reply) {
					t.Fatalf("writeTo %v: %d, %v", from, n, err)
				}
				peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				m, _, err := peer.ReadFromUDP(b)
				if err != nil {
					t.Fatal(err)
				}
				if string(b[:m]) != string(reply) {
					t.Fatalf("peer read %q, want %q", b[:m], reply)
				}
			}
			// An address of the other family is refused as net refuses it.
			if tc.listen == "127.0.0.1:0" {
				if _, err := raw.writeTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP("::1"), Port: 9}); err == nil {
					t.Error("an IPv6 destination on an IPv4 socket was not refused")
				}
			}
			if _, err := raw.writeTo([]byte("x"), &net.UDPAddr{Port: 9}); err == nil {
				t.Error("a destination without an address was not refused")
			}
			// A reader parked in the poller returns net.ErrClosed on close.
			done := make(chan error, 1)
			go func() {
				conn.SetReadDeadline(time.Time{})
				_, _, _, err := raw.readMsg(make([]byte, 64), nil)
				done <- err
			}()
			conn.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("read on a closed socket: %v, want net.ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the reader did not return after close")
			}
		})
	}
}

func mustUDPAddr(t *testing.T, s string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRawUDPAllocations: the raw calls allocate no more than net.UDPConn's
// (the sender's address only): the callbacks and their arguments are kept,
// not made per datagram, on the path every SIP message takes.
func TestRawUDPAllocations(t *testing.T) {
	conn, err := net.ListenUDP("udp", mustUDPAddr(t, "127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := newRawUDP(conn)
	if err != nil {
		t.Fatal(err)
	}
	to := conn.LocalAddr().(*net.UDPAddr)
	msg, buf, oob := []byte("OPTIONS sip:a SIP/2.0\r\n\r\n"), make([]byte, 2048), make([]byte, 128)
	// Each datagram goes to the socket itself and is read back.
	rawAllocs := testing.AllocsPerRun(200, func() {
		if _, err := raw.writeTo(msg, to); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := raw.readMsg(buf, oob); err != nil {
			t.Fatal(err)
		}
	})
	netAllocs := testing.AllocsPerRun(200, func() {
		if _, err := conn.WriteTo(msg, to); err != nil {
			t.Fatal(err)
		}
		if _, _, _, _, err := conn.ReadMsgUDP(buf, oob); err != nil {
			t.Fatal(err)
		}
	})
	if rawAllocs > netAllocs {
		t.Errorf("raw write and read: %.0f allocations, net.UDPConn's: %.0f", rawAllocs, netAllocs)
	}
}

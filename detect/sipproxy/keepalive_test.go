package sipproxy

import (
	"bufio"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Phones behind NAT keep their flow open with RFC 5626 keep-alives: over
// TCP (and TLS) a double CRLF ping that the agent answers with a single
// CRLF pong, over UDP a bare CRLF datagram (or STUN, which the agent does
// not serve) that it drops quietly. Either way the connection stays up and
// the next request on it is served.
func TestKeepAlives(t *testing.T) {
	r := newRig(t, "udp", nil)
	options := func(tp string, port int) string {
		return "OPTIONS sip:127.0.0.1:" + strconv.Itoa(port) + " SIP/2.0\r\n" +
			"Via: SIP/2.0/" + tp + " 127.0.0.1:5099;branch=z9hG4bK-ka-" + strings.ToLower(tp) + ";rport\r\n" +
			"Max-Forwards: 70\r\nFrom: <sip:" + line + "@127.0.0.1>;tag=ka\r\nTo: <sip:127.0.0.1>\r\n" +
			"Call-ID: keepalive-" + tp + "\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	}

	t.Run("tcp", func(t *testing.T) {
		port := r.port("tcp")
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		for range 3 {
			if _, err := c.Write([]byte("\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			pong := make([]byte, 2)
			if _, err := c.Read(pong); err != nil || string(pong) != "\r\n" {
				t.Fatalf("pong to a CRLF ping = %q, %v; want CRLF", pong, err)
			}
		}
		if _, err := c.Write([]byte(options("TCP", port))); err != nil {
			t.Fatal(err)
		}
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "SIP/2.0 200") {
			t.Fatalf("OPTIONS after the keep-alives on the same connection: %q, %v; want 200", status, err)
		}
	})

	t.Run("udp", func(t *testing.T) {
		port := r.port("udp")
		c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		before := r.p.Stats().ParseErrors
		for _, ka := range []string{"\r\n", "\r\n\r\n"} {
			if _, err := c.Write([]byte(ka)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Write([]byte(options("UDP", port))); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 4096)
		n, err := c.Read(b)
		if err != nil || !strings.HasPrefix(string(b[:n]), "SIP/2.0 200") {
			t.Fatalf("first datagram back = %q, %v; want the OPTIONS' 200 and nothing for the keep-alives", b[:n], err)
		}
		if got := r.p.Stats().ParseErrors; got != before {
			t.Errorf("keep-alives counted as %d malformed messages", got-before)
		}
	})
}

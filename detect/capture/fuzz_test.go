package capture

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzRead feeds the reader arbitrary files: it must return an error or
// messages, never panic, and every message must be a whole SIP message
// within the size cap. Seeds are small captures of each kind the reader
// decodes, each also cut short, and the small public captures when they
// are beside the repository (read, not copied).
func FuzzRead(f *testing.F) {
	inv := sipMsg("INVITE sip:+15557654321@edge.example SIP/2.0", "c1", 120)
	ok := sipMsg("SIP/2.0 200 OK", "c1", 0)
	two := append(append([]byte(nil), inv...), ok...)
	seeds := [][]byte{
		writePCAP(f, linkEthernet, []frame{{0, ip(pbx, edge, protoUDP, udp(pbx, edge, inv))}}),
		writePCAPNG(f, linkEthernet, []frame{{0, ip(pbx6, edg6, protoUDP, udp(pbx6, edg6, inv))}}),
		writePCAP(f, linkEthernet, []frame{
			{0, ip(pbx, edge, protoTCP, tcp(pbx, edge, 1, 0, two[:100]))},
			{1, ip(pbx, edge, protoTCP, tcp(pbx, edge, 101, 0, two[100:]))},
		}),
		writePCAP(f, linkSLL, []frame{{0, sll(etIPv4, ipv4(pbx.Addr(), edge.Addr(), protoUDP, 4, 0, true, udp(pbx, edge, inv)[:64]))}}),
		writePCAPNG(f, linkSLL2, []frame{{0, sll2(etIPv4, ipv4(pbx.Addr(), edge.Addr(), protoUDP, 1, 0, false, udp(pbx, edge, hep3(pbx, edge, t0, inv))))}}),
		writePCAP(f, linkEthernet, []frame{{0, ip(pbx, edge, protoTCP, tcp(pbx, edge, 1, 0, append([]byte("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n"), wsFrame(inv, []byte{9, 8, 7, 6})...)))}}),
	}
	for _, s := range seeds {
		f.Add(s)
		f.Add(s[:len(s)*2/3])
		f.Add(s[:30])
	}
	if dir, err := filepath.Abs("../../../shared/captures"); err == nil {
		for _, name := range []string{"sngrep-ipip.pcap", "heplify-sip_sctp.pcap", "heplify-sip_ipv6_udp.pcap"} {
			if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		opts := Options{MaxFlows: 8, MaxFlowBuffer: 4096, MaxMessage: 2048}
		msgs, st, _ := Read(bytes.NewReader(data), opts)
		if st.Messages != len(msgs) {
			t.Fatalf("stats say %d messages, got %d", st.Messages, len(msgs))
		}
		for _, m := range msgs {
			if ok, _ := startLine(m.Data); !ok {
				t.Fatalf("message without a start line: %q", m.Data[:min(len(m.Data), 60)])
			}
			if len(m.Data) > opts.MaxMessage {
				t.Fatalf("message of %d bytes over the cap %d", len(m.Data), opts.MaxMessage)
			}
		}
	})
}

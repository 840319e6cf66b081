package sipproxy

import (
	"bytes"
	"testing"
)

func TestPeek(t *testing.T) {
	tests := []struct {
		name     string
		msg      string
		response bool
		method   string
		to, ua   string
		scanner  bool
	}{
		{"svwar REGISTER", "REGISTER sip:10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK-1;rport\r\nMax-Forwards: 70\r\n" +
			"To: \"100\"<sip:100@10.0.0.1>\r\nFrom: \"100\"<sip:100@10.0.0.1>;tag=x\r\nUser-Agent: friendly-scanner\r\nCall-ID: 1\r\nCSeq: 1 REGISTER\r\n\r\n",
			false, "REGISTER", "100", "friendly-scanner", true},
		{"compact To, no user agent", "INVITE sip:+15551230001@h SIP/2.0\nt: <sip:+15551230001@h;user=phone>;tag=1\n\n", false, "INVITE", "+15551230001", "", false},
		{"tel URI", "INVITE tel:+15551230001 SIP/2.0\r\nTo: <tel:+15551230001;phone-context=x>\r\n\r\n", false, "INVITE", "+15551230001", "", false},
		{"no user part", "OPTIONS sip:h SIP/2.0\r\nTo: <sip:h>\r\nUser-Agent: Linphone/5.2 (belle-sip)\r\n\r\n", false, "OPTIONS", "", "Linphone/5.2 (belle-sip)", false},
		{"response", "SIP/2.0 401 Unauthorized\r\nTo: <sip:100@h>;tag=2\r\n\r\n", true, "", "100", "", false},
		{"header after the body is not read", "MESSAGE sip:a@h SIP/2.0\r\nTo: <sip:a@h>\r\n\r\nUser-Agent: sipvicious\r\n", false, "MESSAGE", "a", "", false},
		{"first To only", "INVITE sip:a@h SIP/2.0\r\nTo: <sip:a@h>\r\nTo: <sip:b@h>\r\n\r\n", false, "INVITE", "a", "", false},
		{"case and spaces", "INVITE sip:a@h SIP/2.0\r\nuser-AGENT :  SIPVicious PRO \r\nTO:sip:a@h\r\n\r\n", false, "INVITE", "a", "SIPVicious PRO", true},
		{"garbage", "\x00\x01\x02 hello", false, "", "", "", false},
		{"method too long", "ABCDEFGHIJKLMNOPQRSTUVWXYZ sip:a SIP/2.0\r\n\r\n", false, "", "", "", false},
		{"empty", "", false, "", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk := peek([]byte(tt.msg))
			if pk.response != tt.response || pk.method != tt.method || string(pk.toUser) != tt.to || string(pk.userAgent) != tt.ua || pk.scanner != tt.scanner {
				t.Errorf("peek = {response %v method %q to %q ua %q scanner %v}, want {%v %q %q %q %v}",
					pk.response, pk.method, pk.toUser, pk.userAgent, pk.scanner, tt.response, tt.method, tt.to, tt.ua, tt.scanner)
			}
		})
	}
}

// FuzzPeek: any bytes peek without a panic; what it returns lies within
// the first peekLimit bytes it was given, and a method is a token.
func FuzzPeek(f *testing.F) {
	full := "REGISTER sip:10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK-1;rport\r\n" +
		"To: \"100\"<sip:100@10.0.0.1>\r\nUser-Agent: friendly-scanner\r\nCSeq: 1 REGISTER\r\n\r\n"
	// Truncated frames, as nats-server seeds its parser.
	for _, n := range []int{0, 1, 9, 31, 40, 60, 95, len(full)} {
		f.Add([]byte(full[:min(n, len(full))]))
	}
	f.Add([]byte("SIP/2.0 200 OK\r\nt: sip:@\r\n\r\n"))
	f.Add([]byte("INVITE tel: SIP/2.0\nTo: tel:\nUser-Agent:\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pk := peek(data)
		head := data[:min(len(data), peekLimit)]
		for _, part := range [][]byte{pk.toUser, pk.userAgent} {
			if len(part) > 0 && !bytes.Contains(head, part) {
				t.Fatalf("peek returned %q, not in its input", part)
			}
		}
		if pk.method != "" && (!isToken([]byte(pk.method)) || len(pk.method) > 16 || pk.response) {
			t.Fatalf("method %q", pk.method)
		}
		var s srcState
		s.note(pk) // counts whatever peek found
		if s.requests != 1 || len(printable(pk.userAgent, 64)) > 64 {
			t.Fatal("note")
		}
	})
}

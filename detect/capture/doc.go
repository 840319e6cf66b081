// Package capture reads SIP messages out of packet captures (pcap and
// pcapng files written by tcpdump, Wireshark, dumpcap or sngrep), so that
// `leadport-agent analyze` can replay real traffic through the rules.
//
// The data flow, one file per stage:
//
//	read.go      file format (pcap, pcapng) -> frames with their link type
//	pcapng.go    a framing check in front of the pcapng reader
//	decode.go    link (Ethernet, Linux cooked SLL/SLL2, raw IP, loopback),
//	             tunnels (IP-in-IP, GRE, ERSPAN), IPv4/IPv6 with fragment
//	             reassembly -> UDP, TCP and SCTP payloads
//	stream.go    TCP: per-flow reassembly in sequence order, SIP split by
//	             Content-Length, WebSocket frames (RFC 7118)
//	sip.go       what a SIP message looks like; HEP3 (Homer) envelopes
//
// The file formats are gopacket's pure-Go pcapgo (no cgo). The headers are
// decoded here rather than with gopacket/layers: the captures a technician
// brings are tunnelled (ERSPAN, IP-in-IP) and fragmented, which layers
// decodes but does not reassemble, and this package must survive hostile
// input under the fuzzer with bounded memory; a small decoder that keeps
// only what SIP needs is easier to bound and to fuzz than layers' object
// per header.
//
// Memory is bounded: IP fragments, TCP flows and their buffers each have a
// cap (Options); what does not fit is dropped and counted in Stats, never
// an error. The messages themselves are returned whole: they are the SIP
// signalling only (no media), a small share of any capture.
package capture

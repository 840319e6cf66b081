// Package capture reads SIP messages out of packet captures (pcap and
// pcapng files written by tcpdump, Wireshark, dumpcap or sngrep), so that
// `leadport-agent analyze` can replay real traffic through the rules.
//
// The data flow, one file per stage:
//
//	read.go      file format (pcap here, pcapng in pcapng.go) -> frames
//	             with their link type and time
//	decode.go    link (Ethernet, Linux cooked SLL/SLL2, raw IP, loopback),
//	             tunnels (IP-in-IP, GRE, ERSPAN), IPv4/IPv6 with fragment
//	             reassembly -> UDP, TCP and SCTP payloads
//	stream.go    TCP: per-flow reassembly in sequence order, SIP split by
//	             Content-Length, WebSocket frames (RFC 7118)
//	sip.go       what a SIP message looks like; HEP3 (Homer) envelopes
//
// Both file formats and every header are read here, without gopacket.
// gopacket's pcapgo was the first choice, but it links gopacket/layers,
// whose init fills metadata tables of 65,536 entries: measured on the
// agent binary, +1.5 MB of binary and +7.5 MB of resident memory at every
// start (12 MB to 19.7 MB for `leadport-agent version`), on ARM boxes with
// little memory, for a subcommand. pcapgo v1.1.19 (2020) also allocates
// whatever length a corrupt pcapng block claims. The formats are small
// (draft-ietf-opsawg-pcap, -pcapng); the captures beside the repository,
// written by tcpdump, dumpcap and sngrep, check this reader against real
// writers, and FuzzRead against hostile ones.
//
// Memory is bounded: IP fragments, TCP flows and their buffers each have a
// cap (Options); what does not fit is dropped and counted in Stats, never
// an error. The messages themselves are returned whole: they are the SIP
// signalling only (no media), a small share of any capture.
package capture

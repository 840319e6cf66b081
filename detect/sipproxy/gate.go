package sipproxy

import "net"

// gateRead is asked for every UDP datagram from src before anything else
// reads it; false drops it. It is where per-source limits apply.
func (p *Proxy) gateRead(src *net.UDPAddr, data []byte) bool { return true }

// gateWrite is asked before n bytes go to dst over UDP; false drops them.
func (p *Proxy) gateWrite(dst net.Addr, n int) bool { return true }

//go:build !linux && !darwin

package api

import "net"

// peerCreds: this platform's peer credentials are not read here (windows
// has none for unix sockets), so the socket is read-only too.
func peerCreds(*net.UnixConn) (creds, error) { return creds{}, errNoCreds }

package api

import (
	"context"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// maxBody caps every request body: the largest the API takes is a consent
// record, whose evidence reference is at most 1 KiB.
const maxBody = 16 << 10

type authorKey struct{}

// author is the user a change is recorded as, set by the guard once it
// allowed the change.
func author(ctx context.Context) string {
	s, _ := ctx.Value(authorKey{}).(string)
	return s
}

// guard is the API's boundary, in the order a request meets it:
//
//  1. Over TCP, the Host must be this listener's loopback address: a page
//     that re-points its own name at 127.0.0.1 (DNS rebinding) is
//     same-origin to the browser, so only the Host it sends gives it away.
//  2. A request a browser sends for a page of another origin is refused.
//  3. Reads (GET, HEAD) are open to whoever reached the listener.
//  4. Changes come only over the socket, from peers the kernel names as
//     writers (see writers), as application/json.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := peerOf(r)
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		// A page's attempts are logged for debugging only: any site a
		// technician opens can make them by the hundred.
		level := slog.LevelDebug
		refuse := func(status int, msg string) {
			s.log.Log(r.Context(), level, "local API request refused", "method", r.Method, "path", r.URL.Path, "host", r.Host,
				"origin", r.Header.Get("Origin"), "status", status, "reason", msg)
			writeError(w, status, msg)
		}
		if !p.unix && !loopbackHost(r.Host, p.port) {
			refuse(http.StatusForbidden, "Host "+r.Host+" is not this API's address: use 127.0.0.1, localhost or [::1] with port "+p.port)
			return
		}
		if msg := crossOrigin(r); msg != "" {
			refuse(http.StatusForbidden, msg)
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		name, err := s.writers.allow(p)
		if err != nil {
			// A local program trying to change state is worth a warning.
			level = slog.LevelWarn
			refuse(http.StatusForbidden, err.Error())
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			refuse(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), authorKey{}, name)))
	})
}

// loopbackHost reports whether host is the TCP listener's own address:
// 127.0.0.1, localhost or [::1] with the listener's port (browsers leave
// out only the scheme's default port).
func loopbackHost(host, port string) bool {
	if port == "" {
		return false
	}
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		// No port: the scheme's default.
		h, p = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), "80"
	}
	if p != port {
		return false
	}
	switch strings.ToLower(h) {
	case "127.0.0.1", "localhost", "::1":
		return true
	}
	return false
}

// crossOrigin says why a request that a browser sends on behalf of a page
// from elsewhere is refused, or "". The status page itself is
// same-origin; curl and the CLI send no Origin.
func crossOrigin(r *http.Request) string {
	origin := r.Header.Get("Origin")
	if origin == "" {
		// Sent by browsers only: "none" is the user typing the address,
		// "same-site" another port of the same host.
		switch r.Header.Get("Sec-Fetch-Site") {
		case "", "none", "same-origin":
			return ""
		}
		return "cross-site requests (another site, or another port of this host) are refused"
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host != r.Host || (u.Scheme != "http" && u.Scheme != "https") {
		return "requests from another origin are refused"
	}
	return ""
}

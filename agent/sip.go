package agent

import (
	"crypto/tls"
	"fmt"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/sipproxy"
)

func endpoint(e config.Endpoint) sipproxy.Endpoint {
	return sipproxy.Endpoint{Transport: e.Transport, Host: e.Host, Port: e.Port}
}

func endpoints(es []config.Endpoint) []sipproxy.Endpoint {
	out := make([]sipproxy.Endpoint, len(es))
	for i, e := range es {
		out[i] = endpoint(e)
	}
	return out
}

// newProxy builds the SIP proxy from the config, its ended calls going to
// sink as usage records. It returns nil when the proxy is not configured
// (no upstream yet).
func (a *Agent) newProxy(sink *recordSink) (*sipproxy.Proxy, error) {
	s := a.cfg.SIP
	if s.Mode != config.ModeProxy || s.Upstream.IsZero() {
		return nil, nil
	}
	var tlsConf *tls.Config
	if s.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.TLS.CertFile, s.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("sip.tls: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// sipgo logs some errors through its package logger, whole messages
	// included: route it through the same number-masking handler.
	sip.SetDefaultLogger(sipproxy.LibraryLogger(a.log))
	lines, _ := detect.NewLines(a.cfg.Lines, a.cfg.DefaultCountry)
	tracker := dialog.New(dialog.Options{
		MaxDuration: s.MaxCall(),
		OnEnd:       func(c dialog.Call) { sink.Put(usageOf(c)) },
	})
	return sipproxy.New(sipproxy.Options{
		Listen:         endpoints(s.Listen),
		UpstreamListen: endpoints(s.UpstreamListen),
		Advertise:      s.Advertise,
		Upstream:       endpoint(s.Upstream),
		Local:          endpoint(s.Local),
		RegisterMode:   sipproxy.RegisterMode(s.RegisterMode),
		TLS:            tlsConf,
		Lines:          lines,
		Decider:        detect.AllowAll,
		Tracker:        tracker,
		Logger:         a.log,
	})
}

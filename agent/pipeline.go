package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
	"github.com/leadport/leadport-agent/detect/sipproxy"
	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"
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
	tlsConf, err := sipTLS(s)
	if err != nil {
		return nil, err
	}
	// sipgo logs some errors through its package logger, whole messages
	// included: route it through the same number-masking handler.
	sip.SetDefaultLogger(sipproxy.LibraryLogger(a.log))
	engine, err := a.newRules(sink)
	if err != nil {
		return nil, err
	}
	tracker := dialog.New(dialog.Options{
		MaxDuration: s.MaxCall(),
		OnEnd: func(c dialog.Call) {
			engine.CallEnded(c)
			// Only an answered call ends with a BYE whose answer waits for
			// its record; a dialer's failed attempts, by the thousand a
			// second, are left to gather into one commit.
			if c.Disposition == dialog.Answered && !c.Expired {
				a.durable.add(c.Key(), sink.PutDurable(usageOf(c)))
				return
			}
			sink.Put(usageOf(c))
		},
		OnAnswer: engine.CallAnswered,
	})
	a.tracker = tracker
	a.resumeCalls(sink)
	cp := &callCheckpoint{store: a.store, tracker: tracker, log: a.log}
	sink.setCheckpoint(cp.save)
	var signer detect.CallSigner
	if s.Identity == config.IdentitySign {
		signer = a.signer
	}
	return sipproxy.New(sipproxy.Options{
		Listen:         endpoints(s.Listen),
		UpstreamListen: endpoints(s.UpstreamListen),
		Advertise:      s.Advertise,
		Upstream:       endpoint(s.Upstream),
		Local:          endpoint(s.Local),
		RegisterMode:   sipproxy.RegisterMode(s.RegisterMode),
		TLS:            tlsConf,
		Lines:          engine.Lines(),
		Decider:        engine,
		Signer:         signer,
		Recorded:       a.durable.take,
		MemoryBudget:   int64(a.cfg.MemoryBudget),
		OnBacklog:      a.OnBacklog,
		Tracker:        tracker,
		Logger:         a.log,
		Security:       securityOf(engine.Policy().Security),
		OnScan:         a.onScan(sink),
	})
}

// newRules builds the rules engine from the config's policy and lines;
// its violations go to sink.
func (a *Agent) newRules(sink *recordSink) (*rules.Engine, error) {
	pol := a.cfg.Policy
	pol.Lines = a.cfg.Lines
	engine, err := rules.New(pol, rules.Options{
		DefaultCountry: a.cfg.DefaultCountry,
		MaxDuration:    a.cfg.SIP.MaxCall(),
		OnViolation: func(v rules.Violation) {
			sink.Put(violationOf(v))
			a.recent.add(v)
			a.log.Info("rule tripped", "rule", v.Rule, "line", phone.Mask(v.Line), "action", v.Action, "confidence", v.Confidence, "call_id", v.CallID)
		},
		OnRuleError: func(rule string, err error) {
			a.log.Error("rule failed; request let through", "rule", rule, "err", sipproxy.MaskNumbers(err.Error()))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	a.rules = engine
	a.restoreSavedPolicy()
	return engine, nil
}

// restoreSavedPolicy puts back the platform's last policy, which outranks
// the config file's (version 0) until the platform sends a newer one.
func (a *Agent) restoreSavedPolicy() {
	version, doc, err := a.store.Policy()
	if err != nil || version <= 0 || doc == nil {
		if err != nil {
			a.log.Error("saved policy not read; the config's applies", "err", err)
		}
		return
	}
	p, err := policy.Parse(doc)
	if err == nil {
		if len(p.Lines) == 0 {
			p.Lines = a.cfg.Lines
		}
		err = a.rules.SetPolicy(p)
	}
	if err != nil {
		a.log.Error("saved policy not applied; the config's applies", "version", version, "err", err)
		return
	}
	a.log.Info("saved policy applied", "version", version)
}

// violationOf turns a rule's finding into its record.
func violationOf(v rules.Violation) *store.Violation {
	ev, err := json.Marshal(v.Evidence)
	if err != nil {
		ev = nil
	}
	return &store.Violation{
		Rule: v.Rule, Line: v.Line, Action: string(v.Action), At: v.At.UTC(),
		CallID: v.CallID, Evidence: ev, Numbers: v.Numbers,
		Confidence: string(v.Confidence), Score: v.Score,
	}
}

// restorePolicyUsage gives the rules back what they had counted before a
// restart (minutes toward the monthly quota).
func (a *Agent) restorePolicyUsage() {
	doc, err := a.store.PolicyUsage()
	if err != nil || doc == nil {
		if err != nil {
			a.log.Error("policy usage not restored", "err", err)
		}
		return
	}
	var uses []rules.QuotaUse
	if err := json.Unmarshal(doc, &uses); err != nil {
		a.log.Error("policy usage not restored", "err", err)
		return
	}
	a.rules.RestoreQuota(uses)
}

func (a *Agent) savePolicyUsage() {
	doc, err := json.Marshal(a.rules.QuotaUsage())
	if err == nil {
		err = a.store.SavePolicyUsage(doc)
	}
	if err != nil {
		a.log.Error("policy usage not saved", "err", err)
	}
}

// every runs f each period until ctx ends.
func every(ctx context.Context, period time.Duration, f func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// ApplyPolicy puts a new policy in force: new requests see it at once,
// calls in progress go on. Its lines, when it names none, are the
// configured ones. It is kept in the store, so a restart applies it
// before the platform is reachable again. An invalid policy changes
// nothing.
func (a *Agent) ApplyPolicy(p policy.Policy) error {
	if len(p.Lines) == 0 {
		p.Lines = a.cfg.Lines
	}
	if a.rules == nil {
		// No SIP proxy yet: keep the policy for when there is one.
		if probs := p.Problems(); len(probs) > 0 {
			return fmt.Errorf("policy version %d: %w", p.Version, &policy.Error{Problems: probs})
		}
	} else {
		if err := a.rules.SetPolicy(p); err != nil {
			return fmt.Errorf("policy version %d: %w", p.Version, err)
		}
		if a.proxy != nil {
			a.proxy.SetLines(a.rules.Lines())
			a.proxy.SetSecurity(securityOf(p.Security))
		}
	}
	// Saved without the configured lines, so that a changed config's
	// lines still apply after a restart unless the platform named some.
	saved := p
	if sameLines(p.Lines, a.cfg.Lines) {
		saved.Lines = nil
	}
	doc, err := json.Marshal(saved)
	if err == nil {
		err = a.store.SavePolicy(p.Version, doc)
	}
	if err != nil {
		return fmt.Errorf("policy version %d applied but not saved: %w", p.Version, err)
	}
	a.log.Info("policy applied", "version", p.Version, "lines", len(p.Lines), "rules_running", a.rules != nil)
	return nil
}

func sameLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sipTLS is the TLS configuration of the proxy: the certificate of its
// tls:// listeners, and the roots a tls:// upstream must chain to (the
// system's unless sip.tls.ca_file names a bundle). Nil when SIP uses no TLS.
func sipTLS(s config.SIP) (*tls.Config, error) {
	if s.TLS.CertFile == "" && s.TLS.CAFile == "" && s.Upstream.Transport != "tls" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.TLS.CertFile, s.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("sip.tls: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if s.TLS.CAFile != "" {
		pem, err := os.ReadFile(s.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("sip.tls.ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sip.tls.ca_file: %s holds no PEM certificate", s.TLS.CAFile)
		}
	}
	return c, nil
}

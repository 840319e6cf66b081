package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/disk"
	"github.com/shirou/gopsutil/v3/host"
	"github.com/shirou/gopsutil/v3/load"
	"github.com/shirou/gopsutil/v3/mem"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/sipproxy"
	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"
	lpsync "github.com/leadport/leadport-agent/sync"
	"github.com/leadport/leadport-agent/sync/command"
)

// newSync builds the MQTT client from the config; nil when no broker is
// configured (records then wait in the store).
func (a *Agent) newSync() (*lpsync.Client, error) {
	m := a.cfg.MQTT
	if len(m.Brokers) == 0 {
		return nil, nil
	}
	if strings.Contains(a.deviceID, ".") {
		a.log.Warn("the device id has a '.': NATS brokers refuse it as an MQTT client id, in every version (mosquitto and others take it; docs/fleet.md)", "device_id", a.deviceID)
	}
	tlsConf, err := MQTTTLS(m)
	if err != nil {
		return nil, err
	}
	var password string
	if m.PasswordFile != "" {
		b, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.password_file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	return lpsync.New(lpsync.Options{
		Brokers:        m.Brokers,
		TopicPrefix:    m.TopicPrefix,
		DeviceID:       a.deviceID,
		TLS:            tlsConf,
		Username:       m.Username,
		Password:       password,
		Store:          a.store,
		Verifier:       &command.Verifier{Keys: a.cfg.Commands.TrustedKeys, Device: a.deviceID},
		Handler:        commandHandler{a},
		Status:         a.statusDoc,
		Identity:       a.signer.identity,
		StatusInterval: a.cfg.MQTT.StatusInterval(),
		Logger:         a.log.With("part", "sync"),
	})
}

// MQTTTLS is the TLS for ssl:// and wss:// brokers: the system roots or
// the configured CA, and a client certificate when one is configured.
// doctor and the fleet tools use it too, so they connect as the agent does.
func MQTTTLS(m config.MQTT) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if m.TLS.CAFile != "" {
		pem, err := os.ReadFile(m.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.tls.ca_file: %s holds no PEM certificate", m.TLS.CAFile)
		}
		conf.RootCAs = pool
	}
	if m.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(m.TLS.CertFile, m.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.cert_file/key_file: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// commandHandler carries out the platform's verified commands.
type commandHandler struct{ a *Agent }

func (h commandHandler) Execute(_ context.Context, c *command.Command) lpsync.Outcome {
	a := h.a
	fail := func(err error) lpsync.Outcome {
		a.log.Error("command failed", "command_id", c.ID, "type", c.Type, "err", err)
		return lpsync.Outcome{Status: lpsync.Failed, Reason: err.Error()}
	}
	done := func(v any) lpsync.Outcome {
		b, err := json.Marshal(v)
		if err != nil {
			return fail(err)
		}
		return lpsync.Outcome{Status: lpsync.Done, Result: b}
	}
	switch c.Type {
	case command.TypeErase:
		args := c.Erase()
		if args.All {
			res, err := a.store.EraseAll()
			if err != nil {
				return fail(err)
			}
			return done(res)
		}
		res, err := a.store.EraseSubject(args.Subject)
		if err != nil {
			return fail(err)
		}
		return done(res)
	case command.TypeExport:
		subject := c.Export().Subject
		recs, err := a.store.Export(subject)
		if err != nil {
			return fail(err)
		}
		if recs == nil {
			recs = []store.Record{}
		}
		out := done(map[string]any{"subject": subject, "records": recs})
		out.Subject = subject
		return out
	case command.TypePolicy:
		p, err := policy.Parse(c.Args)
		if err != nil {
			return lpsync.Outcome{Status: lpsync.Rejected, Reason: string(command.Malformed) + ": " + err.Error()}
		}
		if err := a.ApplyPolicy(p); err != nil {
			return fail(err)
		}
		return done(map[string]any{"version": p.Version})
	case command.TypePing:
		return lpsync.Outcome{Status: lpsync.Done}
	case command.TypeIdentityRotate:
		k, err := a.signer.rotate()
		if err != nil {
			return fail(err)
		}
		id := IdentityOf(a.deviceID, k)
		a.log.Info("call-signing key rotated", "command_id", c.ID, "kid", id.KeyID)
		if a.sync != nil {
			a.sync.RefreshStatus() // publishes the new identity
		}
		return done(id)
	}
	return lpsync.Outcome{Status: lpsync.Rejected, Reason: string(command.Unsupported)}
}

func (h commandHandler) PolicyVersion() int64 {
	if h.a.rules != nil {
		return h.a.rules.Policy().Version
	}
	v, _, _ := h.a.store.Policy()
	return v
}

// statusDoc is the retained status (docs/protocol.md, "Status"); the sync
// client sets state, device_id and at.
func (a *Agent) statusDoc() lpsync.Status {
	doc := lpsync.Status{Version: Version().Version, StartedAt: a.started.UTC()}
	sip := &lpsync.SIPStatus{Mode: string(a.cfg.SIP.Mode)}
	if a.proxy != nil {
		s := a.proxy.Stats()
		for _, e := range a.cfg.SIP.Listen {
			sip.Listeners = append(sip.Listeners, e.String())
		}
		sip.Upstream = a.cfg.SIP.Upstream.String()
		sip.ActiveDialogs = s.CallsActive
		a.mu.Lock()
		if a.upstream != nil {
			u := *a.upstream
			sip.UpstreamCheck = &u
		}
		a.mu.Unlock()
		sip.Calls, sip.Blocks = s.CallsTotal, s.Blocked
		sip.Security = securityStatus(s.Security)
		sip.Register = a.registerStatus()
		sip.Admission = &lpsync.Admission{Refused: s.Overloaded, RefusedByReason: s.Shed, InHand: s.InHand,
			Pending: s.Pending, Unanswered: s.Unanswered, HeldBytes: s.Held, Runnable: s.Runnable, MemoryBudgetBytes: s.MemoryBudget,
			ByesHeld: s.DurableHeld, ByesHeldPeak: s.DurableHeldTop, Waiting: s.Waiting, WaitingPeak: s.WaitingTop}
	} else {
		sip.State = "off: sip.upstream is not set"
	}
	doc.SIP = sip
	if st, err := a.store.Stats(); err == nil {
		doc.Outbox = map[string]lpsync.OutboxStatus{}
		now := time.Now()
		for t, ts := range st.Outbox {
			o := lpsync.OutboxStatus{Pending: ts.Pending}
			if !ts.OldestCreated.IsZero() {
				o.OldestAgeS = int(now.Sub(ts.OldestCreated).Seconds())
			}
			doc.Outbox[t] = o
		}
		doc.Store = &lpsync.StoreStatus{SizeBytes: st.SizeBytes, MaxBytes: st.MaxBytes, Full: st.Full}
		a.mu.Lock()
		sink := a.sink
		a.mu.Unlock()
		if sink != nil {
			doc.Store.Queued, doc.Store.QueueHighWater = sink.queued(), sink.highWater.Load()
		}
	}
	doc.PolicyVersion = commandHandler{a}.PolicyVersion()
	id := a.identityStatus()
	doc.Identity = &id
	doc.Host = hostFigures(a.cfg.DataDir)
	return doc
}

// hostFigures are what a technician or the fleet view wants of the
// device; a figure the platform cannot read is left out.
func hostFigures(dataDir string) *lpsync.HostStatus {
	h := &lpsync.HostStatus{OS: runtime.GOOS, Arch: runtime.GOARCH}
	if p, err := cpu.Percent(0, false); err == nil && len(p) == 1 {
		h.CPUPercent = ptr(round1(p[0]))
	}
	if m, err := mem.VirtualMemory(); err == nil {
		h.MemoryTotalBytes, h.MemoryUsedPercent = ptr(m.Total), ptr(round1(m.UsedPercent))
	}
	if d, err := disk.Usage(dataDir); err == nil {
		h.DiskFreeBytes = ptr(d.Free)
	}
	if l, err := load.Avg(); err == nil {
		h.Load1, h.Load5, h.Load15 = ptr(l.Load1), ptr(l.Load5), ptr(l.Load15)
	}
	if up, err := host.Uptime(); err == nil {
		h.UptimeS = ptr(up)
	}
	return h
}

func ptr[T any](v T) *T { return &v }

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// registerStatus is the registrations' part of the status; line numbers
// masked, as everywhere the agent shows them.
func (a *Agent) registerStatus() *lpsync.Register {
	r := &lpsync.Register{Mode: string(a.proxy.RegisterModeInForce())}
	r.Fallback = a.cfg.SIP.RegisterMode == string(sipproxy.RegisterPath) && r.Mode == string(sipproxy.RegisterContact)
	for line, res := range a.proxy.RegisterResults() {
		if res.Failing() {
			if r.LinesFailing == nil {
				r.LinesFailing = map[string]int{}
			}
			r.LinesFailing[phone.Mask(line)] = res.Status
		}
	}
	return r
}

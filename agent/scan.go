package agent

import (
	"encoding/json"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
	"github.com/leadport/leadport-agent/detect/sipproxy"
	"github.com/leadport/leadport-agent/store"
	lpsync "github.com/leadport/leadport-agent/sync"
)

// Scanners and floods: the proxy's gate (detect/sipproxy/gate.go) limits
// the sources it does not know and reports those that trip its limits;
// here the policy's security section becomes its settings, and each
// report a security.scan violation that goes to the store and the
// platform like the rules' violations.
//
//	policy.Security -> securityOf -> sipproxy.Options.Security / SetSecurity
//	sipproxy.ScanReport -> onScan -> sink (violation record), recent, log

// securityOf turns the policy's security section into the gate's
// settings. The policy was validated: a network that does not parse is
// left out.
func securityOf(s policy.Security) sipproxy.Security {
	out := sipproxy.Security{
		RequestsPerS:    s.RequestsPerS,
		Burst:           s.Burst,
		MaxSources:      s.MaxSources,
		MaxAuthFailures: s.MaxAuthFailures,
		Penalty:         time.Duration(s.PenaltyS) * time.Second,
		ReportEvery:     time.Duration(s.ReportIntervalS) * time.Second,
	}
	switch s.Action {
	case policy.Block:
		out.Mode = sipproxy.SecurityBlock
	case policy.Observe:
		out.Mode = sipproxy.SecurityObserve
	default:
		out.Mode = sipproxy.SecurityOff
	}
	out.Trusted = []netip.Prefix{}
	for _, n := range s.TrustedNetworks {
		if p, err := netip.ParsePrefix(n); err == nil {
			out.Trusted = append(out.Trusted, p)
		}
	}
	return out
}

// onScan records the gate's reports: each one a security.scan violation
// of the device (no line), its evidence the report.
func (a *Agent) onScan(sink *recordSink) func(sipproxy.ScanReport) {
	return func(r sipproxy.ScanReport) {
		v := scanViolation(r)
		sink.Put(v)
		var ev map[string]any
		json.Unmarshal(v.Evidence, &ev)
		a.recent.add(rules.Violation{Rule: v.Rule, Action: rules.Action(v.Action), At: v.At, Evidence: ev})
	}
}

// scanViolation is the record of one report. The report holds no whole
// address (sipproxy.ScanReport), so nothing in it is personal.
func scanViolation(r sipproxy.ScanReport) *store.Violation {
	action := rules.ActionObserved
	if r.Enforced {
		action = rules.ActionBlocked
	}
	ev, err := json.Marshal(r)
	if err != nil {
		ev = nil
	}
	return &store.Violation{Rule: policy.SecurityScan, Action: string(action), At: r.At.UTC(), Evidence: ev}
}

// securityStatus is the gate's part of the status document.
func securityStatus(s sipproxy.SecurityStats) *lpsync.SIPSecurity {
	return &lpsync.SIPSecurity{Sources: s.Sources, Dropped: s.Dropped, Refused: s.Refused,
		Penalised: s.Penalised, Scans: s.Scans, BytesIn: s.BytesIn, BytesOut: s.BytesOut}
}

// scanCollector exposes the gate's counters to Prometheus.
type scanCollector struct{ a *Agent }

var (
	mSecurity = prometheus.NewDesc("leadport_sip_security_total",
		"Unknown SIP sources: messages dropped (over the rate or penalised), requests refused, REGISTERs relayed and refused upstream, penalties, new sources refused (table full), reports made and suppressed.",
		[]string{"event"}, nil)
	mSecurityBytes = prometheus.NewDesc("leadport_sip_security_bytes_total",
		"Bytes from and to unknown SIP sources, and bytes held back (more than the source sent).", []string{"direction"}, nil)
	mSecuritySources = prometheus.NewDesc("leadport_sip_security_sources", "Unknown SIP sources tracked.", nil, nil)
)

func (c scanCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- mSecurity
	ch <- mSecurityBytes
	ch <- mSecuritySources
}

func (c scanCollector) Collect(ch chan<- prometheus.Metric) {
	if c.a.proxy == nil {
		return
	}
	s := c.a.proxy.Stats().Security
	for event, n := range map[string]uint64{"dropped": s.Dropped, "refused": s.Refused, "register_relayed": s.Relayed,
		"register_failed": s.AuthFailures, "penalised": s.Penalised, "table_full": s.TableFull, "scan": s.Scans,
		"report_suppressed": s.Suppressed} {
		ch <- prometheus.MustNewConstMetric(mSecurity, prometheus.CounterValue, float64(n), event)
	}
	for dir, n := range map[string]uint64{"in": s.BytesIn, "out": s.BytesOut, "held": s.HeldBytes} {
		ch <- prometheus.MustNewConstMetric(mSecurityBytes, prometheus.CounterValue, float64(n), dir)
	}
	ch <- prometheus.MustNewConstMetric(mSecuritySources, prometheus.GaugeValue, float64(s.Sources))
}

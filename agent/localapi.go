package agent

import (
	"context"
	gosync "sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/leadport/leadport-agent/agent/api"
	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect/rules"
	"github.com/leadport/leadport-agent/detect/sipproxy"
	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/phone"
	lpsync "github.com/leadport/leadport-agent/sync"
)

// recentViolations keeps the last violations, masked, for the local API
// and the status page (the outbox sends them away).
type recentViolations struct {
	mu  gosync.Mutex
	buf []api.Violation
	max int
}

func (r *recentViolations) add(v rules.Violation) {
	if r == nil {
		return
	}
	numbers := make([]string, len(v.Numbers))
	for i, n := range v.Numbers {
		numbers[i] = phone.Mask(n)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, api.Violation{At: v.At.UTC(), Rule: v.Rule, Line: v.Line, Action: string(v.Action),
		CallID: v.CallID, Evidence: v.Evidence, Numbers: numbers})
	// Trimmed to the newest max once it holds twice as many: one copy per
	// max violations, not one per violation (a refused dialer makes one
	// per attempt).
	if len(r.buf) >= 2*r.max {
		r.buf = append(r.buf[:0], r.buf[len(r.buf)-r.max:]...)
	}
}

func (r *recentViolations) last(n int) []api.Violation {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n = min(n, r.max)
	out := make([]api.Violation, 0, min(n, len(r.buf)))
	for i := len(r.buf) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, r.buf[i])
	}
	return out
}

// upstreamCheck is the last OPTIONS to the upstream.
type upstreamCheck = lpsync.UpstreamCheck

// pingUpstream asks the upstream every period whether it answers.
func (a *Agent) pingUpstream(ctx context.Context, period time.Duration) {
	check := func() {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		status, rtt, err := a.proxy.PingUpstream(c)
		u := upstreamCheck{At: time.Now().UTC(), Answers: err == nil && status > 0, Status: status,
			RTTms: float64(rtt.Microseconds()) / 1000}
		if err != nil {
			u.Error = err.Error()
		}
		a.mu.Lock()
		changed := a.upstream == nil || a.upstream.Answers != u.Answers
		a.upstream = &u
		a.mu.Unlock()
		if changed {
			if u.Answers {
				a.log.Info("upstream answers", "status", status, "rtt_ms", u.RTTms)
			} else {
				a.log.Warn("upstream does not answer OPTIONS", "err", u.Error, "status", status)
			}
			if a.sync != nil {
				a.sync.RefreshStatus()
			}
		}
	}
	check()
	every(ctx, period, check)
}

// localSource is what the local API shows.
type localSource struct{ a *Agent }

func (s localSource) Status() lpsync.Status {
	a := s.a
	doc := a.statusDoc()
	doc.DeviceID, doc.State, doc.At = a.deviceID, "running", time.Now().UTC()
	doc.Lines = a.cfg.Lines
	if a.rules != nil {
		doc.Lines = a.rules.Policy().Lines
	}
	sy := &lpsync.SyncState{Configured: a.sync != nil}
	if a.sync != nil {
		st := a.sync.Stats()
		sy.Connected, sy.Broker, sy.LastSync = st.Connected, st.Broker, st.LastSync
		sy.RecordsAcked, sy.Commands, sy.CommandsRejected = st.Records, st.Commands, st.Rejected
		sy.LastError = st.LastError
	}
	doc.Sync = sy
	return doc
}

func (s localSource) Calls() []api.Call {
	a := s.a
	if a.proxy == nil {
		return nil
	}
	now := time.Now()
	var out []api.Call
	for _, c := range a.proxy.Tracker().Active() {
		d := 0.0
		if !c.AnsweredAt.IsZero() {
			d = now.Sub(c.AnsweredAt).Seconds()
		}
		out = append(out, api.Call{CallID: c.CallID, Line: c.Line, Direction: c.Direction.String(),
			Remote: phone.Mask(c.Remote), State: c.State.String(), StartedAt: c.StartedAt.UTC(), Answered: c.AnsweredAt.UTC(), DurationS: d})
	}
	return out
}

func (s localSource) Violations(limit int) []api.Violation { return s.a.recent.last(limit) }

func (s localSource) AddConsent(ctx context.Context, c *store.Consent) (string, error) {
	ids, err := s.a.store.Append(ctx, c)
	if err != nil {
		return "", err
	}
	if s.a.sync != nil {
		s.a.sync.Wake()
	}
	s.a.log.Info("consent recorded", "id", ids[0], "subject", phone.Mask(c.Subject), "state", c.State, "recorded_by", c.RecordedBy)
	return ids[0], nil
}

// Health: the store answers, and the SIP proxy, when configured, is
// listening. Values starting with "ok" are healthy.
func (s localSource) Health() map[string]string {
	a := s.a
	h := map[string]string{}
	if _, err := a.store.Stats(); err != nil {
		h["store"] = err.Error()
	} else {
		h["store"] = "ok"
	}
	a.mu.Lock()
	sipUp, sipErr := a.sipUp, a.sipErr
	a.mu.Unlock()
	switch {
	case a.proxy == nil:
		h["sip"] = "ok: not configured (sip.upstream is not set)"
	case sipUp:
		h["sip"] = "ok"
	case sipErr != "":
		h["sip"] = "listeners down: " + sipErr
	default:
		h["sip"] = "listeners not up yet"
	}
	return h
}

// collector exposes the agent's figures to Prometheus, read at scrape
// time from the parts that keep them.
type collector struct{ a *Agent }

var (
	mCalls         = prometheus.NewDesc("leadport_sip_calls_total", "Calls on the device's lines since start.", nil, nil)
	mActive        = prometheus.NewDesc("leadport_sip_calls_active", "Calls on the device's lines in progress.", nil, nil)
	mRequests      = prometheus.NewDesc("leadport_sip_requests_total", "SIP requests received, by method.", []string{"method"}, nil)
	mSIPErrors     = prometheus.NewDesc("leadport_sip_errors_total", "SIP messages the proxy could not handle, by kind.", []string{"kind"}, nil)
	mBlocked       = prometheus.NewDesc("leadport_rules_blocks_total", "Requests refused, by rule.", []string{"rule"}, nil)
	mObserved      = prometheus.NewDesc("leadport_rules_observed_total", "Breaches observed without blocking, by rule.", []string{"rule"}, nil)
	mRuleErrors    = prometheus.NewDesc("leadport_rules_errors_total", "Rules that failed and let a request through, by rule.", []string{"rule"}, nil)
	mPolicy        = prometheus.NewDesc("leadport_policy_version", "Version of the policy in force (0: the config file's).", nil, nil)
	mPending       = prometheus.NewDesc("leadport_outbox_pending", "Records waiting to be synced, by type.", []string{"type"}, nil)
	mOldest        = prometheus.NewDesc("leadport_outbox_oldest_age_seconds", "Age of the oldest record waiting, by type.", []string{"type"}, nil)
	mStoreSize     = prometheus.NewDesc("leadport_store_size_bytes", "Size of the store file.", nil, nil)
	mStoreMax      = prometheus.NewDesc("leadport_store_max_bytes", "Cap on the store file.", nil, nil)
	mSyncUp        = prometheus.NewDesc("leadport_sync_connected", "1 when connected to the broker.", nil, nil)
	mSyncRecords   = prometheus.NewDesc("leadport_sync_records_acked_total", "Records delivered to the broker.", nil, nil)
	mSyncLast      = prometheus.NewDesc("leadport_sync_last_success_timestamp_seconds", "When a batch was last acknowledged.", nil, nil)
	mCommands      = prometheus.NewDesc("leadport_sync_commands_total", "Platform commands received.", nil, nil)
	mCmdRejected   = prometheus.NewDesc("leadport_sync_commands_rejected_total", "Platform commands rejected.", nil, nil)
	mUpstreamAlive = prometheus.NewDesc("leadport_sip_upstream_up", "1 when the upstream answered the last OPTIONS.", nil, nil)
	mRefused       = prometheus.NewDesc("leadport_sip_refused_total", "New requests refused with 503 by admission control, by reason (queue, busy, memory, pending, unanswered).", []string{"reason"}, nil)
	mUnanswered    = prometheus.NewDesc("leadport_sip_unanswered", "New requests on their way to be worked on, in the works, or not yet answered at all by the next hop (admission control's window).", nil, nil)
	mRetransmitted = prometheus.NewDesc("leadport_sip_retransmissions_answered_total", "Requests retransmitted after their final answer, answered again (or absorbed) from the answer kept for the transaction linger.", nil, nil)
	mByesHeld      = prometheus.NewDesc("leadport_sip_byes_held", "Answers to BYEs held until the call's usage record is stored, each with its transactions and goroutine.", nil, nil)
	mWaiting       = prometheus.NewDesc("leadport_sip_requests_waiting", "Requests read and waiting for one of the slots requests are worked on in (64 for 50 ms, or 256 at once, refuse new ones: busy).", nil, nil)
	mHeld          = prometheus.NewDesc("leadport_memory_held_bytes", "Live heap at the last collection plus goroutine stacks, as admission control samples it.", nil, nil)
	mBudget        = prometheus.NewDesc("leadport_memory_budget_bytes", "The memory budget (memory_budget).", nil, nil)
	mRegFailing    = prometheus.NewDesc("leadport_sip_register_failing_lines", "Lines whose registrations through the agent fail (two or more non-2xx answers in a row).", nil, nil)
	mRegFallback   = prometheus.NewDesc("leadport_sip_register_fallback", "1 when path mode is configured and the registrar refused or ignored Path, so contact mode is in force.", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mCalls, mActive, mRequests, mSIPErrors, mBlocked, mObserved, mRuleErrors, mPolicy,
		mPending, mOldest, mStoreSize, mStoreMax, mSyncUp, mSyncRecords, mSyncLast, mCommands, mCmdRejected, mUpstreamAlive,
		mRefused, mUnanswered, mRetransmitted, mByesHeld, mWaiting, mHeld, mBudget, mRegFailing, mRegFallback} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if a.proxy != nil {
		s := a.proxy.Stats()
		counter(mCalls, float64(s.CallsTotal))
		gauge(mActive, float64(s.CallsActive))
		for m, n := range s.Requests {
			counter(mRequests, float64(n), m)
		}
		for kind, n := range map[string]uint64{"parse": s.ParseErrors, "bad_response": s.BadResponses, "panic": s.Panics,
			"decision_panic": s.DecisionPanics, "relay": s.RelayErrors, "overload": s.Overloaded} {
			counter(mSIPErrors, float64(n), kind)
		}
		for _, reason := range sipproxy.RefusalReasons() {
			counter(mRefused, float64(s.Shed[reason]), reason)
		}
		gauge(mUnanswered, float64(s.Unanswered))
		counter(mRetransmitted, float64(s.Retransmitted))
		gauge(mByesHeld, float64(s.DurableHeld))
		gauge(mWaiting, float64(s.Waiting))
		gauge(mHeld, float64(s.Held))
		gauge(mBudget, float64(s.MemoryBudget))
		reg := a.registerStatus()
		fallback := 0.0
		if reg.Fallback {
			fallback = 1
		}
		gauge(mRegFailing, float64(len(reg.LinesFailing)))
		gauge(mRegFallback, fallback)
		a.mu.Lock()
		up := a.upstream
		a.mu.Unlock()
		if up != nil {
			v := 0.0
			if up.Answers {
				v = 1
			}
			gauge(mUpstreamAlive, v)
		}
	}
	if a.rules != nil {
		s := a.rules.Stats()
		for r, n := range s.Blocked {
			counter(mBlocked, float64(n), r)
		}
		for r, n := range s.Observed {
			counter(mObserved, float64(n), r)
		}
		for r, n := range s.RuleErrors {
			counter(mRuleErrors, float64(n), r)
		}
	}
	gauge(mPolicy, float64(commandHandler{a}.PolicyVersion()))
	if st, err := a.store.Stats(); err == nil {
		now := time.Now()
		for t, ts := range st.Outbox {
			gauge(mPending, float64(ts.Pending), t)
			age := 0.0
			if !ts.OldestCreated.IsZero() {
				age = now.Sub(ts.OldestCreated).Seconds()
			}
			gauge(mOldest, age, t)
		}
		gauge(mStoreSize, float64(st.SizeBytes))
		gauge(mStoreMax, float64(st.MaxBytes))
	}
	if a.sync != nil {
		s := a.sync.Stats()
		v := 0.0
		if s.Connected {
			v = 1
		}
		gauge(mSyncUp, v)
		counter(mSyncRecords, float64(s.Records))
		if !s.LastSync.IsZero() {
			gauge(mSyncLast, float64(s.LastSync.UnixNano())/1e9)
		}
		counter(mCommands, float64(s.Commands))
		counter(mCmdRejected, float64(s.Rejected))
	}
}

// newAPI builds the local API with the agent's metrics and the Go
// runtime's.
func (a *Agent) newAPI() *api.Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a}, scanCollector{a}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return api.New(api.Options{
		Source:      localSource{a},
		Registry:    reg,
		Normalize:   func(n string) (string, error) { return phone.Normalize(n, a.cfg.DefaultCountry) },
		Logger:      a.log.With("part", "api"),
		ServiceUser: config.ServiceUser,
	})
}

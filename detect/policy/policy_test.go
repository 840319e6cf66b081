package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestDefaultIsValid(t *testing.T) {
	p := Default()
	if probs := p.Problems(); len(probs) > 0 {
		t.Fatalf("default policy has problems: %v", probs)
	}
	for _, rule := range Rules {
		if a := p.ActionOf(rule); a != Block && a != Observe {
			t.Errorf("default action of %s = %q, want block or observe", rule, a)
		}
	}
	if p.ActionOf(SecurityScan) != Block || len(p.Security.TrustedNetworks) == 0 {
		t.Errorf("security defaults to %q trusting %v, want block and the LAN", p.ActionOf(SecurityScan), p.Security.TrustedNetworks)
	}
	if p.ActionOf(QuotaMinutes) != Observe {
		t.Errorf("quota.minutes defaults to %q, want observe", p.ActionOf(QuotaMinutes))
	}
}

func TestActionOf(t *testing.T) {
	p := Default()
	p.Forwarding.Action = Observe
	p.Forwarding.Actions = map[string]Action{"refer": Off}
	p.Trunking.Actions = map[string]Action{"registrations": Observe}
	tests := []struct {
		rule string
		want Action
	}{
		{ForwardingRedirect, Observe},
		{ForwardingRefer, Off},
		{TrunkingConcurrent, Block},
		{TrunkingRegistrations, Observe},
		{Pacing, Block},
		{CallerIDMismatch, Block},
		{QuotaMinutes, Observe},
		{SecurityScan, Block},
		{"no.such_rule", Off},
	}
	for _, tt := range tests {
		if got := p.ActionOf(tt.rule); got != tt.want {
			t.Errorf("ActionOf(%s) = %q, want %q", tt.rule, got, tt.want)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // substring of the error; "" for success
		ok   func(Policy) bool
	}{
		{"partial document keeps defaults", `{"version":3,"lines":["+15551230001"],"pacing":{"cooldown_s":60}}`, "",
			func(p Policy) bool {
				return p.Version == 3 && p.Pacing.CooldownS == 60 && p.Pacing.MaxAttemptsPerMinute == Default().Pacing.MaxAttemptsPerMinute && len(p.Lines) == 1
			}},
		{"per-rule override", `{"forwarding":{"actions":{"bridge":"observe"}}}`, "",
			func(p Policy) bool {
				return p.ActionOf(ForwardingBridge) == Observe && p.ActionOf(ForwardingRefer) == Block
			}},
		{"unknown key", `{"pacing":{"burst":3}}`, `unknown field "burst"`, nil},
		{"wrong type", `{"pacing":{"cooldown_s":"15m"}}`, "cannot unmarshal", nil},
		{"trailing data", `{} {}`, "data after the JSON object", nil},
		{"not JSON", `policy`, "policy document", nil},
		{"bad action", `{"callerid":{"action":"warn"}}`, `callerid.action: bad value "warn"`, nil},
		{"unknown override", `{"trunking":{"actions":{"lines":"off"}}}`, `trunking.actions.lines: unknown rule "lines"`, nil},
		{"redirect status not a failure", `{"forwarding":{"redirect_status":302}}`, "forwarding.redirect_status: 302 is not allowed", nil},
		{"bad feature code", `{"forwarding":{"feature_codes":["*72","call"]}}`, `forwarding.feature_codes[1]: "call" is not a feature code`, nil},
		{"negative version", `{"version":-1}`, "version: -1 is not allowed", nil},
		{"zero cooldown", `{"pacing":{"cooldown_s":0}}`, "pacing.cooldown_s: 0 is not allowed", nil},
		{"short gaps over the window", `{"pacing":{"short_gaps":11,"recent_attempts":10}}`, "pacing.short_gaps: 11 is more than recent_attempts (10)", nil},
		{"window over the history", `{"pacing":{"recent_attempts":33}}`, "pacing.recent_attempts: 33 is not allowed", nil},
		{"one ring timeout", `{"pacing":{"same_ring_timeouts":1}}`, "pacing.same_ring_timeouts: 1 is not allowed", nil},
		{"one regular interval", `{"pacing":{"regular_over":1}}`, "pacing.regular_over: 1 is not allowed", nil},
		{"cv out of range", `{"pacing":{"regular_cv":2}}`, "pacing.regular_cv: 2 is not allowed", nil},
		{"suspect thresholds set", `{"pacing":{"suspect_short_hangups":9,"short_hangups":12,"suspect_interval_s":3600}}`, "",
			func(p Policy) bool {
				g := p.Pacing
				return g.SuspectShortHangups == 9 && g.ShortHangups == 12 && g.SuspectIntervalS == 3600 &&
					g.SuspectFastAfterConversation == Default().Pacing.SuspectFastAfterConversation
			}},
		{"suspect not below its block threshold", `{"pacing":{"suspect_fast_after_conversation":4,"fast_after_conversation":4}}`,
			"pacing.suspect_fast_after_conversation: 4 is not below fast_after_conversation (4)", nil},
		{"block only, suspect off", `{"pacing":{"suspect_invalid_numbers":0,"invalid_numbers":20}}`, "",
			func(p Policy) bool { return p.Pacing.InvalidNumbers == 20 && p.Pacing.SuspectInvalidNumbers == 0 }},
		{"threshold over its window", `{"pacing":{"short_hangups":17}}`, "pacing.short_hangups: 17 is more than its window (16)", nil},
		{"window over the ring", `{"pacing":{"answered_window":17}}`, "pacing.answered_window: 17 is not allowed (want 1 to 16)", nil},
		{"conversations over the ring", `{"pacing":{"conversations":0}}`, "pacing.conversations: 0 is not allowed", nil},
		{"negative suspect threshold", `{"pacing":{"suspect_sustained_attempts":-1}}`, "pacing.suspect_sustained_attempts: -1 is not allowed", nil},
		{"suspect ring timeouts at the block's", `{"pacing":{"suspect_same_ring_timeouts":5}}`, "pacing.suspect_same_ring_timeouts: 5 is not allowed", nil},
		{"suspect sequential run of one", `{"pacing":{"suspect_sequential_run":1}}`, "pacing.suspect_sequential_run: 1 is not allowed", nil},
		{"zero suspect interval", `{"pacing":{"suspect_interval_s":0}}`, "pacing.suspect_interval_s: 0 is not allowed", nil},
		{"zero dialogs", `{"trunking":{"max_dialogs_per_line":0}}`, "trunking.max_dialogs_per_line: 0 is not allowed", nil},
		{"negative quota", `{"quota":{"monthly_minutes":-5}}`, "quota.monthly_minutes: -5 is not allowed", nil},
		{"security keys", `{"security":{"requests_per_s":2.5,"burst":5,"trusted_networks":["127.0.0.1/32"],"penalty_s":60}}`, "",
			func(p Policy) bool {
				s := p.Security
				return s.RequestsPerS == 2.5 && s.Burst == 5 && len(s.TrustedNetworks) == 1 && s.PenaltyS == 60 &&
					s.Action == Block && s.MaxSources == Default().Security.MaxSources
			}},
		{"no trusted network at all", `{"security":{"trusted_networks":[]}}`, "", func(p Policy) bool { return len(p.Security.TrustedNetworks) == 0 }},
		{"trusted network not a prefix", `{"security":{"trusted_networks":["10.0.0.0/8","lan"]}}`, `security.trusted_networks[1]: "lan" is not a network`, nil},
		{"bare address is not a network", `{"security":{"trusted_networks":["192.168.1.10"]}}`, `security.trusted_networks[0]`, nil},
		{"zero rate", `{"security":{"requests_per_s":0}}`, "security.requests_per_s: 0 is not allowed", nil},
		{"zero burst", `{"security":{"burst":0}}`, "security.burst: 0 is not allowed", nil},
		{"table too small", `{"security":{"max_sources":1}}`, "security.max_sources: 1 is not allowed", nil},
		{"table too large", `{"security":{"max_sources":1000000}}`, "security.max_sources: 1000000 is not allowed", nil},
		{"zero penalty", `{"security":{"penalty_s":0}}`, "security.penalty_s: 0 is not allowed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if !tt.ok(p) {
					t.Errorf("Parse gave %+v", p)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestProblemsAllAtOnce(t *testing.T) {
	p := Default()
	p.Pacing.CooldownS = 0
	p.Quota.Action = "maybe"
	p.Trunking.MaxContactsPerLine = 0
	_, err := Parse([]byte(`{"pacing":{"cooldown_s":0},"quota":{"action":"maybe"},"trunking":{"max_contacts_per_line":0}}`))
	var perr *Error
	if !errors.As(err, &perr) || len(perr.Problems) != 3 {
		t.Fatalf("error = %v, want 3 problems", err)
	}
	if got := len(p.Problems()); got != 3 {
		t.Errorf("Problems() lists %d, want 3", got)
	}
	// In key order, so messages are stable.
	keys := []string{perr.Problems[0].Key, perr.Problems[1].Key, perr.Problems[2].Key}
	if keys[0] != "pacing.cooldown_s" || keys[1] != "quota.action" || keys[2] != "trunking.max_contacts_per_line" {
		t.Errorf("problem keys = %v, want them sorted", keys)
	}
}

// FuzzParse: any bytes give a valid policy or an error, never a panic, and
// a policy that parses has no problems.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"version":2,"pacing":{"cooldown_s":60},"forwarding":{"actions":{"refer":"observe"}}}`))
	f.Add([]byte(`{"lines":["+15551230001"],"quota":{"monthly_minutes":500,"action":"block"}}`))
	f.Add([]byte(`{"pacing":{"regular_cv":1e308,"min_gap_after_call_s":-0}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		if probs := p.Problems(); len(probs) > 0 {
			t.Fatalf("Parse accepted a policy with problems: %v", probs)
		}
	})
}

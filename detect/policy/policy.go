// Package policy is what the rules read: the device's lines, and for each
// rule its action and thresholds. The config file's policy section gives
// the defaults; the platform replaces them with a signed, versioned policy
// document (JSON, same keys), and the higher version wins.
//
// A Policy is a value: the rules hold an immutable copy, and a new policy
// is a new value swapped in whole, so calls in progress keep going.
package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// Rule ids, as violation records and Warning headers name them.
const (
	ForwardingRedirect    = "forwarding.redirect"
	ForwardingDiversion   = "forwarding.diversion"
	ForwardingRefer       = "forwarding.refer"
	ForwardingFeatureCode = "forwarding.feature_code"
	ForwardingBridge      = "forwarding.bridge"
	TrunkingConcurrent    = "trunking.concurrent"
	TrunkingRegistrations = "trunking.registrations"
	Pacing                = "pacing"
	CallerIDMismatch      = "callerid.mismatch"
	QuotaMinutes          = "quota.minutes"
	// RuleError is the kind of violation reported when a rule fails; it
	// is not a rule and has no action.
	RuleError = "agent.rule_error"
	// SecurityScan is a source that tripped the per-source limits or looks
	// like a SIP scanner: a violation of the device itself, not of a line.
	// The SIP proxy enforces it (security section), not the rules engine.
	SecurityScan = "security.scan"
)

// Rules lists every rule id. (The engine's order of precedence is in
// docs/rules.md.)
var Rules = []string{
	ForwardingRedirect, ForwardingDiversion, ForwardingRefer, ForwardingFeatureCode,
	ForwardingBridge, TrunkingRegistrations, Pacing, TrunkingConcurrent,
	CallerIDMismatch, QuotaMinutes,
}

// Action is what a rule does when it trips.
type Action string

// Rule actions. The empty action, in a per-rule override, means the
// group's.
const (
	Block   Action = "block"   // refuse the request and record a violation
	Observe Action = "observe" // let it through and record a violation
	Off     Action = "off"     // do not evaluate the rule
)

func (a Action) valid() bool { return a == Block || a == Observe || a == Off }

// Policy is the rules' settings. Field tags give the keys, the same in the
// config file (YAML) and in the platform's policy document (JSON).
type Policy struct {
	// Version orders policies: the platform's start at 1 and the higher
	// one wins; the config file's is 0.
	Version int64 `json:"version" yaml:"-"`
	// Lines, when the platform sends them, replace the configured lines.
	// In the config file they are the top-level "lines" key.
	Lines []string `json:"lines,omitempty" yaml:"-"`

	Forwarding Forwarding `json:"forwarding" yaml:"forwarding"`
	Trunking   Trunking   `json:"trunking" yaml:"trunking"`
	Pacing     PacingRule `json:"pacing" yaml:"pacing"`
	CallerID   CallerID   `json:"callerid" yaml:"callerid"`
	Quota      Quota      `json:"quota" yaml:"quota"`
	Security   Security   `json:"security" yaml:"security"`
}

// Forwarding covers the forwarding.* rules.
type Forwarding struct {
	Action Action `json:"action" yaml:"action"`
	// Actions overrides the action per rule: keys redirect, diversion,
	// refer, feature_code, bridge.
	Actions map[string]Action `json:"actions,omitempty" yaml:"actions"`
	// RedirectStatus replaces a 3xx (or 181) from the local side.
	RedirectStatus int `json:"redirect_status" yaml:"redirect_status"`
	// FeatureCodes are dialled prefixes that set up call forwarding on a
	// PBX or a mobile network.
	FeatureCodes []string `json:"feature_codes" yaml:"feature_codes"`
	// BridgeWindowS: an outbound call on the line of an inbound call
	// starts within this many seconds of the inbound call's INVITE or
	// answer, while the inbound call is ringing or up.
	BridgeWindowS int `json:"bridge_window_s" yaml:"bridge_window_s"`
}

// Trunking covers the trunking.* rules.
type Trunking struct {
	Action Action `json:"action" yaml:"action"`
	// Actions overrides the action per rule: keys concurrent,
	// registrations.
	Actions map[string]Action `json:"actions,omitempty" yaml:"actions"`
	// MaxDialogsPerLine: live dialogs (ringing or up, either direction)
	// a line may have at once.
	MaxDialogsPerLine int `json:"max_dialogs_per_line" yaml:"max_dialogs_per_line"`
	// MaxContactsPerLine: contacts bound to a line by REGISTERs through
	// the agent.
	MaxContactsPerLine int `json:"max_contacts_per_line" yaml:"max_contacts_per_line"`
}

// PacingRule is the machine-paced dialing rule. Each signal trips on its
// own; 0 turns a signal off.
type PacingRule struct {
	Action Action `json:"action" yaml:"action"`
	// MaxAttemptsPerMinute and MaxAttemptsPerHour bound outbound attempts
	// on a line in a sliding window.
	MaxAttemptsPerMinute int `json:"max_attempts_per_minute" yaml:"max_attempts_per_minute"`
	MaxAttemptsPerHour   int `json:"max_attempts_per_hour" yaml:"max_attempts_per_hour"`
	// RecentAttempts is how many of a line's last attempts the gap and
	// ring-timeout signals look at.
	RecentAttempts int `json:"recent_attempts" yaml:"recent_attempts"`
	// MinGapAfterCallS is the least time a person needs between one call
	// ending and dialling the next; ShortGaps of the recent attempts below
	// it trip the signal. Redialling the same number is not counted: a
	// redial button is quick.
	MinGapAfterCallS float64 `json:"min_gap_after_call_s" yaml:"min_gap_after_call_s"`
	ShortGaps        int     `json:"short_gaps" yaml:"short_gaps"`
	// SameRingTimeouts of the recent attempts given up while ringing
	// (CANCEL) after the same time, to within RingToleranceMS either way,
	// are a dialer's fixed no-answer timeout: a person's patience varies
	// by seconds.
	SameRingTimeouts int `json:"same_ring_timeouts" yaml:"same_ring_timeouts"`
	RingToleranceMS  int `json:"ring_tolerance_ms" yaml:"ring_tolerance_ms"`
	// MaxParallel: outbound attempts (ringing, not yet answered) a line
	// may have at once.
	MaxParallel int `json:"max_parallel" yaml:"max_parallel"`
	// RegularCV: the intervals between the last RegularOver+1 attempts
	// with a coefficient of variation below this are too regular for a
	// person.
	RegularCV   float64 `json:"regular_cv" yaml:"regular_cv"`
	RegularOver int     `json:"regular_over" yaml:"regular_over"`
	// TickToleranceMS: the last RegularOver intervals all whole multiples
	// (1 to 8) of one period of at least 2 s, each to within this many ms,
	// are a timer-driven dialer skipping the ticks its line was busy; 0
	// turns the check off.
	TickToleranceMS int `json:"tick_tolerance_ms" yaml:"tick_tolerance_ms"`
	// SequentialRun attempts in a row, each to the previous callee plus
	// 1..SequentialStep, trip the signal.
	SequentialStep int `json:"sequential_step" yaml:"sequential_step"`
	SequentialRun  int `json:"sequential_run" yaml:"sequential_run"`
	// CooldownS: once tripped, new outbound attempts on the line are
	// blocked (or observed) for this long.
	CooldownS int `json:"cooldown_s" yaml:"cooldown_s"`

	// The signals below survive random gaps (docs/rules.md, "Signals that
	// survive random gaps"). Each has a block threshold and a suspect
	// threshold (Suspect...): a suspect report is a violation with
	// confidence suspect that never blocks. 0 turns either off.

	// SequentialWideStep: a callee 1 to this far above the previous one
	// continues a wide run; SequentialWideRun such attempts in a row block.
	SequentialWideStep       int `json:"sequential_wide_step" yaml:"sequential_wide_step"`
	SequentialWideRun        int `json:"sequential_wide_run" yaml:"sequential_wide_run"`
	SuspectSequentialWideRun int `json:"suspect_sequential_wide_run" yaml:"suspect_sequential_wide_run"`
	// ConversationS: an answered outbound call at least this long is a
	// conversation, after which a person does after-call work. Of the
	// line's last Conversations conversations, FastAfterConversation
	// followed by the next attempt in under MinGapAfterConversationS
	// block (a dialer's gap ignores how the last call ended).
	ConversationS int `json:"conversation_s" yaml:"conversation_s"`
	// BusyHourAttempts: conversations count only while the line made at
	// least this many attempts in the hour before: a person returning a
	// few calls one after another does no after-call work either, a
	// dialer keeps its pace.
	BusyHourAttempts             int     `json:"busy_hour_attempts" yaml:"busy_hour_attempts"`
	Conversations                int     `json:"conversations" yaml:"conversations"`
	MinGapAfterConversationS     float64 `json:"min_gap_after_conversation_s" yaml:"min_gap_after_conversation_s"`
	FastAfterConversation        int     `json:"fast_after_conversation" yaml:"fast_after_conversation"`
	SuspectFastAfterConversation int     `json:"suspect_fast_after_conversation" yaml:"suspect_fast_after_conversation"`
	// AnsweredWindow: the line's last answered outbound calls that the
	// hang-up signals read. ShortHangups of them ended by the caller 1 to
	// 6 s after the answer (answering-machine detection); HangupSpike of
	// those within 0.3 s either way of one value (a fixed analysis time).
	AnsweredWindow      int `json:"answered_window" yaml:"answered_window"`
	ShortHangups        int `json:"short_hangups" yaml:"short_hangups"`
	SuspectShortHangups int `json:"suspect_short_hangups" yaml:"suspect_short_hangups"`
	HangupSpike         int `json:"hangup_spike" yaml:"hangup_spike"`
	SuspectHangupSpike  int `json:"suspect_hangup_spike" yaml:"suspect_hangup_spike"`
	// InvalidWindow: the line's last ended outbound attempts; InvalidNumbers
	// of them answered 404 or 484 (numbers not in service, as a dialer
	// walking a number block meets them).
	InvalidWindow         int `json:"invalid_window" yaml:"invalid_window"`
	InvalidNumbers        int `json:"invalid_numbers" yaml:"invalid_numbers"`
	SuspectInvalidNumbers int `json:"suspect_invalid_numbers" yaml:"suspect_invalid_numbers"`
	// PauseS: a line idle this long (from the end of its last call to the
	// next attempt) paused. SustainedAttempts attempts in a row without a
	// pause: people's gaps are bursty (notes, interruptions, breaks), a
	// dialer keeps its pace for hours.
	PauseS                   int `json:"pause_s" yaml:"pause_s"`
	SustainedAttempts        int `json:"sustained_attempts" yaml:"sustained_attempts"`
	SuspectSustainedAttempts int `json:"suspect_sustained_attempts" yaml:"suspect_sustained_attempts"`
	// Suspect thresholds of the signals above the new ones.
	SuspectSameRingTimeouts int `json:"suspect_same_ring_timeouts" yaml:"suspect_same_ring_timeouts"`
	SuspectSequentialRun    int `json:"suspect_sequential_run" yaml:"suspect_sequential_run"`
	// SuspectIntervalS: at most one suspect report per line in this many
	// seconds, so that a line under suspicion does not flood the outbox.
	SuspectIntervalS int `json:"suspect_interval_s" yaml:"suspect_interval_s"`
}

// Windows of the signals that read fixed rings per line.
const (
	MaxAnsweredWindow = 16
	MaxConversations  = 16
	MaxInvalidWindow  = 64
)

// CallerID is the callerid.mismatch rule.
type CallerID struct {
	Action Action `json:"action" yaml:"action"`
}

// Quota is the quota.minutes rule.
type Quota struct {
	Action Action `json:"action" yaml:"action"`
	// MonthlyMinutes is the plan's allowance of answered minutes per line
	// per calendar month (UTC); 0: no allowance set, the rule is idle.
	MonthlyMinutes int `json:"monthly_minutes" yaml:"monthly_minutes"`
}

// Security are the SIP proxy's limits on sources it does not know
// (docs/sip.md, "Scanners and floods"). Known sources are the upstream,
// sip.local, addresses holding a registration made through the agent,
// and TrustedNetworks; they are not limited per source.
type Security struct {
	// Action: block (limits enforced, unknown sources answered by the
	// agent), observe (counted and reported, everything relayed as
	// before), off (no per-source state at all).
	Action Action `json:"action" yaml:"action"`
	// RequestsPerS and Burst: a token bucket per unknown source address;
	// what comes faster is dropped without an answer.
	RequestsPerS float64 `json:"requests_per_s" yaml:"requests_per_s"`
	Burst        int     `json:"burst" yaml:"burst"`
	// TrustedNetworks are CIDR prefixes whose sources are known.
	TrustedNetworks []string `json:"trusted_networks" yaml:"trusted_networks"`
	// MaxSources bounds the per-source table; a new source that finds it
	// full of busy or penalised ones is dropped.
	MaxSources int `json:"max_sources" yaml:"max_sources"`
	// MaxAuthFailures registrations of a source refused by the upstream
	// (401, 403, 404, 407) without one accepted penalise it for
	// PenaltyS; 0 never penalises.
	MaxAuthFailures int `json:"max_auth_failures" yaml:"max_auth_failures"`
	PenaltyS        int `json:"penalty_s" yaml:"penalty_s"`
	// ReportIntervalS: at most one security.scan violation per source in
	// this many seconds, with the counts of the whole interval.
	ReportIntervalS int `json:"report_interval_s" yaml:"report_interval_s"`
}

// DefaultTrustedNetworks are loopback, the private IPv4 ranges (RFC 1918),
// IPv6 unique-local and link-local addresses: the PBX and phones of a LAN.
// A scanner on the Internet cannot send from them (they are not routed
// there), so they are known without registering. Where the LAN itself is
// not to be trusted (a shared office, a hotel), set only loopback.
var DefaultTrustedNetworks = []string{
	"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10",
}

// DefaultFeatureCodes set up call forwarding on common PBXs (Asterisk and
// FreePBX *72 all, *90 busy, *52 no answer; Cisco and Avaya variants) and
// on GSM networks (MMI **21* unconditional, **61* no reply, **62* not
// reachable, **67* busy, **002*/**004* all; *21* and *21# activate).
// Codes that cancel forwarding (*73, #21#) are not in it.
var DefaultFeatureCodes = []string{
	"*72", "*90", "*52", "*92", "*94", "*63", "*68",
	"**21*", "*21*", "*21#", "**61*", "*61*", "**62*", "*62*", "**67*", "*67*",
	"**002*", "*002*", "**004*", "*004*",
}

// Default is the policy used until the config or the platform says
// otherwise. The pacing figures come from `make eval` (see README).
func Default() Policy {
	return Policy{
		Forwarding: Forwarding{
			Action:         Block,
			Actions:        map[string]Action{},
			RedirectStatus: 403,
			FeatureCodes:   slices.Clone(DefaultFeatureCodes),
			BridgeWindowS:  30,
		},
		Trunking: Trunking{Action: Block, Actions: map[string]Action{}, MaxDialogsPerLine: 1, MaxContactsPerLine: 1},
		Pacing: PacingRule{
			Action:               Block,
			MaxAttemptsPerMinute: 10,
			MaxAttemptsPerHour:   180,
			RecentAttempts:       10,
			MinGapAfterCallS:     1,
			ShortGaps:            2,
			SameRingTimeouts:     5,
			RingToleranceMS:      15,
			MaxParallel:          1,
			RegularCV:            0.005,
			RegularOver:          6,
			TickToleranceMS:      60,
			SequentialStep:       1,
			SequentialRun:        5,
			CooldownS:            900,

			SequentialWideStep:           10,
			SequentialWideRun:            20,
			SuspectSequentialWideRun:     10,
			ConversationS:                90,
			BusyHourAttempts:             10,
			Conversations:                8,
			MinGapAfterConversationS:     10,
			FastAfterConversation:        4,
			SuspectFastAfterConversation: 2,
			AnsweredWindow:               16,
			ShortHangups:                 0,
			SuspectShortHangups:          0,
			HangupSpike:                  0,
			SuspectHangupSpike:           14,
			InvalidWindow:                32,
			InvalidNumbers:               0,
			SuspectInvalidNumbers:        10,
			PauseS:                       60,
			SustainedAttempts:            0,
			SuspectSustainedAttempts:     150,
			SuspectSameRingTimeouts:      4,
			SuspectSequentialRun:         4,
			SuspectIntervalS:             86400,
		},
		CallerID: CallerID{Action: Block},
		Quota:    Quota{Action: Observe},
		Security: Security{
			Action:          Block,
			RequestsPerS:    10,
			Burst:           20,
			TrustedNetworks: slices.Clone(DefaultTrustedNetworks),
			MaxSources:      1024,
			MaxAuthFailures: 10,
			PenaltyS:        600,
			ReportIntervalS: 300,
		},
	}
}

// subRules maps each group's override keys to rule ids.
var subRules = map[string]map[string]string{
	"forwarding": {
		"redirect": ForwardingRedirect, "diversion": ForwardingDiversion, "refer": ForwardingRefer,
		"feature_code": ForwardingFeatureCode, "bridge": ForwardingBridge,
	},
	"trunking": {"concurrent": TrunkingConcurrent, "registrations": TrunkingRegistrations},
}

// ActionOf resolves a rule's action: its override, else its group's.
func (p *Policy) ActionOf(rule string) Action {
	group, sub, _ := strings.Cut(rule, ".")
	switch group {
	case "forwarding":
		if a := p.Forwarding.Actions[sub]; a != "" {
			return a
		}
		return p.Forwarding.Action
	case "trunking":
		if a := p.Trunking.Actions[sub]; a != "" {
			return a
		}
		return p.Trunking.Action
	case "pacing":
		return p.Pacing.Action
	case "callerid":
		return p.CallerID.Action
	case "quota":
		return p.Quota.Action
	case "security":
		return p.Security.Action
	}
	return Off
}

// Problem is one invalid setting. Key is the path below the policy
// ("pacing.cooldown_s").
type Problem struct {
	Key string
	Msg string
}

func (p Problem) Error() string { return p.Key + ": " + p.Msg }

// Problems lists every invalid setting, in key order.
func (p *Policy) Problems() []Problem {
	var out []Problem
	add := func(key, format string, args ...any) {
		out = append(out, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	action := func(key string, a Action) {
		if !a.valid() {
			add(key, "bad value %q (want block, observe or off)", string(a))
		}
	}
	overrides := func(group string, m map[string]Action) {
		for k, a := range m {
			key := group + ".actions." + k
			if _, ok := subRules[group][k]; !ok {
				add(key, "unknown rule %q (want one of %s)", k, strings.Join(sortedKeys(subRules[group]), ", "))
				continue
			}
			action(key, a)
		}
	}
	atLeast := func(key string, v, lo int) {
		if v < lo {
			add(key, "%d is not allowed (want an integer >= %d)", v, lo)
		}
	}
	between := func(key string, v, lo, hi float64) {
		if math.IsNaN(v) || v < lo || v > hi {
			add(key, "%v is not allowed (want a number from %v to %v)", v, lo, hi)
		}
	}

	if p.Version < 0 {
		add("version", "%d is not allowed (want an integer >= 0)", p.Version)
	}
	f := &p.Forwarding
	action("forwarding.action", f.Action)
	overrides("forwarding", f.Actions)
	if f.RedirectStatus < 400 || f.RedirectStatus > 699 {
		add("forwarding.redirect_status", "%d is not allowed (want a SIP failure status, 400 to 699)", f.RedirectStatus)
	}
	for i, c := range f.FeatureCodes {
		if c == "" || strings.Trim(c, "*#0123456789") != "" {
			add(fmt.Sprintf("forwarding.feature_codes[%d]", i), "%q is not a feature code (want digits, * and #, e.g. \"*72\")", c)
		}
	}
	atLeast("forwarding.bridge_window_s", f.BridgeWindowS, 0)

	t := &p.Trunking
	action("trunking.action", t.Action)
	overrides("trunking", t.Actions)
	atLeast("trunking.max_dialogs_per_line", t.MaxDialogsPerLine, 1)
	atLeast("trunking.max_contacts_per_line", t.MaxContactsPerLine, 1)

	g := &p.Pacing
	action("pacing.action", g.Action)
	atLeast("pacing.max_attempts_per_minute", g.MaxAttemptsPerMinute, 0)
	atLeast("pacing.max_attempts_per_hour", g.MaxAttemptsPerHour, 0)
	between("pacing.min_gap_after_call_s", g.MinGapAfterCallS, 0, 600)
	atLeast("pacing.recent_attempts", g.RecentAttempts, 1)
	if g.RecentAttempts > MaxHistory {
		add("pacing.recent_attempts", "%d is not allowed (want at most %d)", g.RecentAttempts, MaxHistory)
	}
	atLeast("pacing.short_gaps", g.ShortGaps, 0)
	if g.ShortGaps > g.RecentAttempts {
		add("pacing.short_gaps", "%d is more than recent_attempts (%d)", g.ShortGaps, g.RecentAttempts)
	}
	atLeast("pacing.same_ring_timeouts", g.SameRingTimeouts, 0)
	if g.SameRingTimeouts == 1 || g.SameRingTimeouts > g.RecentAttempts {
		add("pacing.same_ring_timeouts", "%d is not allowed (want 0 to turn it off, or 2 to recent_attempts)", g.SameRingTimeouts)
	}
	atLeast("pacing.ring_tolerance_ms", g.RingToleranceMS, 0)
	atLeast("pacing.max_parallel", g.MaxParallel, 0)
	between("pacing.regular_cv", g.RegularCV, 0, 1)
	atLeast("pacing.regular_over", g.RegularOver, 0)
	atLeast("pacing.tick_tolerance_ms", g.TickToleranceMS, 0)
	if g.RegularOver == 1 || g.RegularOver > MaxHistory-1 {
		add("pacing.regular_over", "%d is not allowed (want 0 to turn it off, or 2 to %d intervals)", g.RegularOver, MaxHistory-1)
	}
	atLeast("pacing.sequential_step", g.SequentialStep, 0)
	atLeast("pacing.sequential_run", g.SequentialRun, 0)
	if g.SequentialRun > MaxHistory {
		add("pacing.sequential_run", "%d is not allowed (want at most %d)", g.SequentialRun, MaxHistory)
	}
	atLeast("pacing.cooldown_s", g.CooldownS, 1)
	g.signalProblems(atLeast, add)

	action("callerid.action", p.CallerID.Action)
	action("quota.action", p.Quota.Action)
	atLeast("quota.monthly_minutes", p.Quota.MonthlyMinutes, 0)

	sec := &p.Security
	action("security.action", sec.Action)
	between("security.requests_per_s", sec.RequestsPerS, 0.1, 10000)
	atLeast("security.burst", sec.Burst, 1)
	for i, n := range sec.TrustedNetworks {
		if _, err := netip.ParsePrefix(n); err != nil {
			add(fmt.Sprintf("security.trusted_networks[%d]", i), "%q is not a network (want CIDR, e.g. \"192.168.0.0/16\" or \"fd00::/8\")", n)
		}
	}
	atLeast("security.max_sources", sec.MaxSources, 16)
	if sec.MaxSources > MaxSources {
		add("security.max_sources", "%d is not allowed (want at most %d)", sec.MaxSources, MaxSources)
	}
	atLeast("security.max_auth_failures", sec.MaxAuthFailures, 0)
	atLeast("security.penalty_s", sec.PenaltyS, 1)
	atLeast("security.report_interval_s", sec.ReportIntervalS, 1)

	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// MaxSources bounds security.max_sources: at a few hundred bytes each,
// the table stays within a few MB.
const MaxSources = 16384

// MaxHistory is how many recent attempts per line the pacing rule keeps.
const MaxHistory = 32

// Parse reads a platform policy document: JSON with the keys of Policy.
// Keys it leaves out keep their defaults; unknown keys are an error, so a
// typo in the platform's document is not silently ignored.
func Parse(data []byte) (Policy, error) {
	p := Default()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("policy document: %w", err)
	}
	if dec.More() {
		return Policy{}, fmt.Errorf("policy document: data after the JSON object")
	}
	if probs := p.Problems(); len(probs) > 0 {
		return Policy{}, &Error{Problems: probs}
	}
	return p, nil
}

// Error lists a policy's problems.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return "invalid policy: " + strings.Join(msgs, "; ")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// signalProblems checks the keys of the signals that survive random
// gaps: thresholds >= 0 within their windows, a suspect threshold below
// its block threshold (else it would never report before the block).
func (g *PacingRule) signalProblems(atLeast func(string, int, int), add func(string, string, ...any)) {
	window := func(key string, v, hi int) {
		if v < 1 || v > hi {
			add(key, "%d is not allowed (want 1 to %d)", v, hi)
		}
	}
	pair := func(key string, block, suspect, within int) {
		atLeast("pacing."+key, block, 0)
		atLeast("pacing.suspect_"+key, suspect, 0)
		if within > 0 && block > within {
			add("pacing."+key, "%d is more than its window (%d)", block, within)
		}
		if within > 0 && suspect > within {
			add("pacing.suspect_"+key, "%d is more than its window (%d)", suspect, within)
		}
		if block > 0 && suspect >= block {
			add("pacing.suspect_"+key, "%d is not below %s (%d): it would never report before the block", suspect, key, block)
		}
	}
	atLeast("pacing.sequential_wide_step", g.SequentialWideStep, 0)
	pair("sequential_wide_run", g.SequentialWideRun, g.SuspectSequentialWideRun, 0)
	atLeast("pacing.conversation_s", g.ConversationS, 1)
	window("pacing.conversations", g.Conversations, MaxConversations)
	if math.IsNaN(g.MinGapAfterConversationS) || g.MinGapAfterConversationS < 0 || g.MinGapAfterConversationS > 600 {
		add("pacing.min_gap_after_conversation_s", "%v is not allowed (want a number from 0 to 600)", g.MinGapAfterConversationS)
	}
	pair("fast_after_conversation", g.FastAfterConversation, g.SuspectFastAfterConversation, g.Conversations)
	window("pacing.answered_window", g.AnsweredWindow, MaxAnsweredWindow)
	pair("short_hangups", g.ShortHangups, g.SuspectShortHangups, g.AnsweredWindow)
	pair("hangup_spike", g.HangupSpike, g.SuspectHangupSpike, g.AnsweredWindow)
	window("pacing.invalid_window", g.InvalidWindow, MaxInvalidWindow)
	pair("invalid_numbers", g.InvalidNumbers, g.SuspectInvalidNumbers, g.InvalidWindow)
	atLeast("pacing.pause_s", g.PauseS, 1)
	atLeast("pacing.busy_hour_attempts", g.BusyHourAttempts, 0)
	pair("sustained_attempts", g.SustainedAttempts, g.SuspectSustainedAttempts, 0)
	if n := g.SuspectSameRingTimeouts; n == 1 || n > g.RecentAttempts || (g.SameRingTimeouts > 0 && n >= g.SameRingTimeouts) {
		add("pacing.suspect_same_ring_timeouts", "%d is not allowed (want 0 to turn it off, or 2 to below same_ring_timeouts and at most recent_attempts)", n)
	}
	if n := g.SuspectSequentialRun; n < 0 || n == 1 || n > MaxHistory || (g.SequentialRun > 0 && n >= g.SequentialRun) {
		add("pacing.suspect_sequential_run", "%d is not allowed (want 0 to turn it off, or 2 to below sequential_run)", n)
	}
	atLeast("pacing.suspect_interval_s", g.SuspectIntervalS, 1)
}

package sync

import "time"

// Status is the status document: retained on <prefix>/dev/<device>/status
// (docs/protocol.md, "Status"), served by the local API at /v1/status with
// Lines and Sync filled in, and read back by `leadport-agent status`. One
// type, so the platform, the status page and the CLI read the same fields.
type Status struct {
	State         string                  `json:"state"` // online, offline; "running" in the local API
	DeviceID      string                  `json:"device_id"`
	At            time.Time               `json:"at"`
	Version       string                  `json:"version,omitempty"`
	StartedAt     time.Time               `json:"started_at,omitzero"`
	SIP           *SIPStatus              `json:"sip,omitempty"`
	Outbox        map[string]OutboxStatus `json:"outbox,omitempty"` // by record type
	Store         *StoreStatus            `json:"store,omitempty"`
	PolicyVersion int64                   `json:"policy_version"`
	Identity      *IdentityStatus         `json:"identity,omitempty"`
	Host          *HostStatus             `json:"host,omitempty"`

	// The local API's view adds these; they are not published.
	Lines []string   `json:"lines,omitempty"`
	Sync  *SyncState `json:"sync,omitempty"`
}

// SIPStatus is the proxy's part of the status.
type SIPStatus struct {
	Mode string `json:"mode"`
	// State says why the proxy is off; empty while it runs.
	State         string         `json:"state,omitempty"`
	Listeners     []string       `json:"listeners,omitempty"`
	Upstream      string         `json:"upstream,omitempty"`
	ActiveDialogs int            `json:"active_dialogs"`
	UpstreamCheck *UpstreamCheck `json:"upstream_check,omitempty"`
	Calls         uint64         `json:"calls"`  // since start
	Blocks        uint64         `json:"blocks"` // since start
	Admission     *Admission     `json:"admission,omitempty"`
	Security      *SIPSecurity   `json:"security,omitempty"`
	Register      *Register      `json:"register,omitempty"`
}

// Register is the registrations made through the agent: the register
// mode in force (the configured one, or "contact" once the registrar
// refused or ignored a Path) and the lines whose registrations fail (two
// or more non-2xx answers in a row; masked), with the last status each got.
type Register struct {
	Mode         string         `json:"mode"`
	Fallback     bool           `json:"fallback,omitempty"` // path configured, contact in force
	LinesFailing map[string]int `json:"lines_failing,omitempty"`
}

// SIPSecurity is what the proxy did with sources it does not know
// (docs/sip.md, "Scanners and floods"), since start: sources tracked now,
// messages dropped unanswered, requests refused, penalties, security.scan
// reports, and the bytes from and to them (out never above in).
type SIPSecurity struct {
	Sources   int    `json:"sources"`
	Dropped   uint64 `json:"dropped"`
	Refused   uint64 `json:"refused"`
	Penalised uint64 `json:"penalised"`
	Scans     uint64 `json:"scans"`
	BytesIn   uint64 `json:"bytes_in"`
	BytesOut  uint64 `json:"bytes_out"`
}

// Admission is the proxy's overload control (docs/sip.md, "Overload"):
// new requests it refused with 503 since start, by reason (queue: waited
// too long in the socket buffer; busy: too many goroutines waiting for a
// CPU; memory: live objects and stacks past 60 % of the budget; pending: too
// many requests awaiting their final response; unanswered: too many new
// requests on their way to be worked on, in the works or not yet answered
// at all by the next hop), and
// the figures it decides on (in_hand: goroutines at work or waiting for an
// answer); and the answers to BYEs held until the call's usage record is
// stored, now and at most since start (each keeps its BYE's transactions
// and goroutine: what a stalling store costs in memory); and the requests
// waiting for a slot to be worked on in, now and at most (busy: 64 for
// 50 ms, or 256 at once).
type Admission struct {
	Refused           uint64            `json:"refused"`
	RefusedByReason   map[string]uint64 `json:"refused_by_reason,omitempty"`
	InHand            int64             `json:"in_hand"`
	Pending           int64             `json:"pending"`
	Unanswered        int64             `json:"unanswered"`
	HeldBytes         int64             `json:"held_bytes"` // live heap and goroutine stacks
	Runnable          int64             `json:"runnable"`   // goroutines waiting for a CPU
	MemoryBudgetBytes int64             `json:"memory_budget_bytes"`
	ByesHeld          int64             `json:"byes_held"`
	ByesHeldPeak      int64             `json:"byes_held_peak"`
	Waiting           int64             `json:"waiting"`      // requests waiting for one of the slots they are worked on in
	WaitingPeak       int64             `json:"waiting_peak"` // the most at once since start
}

// UpstreamCheck is the last OPTIONS to the upstream.
type UpstreamCheck struct {
	At      time.Time `json:"at"`
	Answers bool      `json:"answers"`
	Status  int       `json:"status,omitempty"`
	RTTms   float64   `json:"rtt_ms,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// OutboxStatus is one record type's backlog.
type OutboxStatus struct {
	Pending    int `json:"pending"`
	OldestAgeS int `json:"oldest_age_s,omitempty"`
}

// StoreStatus is the store file against its cap, and the queue of
// records between the signalling path and the store.
type StoreStatus struct {
	SizeBytes int64 `json:"size_bytes"`
	MaxBytes  int64 `json:"max_bytes"`
	Full      bool  `json:"full"`
	// Queued and QueueHighWater are the records waiting for the writer
	// now and at most since start (bounded by 10,000; past it records are
	// dropped and counted).
	Queued         int   `json:"queued"`
	QueueHighWater int64 `json:"queue_high_water"`
}

// HostStatus are the device's figures; one the agent cannot read on a
// device is left out (nil).
type HostStatus struct {
	OS                string   `json:"os"`
	Arch              string   `json:"arch"`
	CPUPercent        *float64 `json:"cpu_percent,omitempty"`
	MemoryTotalBytes  *uint64  `json:"memory_total_bytes,omitempty"`
	MemoryUsedPercent *float64 `json:"memory_used_percent,omitempty"`
	DiskFreeBytes     *uint64  `json:"disk_free_bytes,omitempty"`
	Load1             *float64 `json:"load1,omitempty"`
	Load5             *float64 `json:"load5,omitempty"`
	Load15            *float64 `json:"load15,omitempty"`
	UptimeS           *uint64  `json:"uptime_s,omitempty"`
}

// SyncState is the MQTT client's state as the local API shows it.
type SyncState struct {
	Configured       bool      `json:"configured"`
	Connected        bool      `json:"connected"`
	Broker           string    `json:"broker,omitempty"`
	LastSync         time.Time `json:"last_sync,omitzero"`
	RecordsAcked     uint64    `json:"records_acked"`
	Commands         uint64    `json:"commands"`
	CommandsRejected uint64    `json:"commands_rejected"`
	LastError        string    `json:"last_error,omitempty"`
}

// Identity is the document naming the device's call-signing key, retained
// on <prefix>/dev/<device>/identity (docs/protocol.md, "Identity"), printed
// by `leadport-agent identity` and carried in the status.
type Identity struct {
	DeviceID  string    `json:"device_id"`
	KeyID     string    `json:"kid"`
	Alg       string    `json:"alg"`
	PublicKey string    `json:"public_key"`
	Info      string    `json:"info"`
	CreatedAt time.Time `json:"created_at"`
}

// IdentityStatus is the status's "identity": the key in use, whether calls
// are signed with it, and the clock they are signed by.
type IdentityStatus struct {
	Identity
	// Signing is false when sip.identity is off or the proxy is not
	// configured.
	Signing    bool    `json:"signing"`
	Signed     uint64  `json:"signed"`
	SignErrors uint64  `json:"sign_errors"`
	SignUSMean float64 `json:"sign_us_mean"` // mean time to sign a call, µs
	Clock      Clock   `json:"clock"`
}

// Clock is the edge's clock as the agent measures it.
type Clock struct {
	// OffsetS is the upstream's clock less ours, in seconds (median of the
	// last Date headers); signing corrects by it once it is over 1 s.
	OffsetS float64   `json:"offset_s"`
	Samples int       `json:"samples"`
	LastAt  time.Time `json:"last_at,omitzero"`
}

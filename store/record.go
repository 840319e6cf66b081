package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Type is the kind of a record; each type has its own outbox.
type Type uint8

// Record types. The numbers are written to disk: never renumber them.
const (
	TypeUsage     Type = 1
	TypeConsent   Type = 2
	TypeViolation Type = 3
	TypeReceipt   Type = 4
)

// Types lists every record type in a fixed order.
var Types = []Type{TypeUsage, TypeConsent, TypeViolation, TypeReceipt}

func (t Type) String() string {
	switch t {
	case TypeUsage:
		return "usage"
	case TypeConsent:
		return "consent"
	case TypeViolation:
		return "violation"
	case TypeReceipt:
		return "receipt"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

func (t Type) valid() bool { return t >= TypeUsage && t <= TypeReceipt }

// ParseType is the inverse of Type.String.
func ParseType(s string) (Type, error) {
	for _, t := range Types {
		if t.String() == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown record type %q", s)
}

// ErrInvalidRecord wraps every validation failure of a record handed to Append.
var ErrInvalidRecord = errors.New("invalid record")

// Field is one personal field of a record. It is sealed at rest under the
// data key of Subject, so erasing the subject makes it unreadable.
type Field struct {
	Subject string          // whom the value is about; normalised by the store
	Name    string          // JSON name in the record ("remote", "subject", ...)
	Value   json.RawMessage // JSON value
}

// Record is one stored record: the non-personal fields as a JSON object, the
// personal ones apart. It is what the outbox hands to sync; Decode or
// MarshalJSON turn it into the shape the platform receives.
type Record struct {
	ID       string // ULID
	Type     Type
	Seq      uint64    // position in its outbox; see ReadOptions.After
	Created  time.Time // when the store accepted it
	Public   json.RawMessage
	Personal []Field
}

// Payload is a typed record that can be appended: Usage, Consent, Violation
// or Receipt.
type Payload interface {
	RecordType() Type
	// split validates the record and separates its personal fields.
	split() (public any, personal []Field, err error)
	// merge fills the personal fields back in after public was decoded.
	merge(personal []Field) error
}

// Usage is one call on a Leadport line.
type Usage struct {
	ID          string    `json:"id,omitempty"`
	Type        string    `json:"type,omitempty"`
	Line        string    `json:"line"`
	Direction   string    `json:"direction"`
	Remote      string    `json:"remote,omitempty"` // personal
	StartedAt   time.Time `json:"started_at,omitzero"`
	AnsweredAt  time.Time `json:"answered_at,omitzero"`
	EndedAt     time.Time `json:"ended_at,omitzero"`
	DurationS   float64   `json:"duration_s"`
	Disposition string    `json:"disposition"`
	FinalStatus int       `json:"final_status,omitempty"`
	BlockedBy   string    `json:"blocked_by,omitempty"`
	CallID      string    `json:"call_id,omitempty"` // the SIP Call-ID, to match the PBX's own records
	// EndedBy is who hung up an answered call: "caller" or "callee"
	// (empty when it ended otherwise: timeout, failure, cancel).
	EndedBy string `json:"ended_by,omitempty"`
	// Hairpin marks the second leg of a call between two of the device's
	// lines: one Call-ID, two usage records (the caller's line outbound,
	// the callee's line inbound), told apart by line and direction.
	Hairpin bool `json:"hairpin,omitempty"`
}

// CallKey is the key of a call in progress in the store's checkpoint
// (SaveCallsInProgress): its Call-ID, with a suffix no Call-ID carries for
// the second leg of a hairpin call, whose Call-ID is the first leg's.
// Storing a usage record removes the checkpoint entry of its call.
func CallKey(callID string, hairpin bool) string {
	if !hairpin {
		return callID
	}
	return callID + "\x00hairpin"
}

// Consent is a data subject's consent (or its withdrawal) for a purpose.
type Consent struct {
	ID         string    `json:"id,omitempty"`
	Type       string    `json:"type,omitempty"`
	Subject    string    `json:"subject,omitempty"` // personal
	Purpose    string    `json:"purpose"`
	State      string    `json:"state"`
	Method     string    `json:"method"`
	CapturedAt time.Time `json:"captured_at,omitzero"`
	Evidence   string    `json:"evidence,omitempty"` // personal: a reference, at most 1 KiB
	Line       string    `json:"line,omitempty"`
	// RecordedBy is who handed the record to the agent: the local user
	// the kernel named on the API socket ("platform" is kept for records a
	// platform command makes, should one ever make them).
	// It is about the operator, not the data subject, so it is not
	// sealed with the subject's key.
	RecordedBy string `json:"recorded_by,omitempty"`
}

// Violation is a rule that tripped on a line, blocked or only observed.
type Violation struct {
	ID     string    `json:"id,omitempty"`
	Type   string    `json:"type,omitempty"`
	Rule   string    `json:"rule"`
	Line   string    `json:"line"`
	Action string    `json:"action"`
	At     time.Time `json:"at,omitzero"`
	CallID string    `json:"call_id,omitempty"`
	// Evidence holds the figures that tripped the rule and the thresholds in
	// force; it must not hold phone numbers: those go in Numbers.
	Evidence json.RawMessage `json:"evidence,omitempty"`
	// Numbers are the parties the violation concerns (callees of a dialing
	// run, a forwarding target); each is personal data of its own subject.
	Numbers []string `json:"numbers,omitempty"`
	// Confidence is "certain" (the rule is sure; only these block) or
	// "suspect" (evidence building, not yet proof; action observed).
	// Empty in records kept before it existed: read as certain.
	Confidence string `json:"confidence,omitempty"`
	// Score is a suspect report's evidence measured against the block
	// threshold of its signal: 0 to 1, 1 where it would block.
	Score float64 `json:"score,omitempty"`
}

// Receipt answers one platform command.
type Receipt struct {
	ID        string          `json:"id,omitempty"`
	Type      string          `json:"type,omitempty"`
	CommandID string          `json:"command_id"`
	Status    string          `json:"status"`
	Reason    string          `json:"reason"`
	At        time.Time       `json:"at,omitzero"`
	Result    json.RawMessage `json:"result,omitempty"`
	// Subject, when set, makes Result personal data of that subject (an
	// export carries everything held about it), so it is sealed and erased
	// like any other personal field. It is not sent.
	Subject string `json:"-"`
}

func (*Usage) RecordType() Type     { return TypeUsage }
func (*Consent) RecordType() Type   { return TypeConsent }
func (*Violation) RecordType() Type { return TypeViolation }
func (*Receipt) RecordType() Type   { return TypeReceipt }

func invalid(t Type, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidRecord, t, fmt.Sprintf(format, args...))
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s) // a string always marshals
	return b
}

func (u *Usage) split() (any, []Field, error) {
	if u.Line == "" {
		return nil, nil, invalid(TypeUsage, "line is empty")
	}
	if !oneOf(u.Direction, "inbound", "outbound") {
		return nil, nil, invalid(TypeUsage, "direction %q is not inbound or outbound", u.Direction)
	}
	if !oneOf(u.Disposition, "answered", "busy", "no_answer", "cancelled", "failed", "blocked") {
		return nil, nil, invalid(TypeUsage, "disposition %q is unknown", u.Disposition)
	}
	if !oneOf(u.EndedBy, "", "caller", "callee") {
		return nil, nil, invalid(TypeUsage, "ended_by %q is not caller or callee", u.EndedBy)
	}
	if u.DurationS < 0 {
		return nil, nil, invalid(TypeUsage, "duration_s is negative")
	}
	pub := *u
	pub.ID, pub.Type, pub.Remote = "", "", ""
	pub.StartedAt, pub.AnsweredAt, pub.EndedAt = u.StartedAt.UTC(), u.AnsweredAt.UTC(), u.EndedAt.UTC()
	var personal []Field
	if u.Remote != "" {
		personal = []Field{{Subject: u.Remote, Name: "remote", Value: jsonString(u.Remote)}}
	}
	return &pub, personal, nil
}

func (u *Usage) merge(fs []Field) error {
	for _, f := range fs {
		if f.Name == "remote" {
			if err := json.Unmarshal(f.Value, &u.Remote); err != nil {
				return err
			}
		}
	}
	return nil
}

// MaxEvidence is the largest consent evidence reference accepted.
const MaxEvidence = 1024

// maxRecordedBy is room for any user name (Linux allows 32 bytes).
const maxRecordedBy = 64

func (c *Consent) split() (any, []Field, error) {
	if c.Subject == "" {
		return nil, nil, invalid(TypeConsent, "subject is empty")
	}
	if c.Purpose == "" {
		return nil, nil, invalid(TypeConsent, "purpose is empty")
	}
	if !oneOf(c.State, "granted", "withdrawn") {
		return nil, nil, invalid(TypeConsent, "state %q is not granted or withdrawn", c.State)
	}
	if !oneOf(c.Method, "ivr", "verbal", "web", "written", "other") {
		return nil, nil, invalid(TypeConsent, "method %q is not ivr, verbal, web, written or other", c.Method)
	}
	if len(c.Evidence) > MaxEvidence {
		return nil, nil, invalid(TypeConsent, "evidence is %d bytes, more than %d", len(c.Evidence), MaxEvidence)
	}
	if c.CapturedAt.IsZero() {
		return nil, nil, invalid(TypeConsent, "captured_at is missing")
	}
	if len(c.RecordedBy) > maxRecordedBy {
		return nil, nil, invalid(TypeConsent, "recorded_by is %d bytes, more than %d", len(c.RecordedBy), maxRecordedBy)
	}
	pub := *c
	pub.ID, pub.Type, pub.Subject, pub.Evidence = "", "", "", ""
	pub.CapturedAt = c.CapturedAt.UTC()
	personal := []Field{{Subject: c.Subject, Name: "subject", Value: jsonString(c.Subject)}}
	if c.Evidence != "" {
		personal = append(personal, Field{Subject: c.Subject, Name: "evidence", Value: jsonString(c.Evidence)})
	}
	return &pub, personal, nil
}

func (c *Consent) merge(fs []Field) error {
	for _, f := range fs {
		var dst *string
		switch f.Name {
		case "subject":
			dst = &c.Subject
		case "evidence":
			dst = &c.Evidence
		default:
			continue
		}
		if err := json.Unmarshal(f.Value, dst); err != nil {
			return err
		}
	}
	return nil
}

func (v *Violation) split() (any, []Field, error) {
	if v.Rule == "" {
		return nil, nil, invalid(TypeViolation, "rule is empty")
	}
	if !oneOf(v.Action, "blocked", "observed") {
		return nil, nil, invalid(TypeViolation, "action %q is not blocked or observed", v.Action)
	}
	if len(v.Evidence) > 0 && !json.Valid(v.Evidence) {
		return nil, nil, invalid(TypeViolation, "evidence is not valid JSON")
	}
	if !oneOf(v.Confidence, "", "certain", "suspect") {
		return nil, nil, invalid(TypeViolation, "confidence %q is not certain or suspect", v.Confidence)
	}
	pub := *v
	pub.ID, pub.Type, pub.Numbers = "", "", nil
	pub.At = v.At.UTC()
	personal := make([]Field, 0, len(v.Numbers))
	for _, n := range v.Numbers {
		personal = append(personal, Field{Subject: n, Name: "numbers", Value: jsonString(n)})
	}
	return &pub, personal, nil
}

func (v *Violation) merge(fs []Field) error {
	for _, f := range fs {
		if f.Name != "numbers" {
			continue
		}
		var n string
		if err := json.Unmarshal(f.Value, &n); err != nil {
			return err
		}
		v.Numbers = append(v.Numbers, n)
	}
	return nil
}

func (r *Receipt) split() (any, []Field, error) {
	if r.CommandID == "" {
		return nil, nil, invalid(TypeReceipt, "command_id is empty")
	}
	if !oneOf(r.Status, "done", "rejected", "failed") {
		return nil, nil, invalid(TypeReceipt, "status %q is not done, rejected or failed", r.Status)
	}
	if len(r.Result) > 0 && !json.Valid(r.Result) {
		return nil, nil, invalid(TypeReceipt, "result is not valid JSON")
	}
	pub := *r
	pub.ID, pub.Type = "", ""
	pub.At = r.At.UTC()
	var personal []Field
	if r.Subject != "" && len(r.Result) > 0 {
		pub.Result = nil
		personal = []Field{{Subject: r.Subject, Name: "result", Value: r.Result}}
	}
	return &pub, personal, nil
}

func (r *Receipt) merge(fs []Field) error {
	for _, f := range fs {
		if f.Name == "result" {
			r.Result = append(json.RawMessage(nil), f.Value...)
		}
	}
	return nil
}

// Decode returns the typed record (*Usage, *Consent, *Violation or
// *Receipt) with its personal fields filled in.
func (r *Record) Decode() (Payload, error) {
	var p Payload
	switch r.Type {
	case TypeUsage:
		p = &Usage{}
	case TypeConsent:
		p = &Consent{}
	case TypeViolation:
		p = &Violation{}
	case TypeReceipt:
		p = &Receipt{}
	default:
		return nil, fmt.Errorf("record %s: %w: unknown type %d", r.ID, ErrCorrupt, r.Type)
	}
	if err := json.Unmarshal(r.Public, p); err != nil {
		return nil, fmt.Errorf("record %s: %w: public fields: %v", r.ID, ErrCorrupt, err)
	}
	if err := p.merge(r.Personal); err != nil {
		return nil, fmt.Errorf("record %s: %w: personal field: %v", r.ID, ErrCorrupt, err)
	}
	setIdentity(p, r.ID, r.Type.String())
	return p, nil
}

func setIdentity(p Payload, id, typ string) {
	switch v := p.(type) {
	case *Usage:
		v.ID, v.Type = id, typ
	case *Consent:
		v.ID, v.Type = id, typ
	case *Violation:
		v.ID, v.Type = id, typ
	case *Receipt:
		v.ID, v.Type = id, typ
	}
}

// MarshalJSON gives the record as the platform receives it (docs/protocol.md):
// one flat object with id, type and every field still held.
func (r Record) MarshalJSON() ([]byte, error) {
	p, err := r.Decode()
	if err != nil {
		return nil, err
	}
	return json.Marshal(p)
}

// AppendJSON appends the record as the platform receives it: the same
// object MarshalJSON gives (keys in another order), spliced from the
// stored parts instead of decoded and encoded again. The upload path makes
// one per record, so this is most of its CPU.
func (r *Record) AppendJSON(dst []byte) ([]byte, error) {
	return appendRecordJSON(dst, r.ID, r.Type, r.Public, r.Personal)
}

// appendRecordJSON is Record.AppendJSON from the record's parts: the
// drain has the id as text on its stack, not as a string.
func appendRecordJSON[S ~string | ~[]byte](dst []byte, id S, typ Type, public []byte, personal []Field) ([]byte, error) {
	pub := bytes.TrimSpace(public)
	if len(pub) < 2 || pub[0] != '{' || pub[len(pub)-1] != '}' {
		return dst, fmt.Errorf("record %s: %w: public fields are not an object", string(id), ErrCorrupt)
	}
	dst = append(dst, `{"id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","type":"`...)
	dst = append(dst, typ.String()...)
	dst = append(dst, '"')
	numbers := 0
	for _, f := range personal {
		if typ == TypeViolation && f.Name == "numbers" {
			numbers++
			continue
		}
		dst = append(dst, `,"`...)
		dst = append(dst, f.Name...)
		dst = append(dst, `":`...)
		dst = append(dst, f.Value...)
	}
	if numbers > 0 {
		dst = append(dst, `,"numbers":[`...)
		first := true
		for _, f := range personal {
			if f.Name != "numbers" {
				continue
			}
			if !first {
				dst = append(dst, ',')
			}
			dst = append(dst, f.Value...)
			first = false
		}
		dst = append(dst, ']')
	}
	if body := bytes.TrimSpace(pub[1 : len(pub)-1]); len(body) > 0 {
		dst = append(dst, ',')
		dst = append(dst, body...)
	}
	return append(dst, '}'), nil
}

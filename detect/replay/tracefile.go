package replay

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/store/phone"
)

// Trace files: JSON lines, one call attempt per line, the form in which
// a technician or the platform hands `leadport-agent analyze` a day of
// calls from a CDR export or a dialer's log (docs/analyze.md). Times are
// seconds as numbers, as CDRs give them; the golden cases' JSON
// (trace.go) is a different, Go-duration form.

// traceLine is one line of a trace file, with exactly the documented
// field names. Pointers tell a missing field from a zero.
type traceLine struct {
	Start     *float64          `json:"start"`
	Direction *detect.Direction `json:"direction"`
	Line      *string           `json:"line"`
	Remote    *string           `json:"remote"`
	Ring      *float64          `json:"ring_s"`
	Status    *int              `json:"status"`
	Talk      *float64          `json:"talk_s,omitempty"`
	Bye       *Party            `json:"bye,omitempty"`
	Diversion []string          `json:"diversion,omitempty"`
	From      string            `json:"from,omitempty"`
	PAI       string            `json:"pai,omitempty"`
}

// maxTraceLine bounds one line of a trace file: a call with a long
// Diversion list is well under it.
const maxTraceLine = 64 << 10

// maxTraceSeconds bounds the times in a trace file: a year, far more than
// any trace, and far from where a Duration overflows.
const maxTraceSeconds = 366 * 24 * 3600

// ErrTraceFile marks every error about the content of a trace file.
var ErrTraceFile = errors.New("trace file")

// ReadTraceFile reads a trace file. Blank lines are skipped; any other
// line must be one JSON object with the documented fields: an unknown or
// missing field, or a value out of range, is an error naming the line.
// The calls come back in order of start (stable for equal starts), and the
// trace's lines are the distinct `line` values in order of appearance.
func ReadTraceFile(r io.Reader) (*Trace, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxTraceLine)
	tr := &Trace{Model: "trace file"}
	// Calls gather in chunks and are copied once into a slice of the
	// right size: growing one slice of a million calls copies them, with
	// their pointers, several times over (a third of the read).
	var chunks [][]Call
	cur := make([]Call, 0, traceChunk)
	total := 0
	sorted := true
	var last time.Duration
	seen := map[string]bool{}
	n := 0
	for sc.Scan() {
		n++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		c, err := parseTraceLine(b)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrTraceFile, n, masked{err})
		}
		if !seen[c.Line] {
			seen[c.Line] = true
			tr.Lines = append(tr.Lines, c.Line)
		}
		if c.Start < last {
			sorted = false
		}
		last = c.Start
		if len(cur) == cap(cur) {
			chunks, cur = append(chunks, cur), make([]Call, 0, traceChunk)
		}
		cur = append(cur, c)
		total++
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: line %d longer than %d bytes: %w", ErrTraceFile, n+1, maxTraceLine, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrTraceFile, err)
	}
	chunks = append(chunks, cur)
	tr.Calls = make([]Call, 0, total)
	for i, ch := range chunks {
		tr.Calls = append(tr.Calls, ch...)
		chunks[i] = nil // copied: the collector may have it back
	}
	if !sorted {
		// Exports are usually in order; when not, sort positions rather
		// than the large calls themselves, stably.
		order := make([]int32, total)
		for i := range order {
			order[i] = int32(i)
		}
		slices.SortStableFunc(order, func(a, b int32) int { return cmp.Compare(tr.Calls[a].Start, tr.Calls[b].Start) })
		calls := make([]Call, total)
		for i, k := range order {
			calls[i] = tr.Calls[k]
		}
		tr.Calls = calls
	}
	return tr, nil
}

// traceChunk is how many calls gather before the next chunk starts.
const traceChunk = 4096

// masked shows an error with the phone numbers in its text masked: the
// JSON decoder quotes what it could not take (an unknown field named like
// a number), and errors end up in terminals and logs.
type masked struct{ err error }

func (m masked) Error() string { return phone.MaskText(m.err.Error()) }
func (m masked) Unwrap() error { return m.err }

func parseTraceLine(b []byte) (Call, error) {
	var l traceLine
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return Call{}, err
	}
	if dec.More() {
		return Call{}, errors.New("more than one JSON value on the line")
	}
	var missing []string
	for _, f := range [...]struct {
		name   string
		absent bool
	}{
		{"direction", l.Direction == nil}, {"line", l.Line == nil}, {"remote", l.Remote == nil},
		{"ring_s", l.Ring == nil}, {"start", l.Start == nil}, {"status", l.Status == nil},
	} {
		if f.absent {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return Call{}, fmt.Errorf("missing %v", missing)
	}
	c := Call{Direction: *l.Direction, Remote: *l.Remote, Status: *l.Status, Diversion: l.Diversion, From: l.From, PAI: l.PAI}
	var err error
	if c.Line, err = phone.Normalize(*l.Line, ""); err != nil || c.Line != *l.Line {
		return Call{}, fmt.Errorf("line %s is not an E.164 number (+ and digits)", phone.Mask(*l.Line))
	}
	if c.Remote == "" {
		return Call{}, errors.New("remote is empty")
	}
	if c.Start, err = seconds("start", *l.Start); err != nil {
		return Call{}, err
	}
	if c.Ring, err = seconds("ring_s", *l.Ring); err != nil {
		return Call{}, err
	}
	if c.Status < 200 || c.Status > 699 {
		return Call{}, fmt.Errorf("status %d is not a final SIP status (200-699)", c.Status)
	}
	answered := c.Status < 300
	if l.Talk != nil {
		if c.Talk, err = seconds("talk_s", *l.Talk); err != nil {
			return Call{}, err
		}
		if !answered && c.Talk > 0 {
			return Call{}, fmt.Errorf("talk_s %g on a call answered %d: only answered calls talk", *l.Talk, c.Status)
		}
	} else if answered {
		return Call{}, errors.New("missing talk_s on an answered call")
	}
	if l.Bye != nil {
		if !answered {
			return Call{}, fmt.Errorf("bye on a call answered %d: only answered calls end with a BYE", c.Status)
		}
		if *l.Bye != ByeCaller && *l.Bye != ByeCallee {
			return Call{}, fmt.Errorf("bye %q is neither caller nor callee", *l.Bye)
		}
		c.Bye = *l.Bye
	} else if answered {
		return Call{}, errors.New("missing bye (caller or callee) on an answered call")
	}
	return c, nil
}

// seconds turns a number of seconds into a Duration, refusing negative,
// non-finite and absurd values.
func seconds(name string, s float64) (time.Duration, error) {
	if math.IsNaN(s) || s < 0 || s > maxTraceSeconds {
		return 0, fmt.Errorf("%s %g is not between 0 and %d seconds", name, s, maxTraceSeconds)
	}
	return time.Duration(math.Round(s * float64(time.Second))), nil
}

// WriteTraceFile writes a trace in the trace-file form, one call per line.
// What the form does not carry (early responses, REFER, History-Info,
// RPID, sources, registrations) is left out, so a model's trace can be
// handed to analyze as a technician would hand over a CDR export.
func WriteTraceFile(w io.Writer, tr *Trace) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i := range tr.Calls {
		c := &tr.Calls[i]
		start, ring := c.Start.Seconds(), c.Ring.Seconds()
		dir, line, remote, status := c.Direction, c.Line, c.Remote, c.Status
		l := traceLine{Start: &start, Direction: &dir, Line: &line, Remote: &remote, Ring: &ring, Status: &status,
			Diversion: c.Diversion, From: c.From, PAI: c.PAI}
		if c.Status >= 200 && c.Status < 300 {
			talk, bye := c.Talk.Seconds(), c.Bye
			if bye == "" {
				bye = ByeCaller
			}
			l.Talk, l.Bye = &talk, &bye
		}
		if err := enc.Encode(&l); err != nil {
			return fmt.Errorf("trace file, call %d: %w", i, err)
		}
	}
	return bw.Flush()
}

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
	"strconv"
	"time"
	"unsafe"

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

// ReadTraceFile reads a whole trace file into memory. Blank lines are
// skipped; any other line must be one JSON object with the documented
// fields: an unknown or missing field, or a value out of range, is an
// error naming the line. The calls come back in order of start (stable
// for equal starts, in any disorder), and the trace's lines are the
// distinct `line` values in order of appearance. A large file is better
// read with a TraceReader, which holds only the calls not yet handed out.
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
	var p traceParser
	n := 0
	for sc.Scan() {
		n++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		c, err := p.parse(b)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrTraceFile, n, masked{err})
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
	if err := scanErr(sc, n); err != nil {
		return nil, err
	}
	tr.Lines = p.lines
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

func scanErr(sc *bufio.Scanner, n int) error {
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%w: line %d longer than %d bytes: %w", ErrTraceFile, n+1, maxTraceLine, err)
		}
		return fmt.Errorf("%w: %w", ErrTraceFile, err)
	}
	return nil
}

// traceChunk is how many calls gather before the next chunk starts.
const traceChunk = 4096

// ReorderWindow is how far out of order a TraceReader takes a trace
// file's calls: a call may start up to this long before a call above it
// in the file. Four hours is the longest call the agent tracks
// (rules.Options.MaxDuration), so an export sorted by the calls' ends,
// as CDRs often are, reads as well as one sorted by their starts.
const ReorderWindow = 4 * time.Hour

// ErrTraceOrder marks a trace file whose calls are further out of order
// than ReorderWindow; it wraps ErrTraceFile.
var ErrTraceOrder = fmt.Errorf("%w: out of order", ErrTraceFile)

// TraceReader reads a trace file one call at a time, in order of start,
// holding only the calls read but not yet handed out: memory follows
// the calls within ReorderWindow of each other, not the file's size.
// It checks each line as ReadTraceFile does, and hands out the calls of
// a file in order within the window in the order ReadTraceFile would
// (by start, stable); a call further out of order is an ErrTraceOrder
// naming its line.
type TraceReader struct {
	sc *bufio.Scanner
	p  traceParser
	n  int // lines read
	// The calls read but not handed out wait in fifo (from head), in
	// order of start, and in late, a heap by (start, line) of those that
	// came after a call that starts later. A call is handed out once one
	// read after it starts more than ReorderWindow later, or at the end
	// of the file.
	fifo []*pending
	head int
	late []*pending
	free []*pending
	// maxStart is the latest start read, on line maxLine.
	maxStart time.Duration
	maxLine  int
	// last is the start of the call handed out last: a call read later
	// that starts before it is too late to take its place. It was
	// handed out when a call ReorderWindow later was read, so such a call
	// is more than that before the latest.
	last  time.Duration
	eof   bool
	calls int
}

type pending struct {
	c    Call
	line int
}

// NewTraceReader reads a trace file from r.
func NewTraceReader(r io.Reader) *TraceReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxTraceLine)
	return &TraceReader{sc: sc}
}

// Next returns the next call in order of start, or io.EOF after the last.
// Any other error is final and names the line.
func (t *TraceReader) Next() (Call, error) {
	for !t.eof && (t.held() == 0 || t.maxStart-t.first().c.Start <= ReorderWindow) {
		if err := t.read(); err != nil {
			t.eof = true
			t.fifo, t.late, t.head = nil, nil, 0
			return Call{}, err
		}
	}
	if t.held() == 0 {
		return Call{}, io.EOF
	}
	c := t.pop()
	t.last = c.Start
	t.calls++
	return c, nil
}

// Lines returns the distinct `line` values read so far, in order of
// appearance in the file.
func (t *TraceReader) Lines() []string { return t.p.lines }

// Calls returns how many calls Next has handed out.
func (t *TraceReader) Calls() int { return t.calls }

// read reads the next call of the file into those held, skipping blank lines;
// at the end of the file it sets eof.
func (t *TraceReader) read() error {
	for t.sc.Scan() {
		t.n++
		b := bytes.TrimSpace(t.sc.Bytes())
		if len(b) == 0 {
			continue
		}
		c, err := t.p.parse(b)
		if err != nil {
			return fmt.Errorf("%w: line %d: %w", ErrTraceFile, t.n, masked{err})
		}
		if t.calls > 0 && c.Start < t.last {
			return fmt.Errorf("%w: line %d starts at %ss, more than %s before a call above it (line %d, at %ss); sort the file by start first (jq -c -s 'sort_by(.start)[]')",
				ErrTraceOrder, t.n, fmtSeconds(c.Start), ReorderWindow, t.maxLine, fmtSeconds(t.maxStart))
		}
		if c.Start > t.maxStart {
			t.maxStart, t.maxLine = c.Start, t.n
		}
		t.push(c, t.n)
		return nil
	}
	t.eof = true
	return scanErr(t.sc, t.n)
}

func before(a, b *pending) bool {
	return a.c.Start < b.c.Start || a.c.Start == b.c.Start && a.line < b.line
}

func (t *TraceReader) less(i, j int) bool { return before(t.late[i], t.late[j]) }

// held is how many calls are read and not handed out.
func (t *TraceReader) held() int { return len(t.fifo) - t.head + len(t.late) }

// first is the call to hand out next: the earlier of the queue's and the
// heap's first.
func (t *TraceReader) first() *pending {
	switch {
	case t.head == len(t.fifo):
		return t.late[0]
	case len(t.late) == 0 || before(t.fifo[t.head], t.late[0]):
		return t.fifo[t.head]
	}
	return t.late[0]
}

// push holds a call read: on the queue when it starts no earlier than
// the last there (the usual case: a file in order costs no sorting), on
// the heap when not. Both hold pointers, so that the heap's swaps move a
// word rather than a call, and the pendings handed out are used again.
func (t *TraceReader) push(c Call, line int) {
	var p *pending
	if n := len(t.free); n > 0 {
		p, t.free = t.free[n-1], t.free[:n-1]
	} else {
		p = new(pending)
	}
	p.c, p.line = c, line
	if t.head == len(t.fifo) || t.fifo[len(t.fifo)-1].c.Start <= c.Start {
		if t.head > 0 && t.head == len(t.fifo) {
			t.fifo, t.head = t.fifo[:0], 0
		}
		t.fifo = append(t.fifo, p)
		return
	}
	t.late = append(t.late, p)
	for i := len(t.late) - 1; i > 0; {
		up := (i - 1) / 2
		if !t.less(i, up) {
			break
		}
		t.late[i], t.late[up] = t.late[up], t.late[i]
		i = up
	}
}

func (t *TraceReader) pop() Call {
	top := t.first()
	if t.head < len(t.fifo) && top == t.fifo[t.head] {
		t.fifo[t.head] = nil
		t.head++
		if t.head > 1024 && t.head*2 > len(t.fifo) {
			// Move the queue back to the front of its array rather than
			// let it creep along and grow.
			n := copy(t.fifo, t.fifo[t.head:])
			clear(t.fifo[n:])
			t.fifo, t.head = t.fifo[:n], 0
		}
	} else {
		h := t.late
		last := len(h) - 1
		h[0] = h[last]
		h[last] = nil
		t.late = h[:last]
		for i := 0; ; {
			l, r, m := 2*i+1, 2*i+2, i
			if l < last && t.less(l, m) {
				m = l
			}
			if r < last && t.less(r, m) {
				m = r
			}
			if m == i {
				break
			}
			t.late[i], t.late[m] = t.late[m], t.late[i]
			i = m
		}
	}
	c := top.c
	*top = pending{} // let go of its strings
	t.free = append(t.free, top)
	return c
}

// masked shows an error with the phone numbers in its text masked: the
// JSON decoder quotes what it could not take (an unknown field named like
// a number), and errors end up in terminals and logs.
type masked struct{ err error }

func (m masked) Error() string { return phone.MaskText(m.err.Error()) }
func (m masked) Unwrap() error { return m.err }

// traceFields is one line of a trace file decoded; has says which of the
// fields that must be there, or not, were (hasRequired).
type traceFields struct {
	has               uint16
	start, ring, talk float64
	status            int
	dir               detect.Direction
	bye               Party
	line, remote      string
	from, pai         string
	diversion         []string
}

const (
	hasStart uint16 = 1 << iota
	hasDirection
	hasLine
	hasRemote
	hasRing
	hasStatus
	hasTalk
	hasBye
	hasDiversion
	hasFrom
	hasPAI

	hasRequired = hasStart | hasDirection | hasLine | hasRemote | hasRing | hasStatus | hasTalk | hasBye
)

// traceParser turns lines of a trace file into calls. It keeps the
// lines met so far: a trace has a few, repeated on every call, so each
// is checked and allocated once.
type traceParser struct {
	known map[string]string
	lines []string
}

func (p *traceParser) parse(b []byte) (Call, error) {
	var f traceFields
	// The fast path reads the form WriteTraceFile writes and exports
	// usually have; anything else it leaves to encoding/json, which has
	// the last word on what is valid and says what is wrong.
	if !f.scan(b, p) {
		if err := f.decode(b); err != nil {
			return Call{}, err
		}
	}
	return p.call(&f)
}

// decode reads a line with encoding/json.
func (f *traceFields) decode(b []byte) error {
	var l traceLine
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value on the line")
	}
	*f = traceFields{diversion: l.Diversion, from: l.From, pai: l.PAI}
	if l.Start != nil {
		f.has, f.start = f.has|hasStart, *l.Start
	}
	if l.Direction != nil {
		f.has, f.dir = f.has|hasDirection, *l.Direction
	}
	if l.Line != nil {
		f.has, f.line = f.has|hasLine, *l.Line
	}
	if l.Remote != nil {
		f.has, f.remote = f.has|hasRemote, *l.Remote
	}
	if l.Ring != nil {
		f.has, f.ring = f.has|hasRing, *l.Ring
	}
	if l.Status != nil {
		f.has, f.status = f.has|hasStatus, *l.Status
	}
	if l.Talk != nil {
		f.has, f.talk = f.has|hasTalk, *l.Talk
	}
	if l.Bye != nil {
		f.has, f.bye = f.has|hasBye, *l.Bye
	}
	return nil
}

// call checks the fields of a line and makes its call.
func (p *traceParser) call(f *traceFields) (Call, error) {
	var missing []string
	for _, m := range [...]struct {
		name string
		bit  uint16
	}{
		{"direction", hasDirection}, {"line", hasLine}, {"remote", hasRemote},
		{"ring_s", hasRing}, {"start", hasStart}, {"status", hasStatus},
	} {
		if f.has&m.bit == 0 {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return Call{}, fmt.Errorf("missing %v", missing)
	}
	c := Call{Direction: f.dir, Remote: f.remote, Status: f.status, Diversion: f.diversion, From: f.from, PAI: f.pai}
	var err error
	if c.Line, err = p.line(f.line); err != nil {
		return Call{}, err
	}
	if c.Remote == "" {
		return Call{}, errors.New("remote is empty")
	}
	if c.Start, err = seconds("start", f.start); err != nil {
		return Call{}, err
	}
	if c.Ring, err = seconds("ring_s", f.ring); err != nil {
		return Call{}, err
	}
	if c.Status < 200 || c.Status > 699 {
		return Call{}, fmt.Errorf("status %d is not a final SIP status (200-699)", c.Status)
	}
	answered := c.Status < 300
	if f.has&hasTalk != 0 {
		if c.Talk, err = seconds("talk_s", f.talk); err != nil {
			return Call{}, err
		}
		if !answered && c.Talk > 0 {
			return Call{}, fmt.Errorf("talk_s %g on a call answered %d: only answered calls talk", f.talk, c.Status)
		}
	} else if answered {
		return Call{}, errors.New("missing talk_s on an answered call")
	}
	if f.has&hasBye != 0 {
		if !answered {
			return Call{}, fmt.Errorf("bye on a call answered %d: only answered calls end with a BYE", c.Status)
		}
		if f.bye != ByeCaller && f.bye != ByeCallee {
			return Call{}, fmt.Errorf("bye %q is neither caller nor callee", f.bye)
		}
		c.Bye = f.bye
	} else if answered {
		return Call{}, errors.New("missing bye (caller or callee) on an answered call")
	}
	return c, nil
}

// line checks a call's line, once per distinct line, and notes it among
// the trace's lines.
func (p *traceParser) line(l string) (string, error) {
	if s, ok := p.known[l]; ok {
		return s, nil
	}
	if n, err := phone.Normalize(l, ""); err != nil || n != l {
		return "", fmt.Errorf("line %s is not an E.164 number (+ and digits)", phone.Mask(l))
	}
	if p.known == nil {
		p.known = map[string]string{}
	}
	p.known[l] = l
	p.lines = append(p.lines, l)
	return l, nil
}

func fmtSeconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

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

// scan reads a line in the common form: one object of the documented
// keys, spelled exactly, each once; numbers; strings of printable ASCII
// without escapes; a diversion list of such strings. It reports false on
// anything else (null, escapes, other spellings of a key, which
// encoding/json matches without regard to case, bad syntax), and the
// line goes to encoding/json, so the two agree on every line the scan
// takes (FuzzTraceLineScan). It is most of what made reading a trace
// file slow: a json.Decoder per line spent 40 % of analyze's time.
func (f *traceFields) scan(b []byte, p *traceParser) bool {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	var seen uint16 // the keys met
	for {
		k0, k1, ok := scanString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, k1+1)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		var bit uint16
		switch string(b[k0:k1]) {
		case "start":
			bit = hasStart
			f.start, i, ok = scanNumber(b, i)
		case "ring_s":
			bit = hasRing
			f.ring, i, ok = scanNumber(b, i)
		case "talk_s":
			bit = hasTalk
			f.talk, i, ok = scanNumber(b, i)
		case "status":
			bit = hasStatus
			f.status, i, ok = scanInt(b, i)
		case "direction":
			bit = hasDirection
			var s0, s1 int
			if s0, s1, ok = scanString(b, i); ok {
				switch string(b[s0:s1]) {
				case "outbound":
					f.dir = detect.Outbound
				case "inbound":
					f.dir = detect.Inbound
				default:
					ok = false
				}
				i = s1 + 1
			}
		case "line":
			bit = hasLine
			var s0, s1 int
			if s0, s1, ok = scanString(b, i); ok {
				f.line, i = p.intern(b[s0:s1]), s1+1
			}
		case "remote":
			bit = hasRemote
			f.remote, i, ok = scanText(b, i)
		case "from":
			bit = hasFrom
			f.from, i, ok = scanText(b, i)
		case "pai":
			bit = hasPAI
			f.pai, i, ok = scanText(b, i)
		case "bye":
			bit = hasBye
			var s0, s1 int
			if s0, s1, ok = scanString(b, i); ok {
				switch s := string(b[s0:s1]); s {
				case string(ByeCaller):
					f.bye = ByeCaller
				case string(ByeCallee):
					f.bye = ByeCallee
				default:
					f.bye = Party(s)
				}
				i = s1 + 1
			}
		case "diversion":
			bit = hasDiversion
			f.diversion, i, ok = scanList(b, i)
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false // a key twice: encoding/json takes the last
		}
		seen |= bit
		f.has |= bit & hasRequired
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// intern returns a line's number, allocated once per distinct number.
func (p *traceParser) intern(b []byte) string {
	if s, ok := p.known[string(b)]; ok {
		return s
	}
	return string(b) // checked (and kept) by traceParser.line
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString finds the string that starts at b[i]: its content is
// b[s0:s1] and its closing quote at s1. Only printable ASCII without
// escapes is taken: the rest needs encoding/json's unescaping and UTF-8
// repair.
func scanString(b []byte, i int) (s0, s1 int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return i + 1, j, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return 0, 0, false
		}
	}
	return 0, 0, false
}

func scanText(b []byte, i int) (string, int, bool) {
	s0, s1, ok := scanString(b, i)
	if !ok {
		return "", 0, false
	}
	return string(b[s0:s1]), s1 + 1, true
}

func scanList(b []byte, i int) ([]string, int, bool) {
	if i >= len(b) || b[i] != '[' {
		return nil, 0, false
	}
	out := []string{} // encoding/json makes [] an empty list, not nil
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return out, i + 1, true
	}
	for {
		s, j, ok := scanText(b, i)
		if !ok {
			return nil, 0, false
		}
		out = append(out, s)
		i = skipSpace(b, j)
		if i >= len(b) {
			return nil, 0, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return out, i + 1, true
		default:
			return nil, 0, false
		}
	}
}

// numberEnd returns where the JSON number that starts at b[i] ends, and
// whether it is an integer; n == i when there is none.
func numberEnd(b []byte, i int) (n int, integer bool) {
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
	default:
		return i, false
	}
	integer = true
	if j < len(b) && b[j] == '.' {
		integer = false
		j++
		d := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j == d {
			return i, false
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		integer = false
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		d := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		if j == d {
			return i, false
		}
	}
	return j, integer
}

func scanNumber(b []byte, i int) (float64, int, bool) {
	j, _ := numberEnd(b, i)
	if j == i {
		return 0, 0, false
	}
	// The digits are only looked at during the call: no string needs to
	// be made of them (a number's error, which would keep them, is
	// dropped, and the line goes to encoding/json).
	v, err := strconv.ParseFloat(unsafe.String(&b[i], j-i), 64)
	if err != nil {
		return 0, 0, false
	}
	return v, j, true
}

func scanInt(b []byte, i int) (int, int, bool) {
	j, integer := numberEnd(b, i)
	if j == i || !integer || j-i > 18 {
		return 0, 0, false // fractions and huge numbers: encoding/json's error
	}
	k, neg := i, false
	if b[k] == '-' {
		k, neg = k+1, true
	}
	n := 0
	for ; k < j; k++ {
		n = n*10 + int(b[k]-'0')
	}
	if neg {
		n = -n
	}
	return n, j, true
}

package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/capture"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/replay"
	"github.com/leadport/leadport-agent/store/phone"
)

// analyzeCmd replays captures (pcap, pcapng) and trace files (JSON lines)
// through the rules the proxy runs, in simulated time, and prints what
// they made of each call and line (docs/analyze.md). The captures given
// are one stream, in time order (a capture rotated over several files is
// read whole); each trace file is replayed on its own, since its times
// start at 0.
func analyzeCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	fs.SetOutput(stderr)
	polFile := fs.String("policy", "", "policy document (JSON, as the platform sends it; default: the policy the agent ships)")
	linesFlag := fs.String("lines", "", "the device's lines, E.164, comma-separated (default: the policy's; a trace's own; inferred from a capture)")
	asJSON := fs.Bool("json", false, "print one JSON document")
	unmasked := fs.Bool("unmasked", false, "print phone numbers whole (they are personal data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errUsage
	}
	pol := policy.Default()
	polName := "the shipped defaults"
	if *polFile != "" {
		b, err := os.ReadFile(*polFile)
		if err != nil {
			return fmt.Errorf("policy: %w", err)
		}
		if pol, err = policy.Parse(b); err != nil {
			return fmt.Errorf("policy %s: %w", *polFile, err)
		}
		polName = *polFile
	}
	lines, err := parseLines(*linesFlag)
	if err != nil {
		return err
	}
	if len(lines) > 0 {
		pol.Lines = lines
	}
	in, err := readInputs(fs.Args(), pol)
	defer in.cleanup()
	if err != nil {
		return err
	}
	mask := phone.Mask
	if *unmasked {
		mask = func(s string) string { return s }
	}
	w := bufio.NewWriterSize(stdout, 64<<10)
	if *asJSON {
		err = writeAnalysisJSON(w, in.runs, pol, mask)
	} else {
		err = printAnalysis(w, in.runs, pol, polName, mask)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

func parseLines(s string) ([]string, error) {
	var out []string
	for _, l := range strings.Split(s, ",") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		n, err := phone.Normalize(l, "")
		if err != nil || n != l {
			return nil, fmt.Errorf("--lines: %s is not an E.164 number (+ and digits)", phone.Mask(l))
		}
		out = append(out, n)
	}
	return out, nil
}

// analyzeRun is one replay: the captures together, or one trace file.
type analyzeRun struct {
	source    string // the file, or the captures' files
	kind      string // "capture" or "trace"
	linesFrom string // where the lines came from, for the report
	// A trace file is read twice: once when the inputs are checked (its
	// calls counted, its lines found), then as it is replayed, from path
	// (a copy of standard input in a temporary file).
	path  string
	calls int
	lines []string
	// The captures are read whole (detect/capture) and replayed before
	// the report, into a.
	a     *replay.Analysis
	files []string // the captures' files, with their stats
	stats []capture.Stats
	// After the replay: the lines' reports and how long it took.
	reports []replay.LineReport
	took    time.Duration
}

// inputs are the runs of an analysis and the temporary files to remove.
type inputs struct {
	runs []*analyzeRun
	temp []string
}

func (in *inputs) cleanup() {
	for _, name := range in.temp {
		os.Remove(name)
	}
}

// readInputs reads and checks every input before anything is printed,
// so that an input that cannot be read is an error, not a report cut
// short. Trace files are only checked here (their calls counted and
// lines noted: the replay needs them from the start); they are read
// again, a call at a time, as they are replayed. Captures are read
// whole and replayed.
func readInputs(files []string, pol policy.Policy) (*inputs, error) {
	in := &inputs{}
	var msgs []capture.Message
	var capFiles []string
	var capStats []capture.Stats
	for _, name := range files {
		f, err := openInput(name)
		if err != nil {
			return in, err
		}
		br := bufio.NewReaderSize(f, 64<<10)
		head, _ := br.Peek(4)
		if capture.Sniff(head) != capture.Unknown {
			m, st, err := capture.Read(br, capture.Options{})
			f.Close()
			if err != nil {
				return in, fmt.Errorf("%s: %w", name, err)
			}
			msgs = append(msgs, m...)
			capFiles = append(capFiles, name)
			capStats = append(capStats, st)
			continue
		}
		r := &analyzeRun{source: name, kind: "trace", linesFrom: "the trace's", path: name}
		if len(pol.Lines) > 0 {
			r.linesFrom = "given"
		}
		err = checkTrace(r, br, name == "-", in)
		f.Close()
		if err != nil {
			return in, fmt.Errorf("%s: %w", name, err)
		}
		in.runs = append(in.runs, r)
	}
	if len(capFiles) > 0 {
		// Files of one rotated capture come in any order; the replay
		// wants one stream in time order.
		slices.SortStableFunc(msgs, func(x, y capture.Message) int { return x.At.Compare(y.At) })
		start := time.Now()
		a, err := replay.AnalyzeMessages(msgs, pol, replay.CaptureOptions{})
		if err != nil {
			return in, fmt.Errorf("%s: %w", strings.Join(capFiles, ", "), err)
		}
		from := "given"
		if a.InferredLines {
			from = "inferred from the capture"
		}
		in.runs = append(in.runs, &analyzeRun{source: strings.Join(capFiles, ","), kind: "capture", linesFrom: from, a: a,
			calls: len(a.Calls), lines: a.Lines, files: capFiles, stats: capStats, reports: a.LineReports(), took: time.Since(start)})
	}
	return in, nil
}

// checkTrace reads a trace file through, counting its calls and noting
// its lines. Standard input cannot be read twice, so it is copied to a
// temporary file on the way.
func checkTrace(r *analyzeRun, src io.Reader, stdin bool, in *inputs) error {
	if stdin {
		tmp, err := os.CreateTemp("", "leadport-analyze-*.jsonl")
		if err != nil {
			return fmt.Errorf("a copy of standard input: %w", err)
		}
		in.temp = append(in.temp, tmp.Name())
		r.path = tmp.Name()
		defer tmp.Close()
		bw := bufio.NewWriterSize(tmp, 64<<10)
		if err := readTrace(r, io.TeeReader(src, bw)); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("a copy of standard input: %w", err)
		}
		return tmp.Close()
	}
	return readTrace(r, src)
}

func readTrace(r *analyzeRun, src io.Reader) error {
	tr := replay.NewTraceReader(src)
	for {
		if _, err := tr.Next(); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
	}
	r.calls, r.lines = tr.Calls(), tr.Lines()
	return nil
}

// eachCall replays the runs in turn and hands over their calls, one at
// a time, as soon as each is final: a trace of many agent-days has
// millions, which are never all held. After it, each run has its line
// reports.
func eachCall(runs []*analyzeRun, pol policy.Policy, fn func(*analyzeRun, *replay.CallReport) error) error {
	for _, r := range runs {
		each := func(c *replay.CallReport) error { return fn(r, c) }
		if r.kind == "capture" {
			if err := r.a.EachCall(each); err != nil {
				return err
			}
			continue
		}
		f, err := os.Open(r.path)
		if err != nil {
			return err
		}
		start := time.Now()
		tr := replay.NewTraceReader(bufio.NewReaderSize(f, 64<<10))
		sum, err := replay.StreamTrace(tr.Next, r.lines, pol, replay.Options{}, each)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", r.source, err)
		}
		r.reports, r.took = sum.Reports, time.Since(start)
	}
	return nil
}

func openInput(name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err // it names the file
	}
	return f, nil
}

// The JSON document: one object with the lines and the calls of every
// input. Numbers are masked unless --unmasked.
type analyzeJSON struct {
	Lines []lineJSON `json:"lines"`
	Calls []callJSON `json:"calls"`
}

type lineJSON struct {
	Line string `json:"line"`
	// Source is the input the line was replayed from; Inferred is set
	// when a capture's lines were guessed (InferLines).
	Source       string     `json:"source"`
	Inferred     bool       `json:"inferred,omitempty"`
	Attempts     int        `json:"attempts"`
	FirstSuspect *int       `json:"first_suspect"`
	FirstBlock   *int       `json:"first_block"`
	Rules        []ruleJSON `json:"rules"`
}

type ruleJSON struct {
	Rule         string         `json:"rule"`
	Action       string         `json:"action"`
	Count        int            `json:"count"`
	FirstAttempt *int           `json:"first_attempt"`
	Evidence     map[string]any `json:"evidence,omitempty"`
}

// callJSON uses the trace file's field names where they apply, so that
// a capture's calls read like a trace.
type callJSON struct {
	Source    string   `json:"source"`
	N         int      `json:"n"`
	Start     float64  `json:"start"`
	Direction string   `json:"direction"`
	Line      string   `json:"line,omitempty"`
	Remote    string   `json:"remote"`
	From      string   `json:"from,omitempty"`
	PAI       string   `json:"pai,omitempty"`
	Diversion []string `json:"diversion,omitempty"`
	Ring      float64  `json:"ring_s"`
	Status    int      `json:"status"`
	Talk      float64  `json:"talk_s,omitempty"`
	Bye       string   `json:"bye,omitempty"`
	// Attempt is the call's number among its line's outbound attempts
	// (absent for other calls).
	Attempt int `json:"attempt,omitempty"`
	// Verdict: allowed, or blocked (then Rule and BlockStatus say by what).
	Verdict     string   `json:"verdict"`
	Rule        string   `json:"rule,omitempty"`
	BlockStatus int      `json:"block_status,omitempty"`
	Observed    []string `json:"observed,omitempty"`
	Suspect     []string `json:"suspect,omitempty"`
}

func intp(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

func lineReports(runs []*analyzeRun, mask func(string) string) []lineJSON {
	out := []lineJSON{}
	for _, r := range runs {
		inferred := r.a != nil && r.a.InferredLines
		for _, l := range r.reports {
			lj := lineJSON{Line: mask(l.Line), Source: r.source, Inferred: inferred, Attempts: l.Attempts,
				FirstSuspect: intp(l.FirstSuspect), FirstBlock: intp(l.FirstBlock), Rules: []ruleJSON{}}
			for _, rr := range l.Rules {
				lj.Rules = append(lj.Rules, ruleJSON{Rule: rr.Rule, Action: rr.Action, Count: rr.Count, FirstAttempt: intp(rr.FirstAttempt), Evidence: rr.Evidence})
			}
			out = append(out, lj)
		}
	}
	return out
}

// callRow puts a call's report in the JSON form.
func callRow(cj *callJSON, source string, cr *replay.CallReport, mask func(string) string) {
	c := cr.Call
	*cj = callJSON{Source: source, N: cr.Index + 1, Start: c.Start.Seconds(), Direction: dirName(c.Direction), Line: mask(c.Line),
		Remote: mask(c.Remote), From: mask(c.From), PAI: mask(c.PAI), Ring: c.Ring.Seconds(), Status: c.Status,
		Talk: c.Talk.Seconds(), Bye: string(c.Bye), Attempt: cr.Attempt, Verdict: "allowed", Observed: cr.Observed, Suspect: cr.Suspect}
	for _, d := range c.Diversion {
		cj.Diversion = append(cj.Diversion, mask(d))
	}
	if cr.Rule != "" {
		cj.Verdict, cj.Rule, cj.BlockStatus = "blocked", cr.Rule, cr.Status
	}
}

// writeAnalysisJSON writes the one document, each call on a line of its
// own, so that a large one can be read with grep as well as with jq. The
// calls come first, each written as soon as the replay is done with it:
// the lines' reports are known only at the end.
func writeAnalysisJSON(w *bufio.Writer, runs []*analyzeRun, pol policy.Policy, mask func(string) string) error {
	if _, err := io.WriteString(w, "{\"calls\": ["); err != nil {
		return err
	}
	sep := "\n"
	var cj callJSON
	var buf []byte
	err := eachCall(runs, pol, func(r *analyzeRun, cr *replay.CallReport) error {
		callRow(&cj, r.source, cr, mask)
		buf = appendCallJSON(append(buf[:0], sep...), &cj)
		sep = ",\n"
		_, err := w.Write(buf)
		return err
	})
	if err != nil {
		return err
	}
	lines, err := json.MarshalIndent(lineReports(runs, mask), "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "\n],\n\"lines\": %s}\n", lines)
	return err
}

// appendCallJSON appends a call as json.Marshal writes it, without its
// reflection (a third of the time of a large analysis went to it); a
// value it has no quick form for is left to encoding/json
// (TestAppendCallJSON).
func appendCallJSON(b []byte, c *callJSON) []byte {
	b = append(b, `{"source":`...)
	b = appendJSONString(b, c.Source)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, int64(c.N), 10)
	b = append(b, `,"start":`...)
	b = appendJSONFloat(b, c.Start)
	b = append(b, `,"direction":`...)
	b = appendJSONString(b, c.Direction)
	if c.Line != "" {
		b = append(b, `,"line":`...)
		b = appendJSONString(b, c.Line)
	}
	b = append(b, `,"remote":`...)
	b = appendJSONString(b, c.Remote)
	if c.From != "" {
		b = append(b, `,"from":`...)
		b = appendJSONString(b, c.From)
	}
	if c.PAI != "" {
		b = append(b, `,"pai":`...)
		b = appendJSONString(b, c.PAI)
	}
	if len(c.Diversion) > 0 {
		b = appendJSONList(append(b, `,"diversion":`...), c.Diversion)
	}
	b = append(b, `,"ring_s":`...)
	b = appendJSONFloat(b, c.Ring)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(c.Status), 10)
	if c.Talk != 0 {
		b = append(b, `,"talk_s":`...)
		b = appendJSONFloat(b, c.Talk)
	}
	if c.Bye != "" {
		b = append(b, `,"bye":`...)
		b = appendJSONString(b, c.Bye)
	}
	if c.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(c.Attempt), 10)
	}
	b = append(b, `,"verdict":`...)
	b = appendJSONString(b, c.Verdict)
	if c.Rule != "" {
		b = append(b, `,"rule":`...)
		b = appendJSONString(b, c.Rule)
	}
	if c.BlockStatus != 0 {
		b = append(b, `,"block_status":`...)
		b = strconv.AppendInt(b, int64(c.BlockStatus), 10)
	}
	if len(c.Observed) > 0 {
		b = appendJSONList(append(b, `,"observed":`...), c.Observed)
	}
	if len(c.Suspect) > 0 {
		b = appendJSONList(append(b, `,"suspect":`...), c.Suspect)
	}
	return append(b, '}')
}

// appendJSONString writes printable ASCII as it is; encoding/json
// escapes the rest (and <, >, & for HTML).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendJSONList(b []byte, l []string) []byte {
	b = append(b, '[')
	for i, s := range l {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONFloat writes seconds as encoding/json does: the shortest
// form that reads back the same, in exponent form below 1e-6 and from
// 1e21, which it leaves to encoding/json.
func appendJSONFloat(b []byte, f float64) []byte {
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) || math.IsNaN(f) {
		q, err := json.Marshal(f)
		if err != nil {
			return append(b, "null"...) // NaN and infinities: a Duration has none
		}
		return append(b, q...)
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

func dirName(d detect.Direction) string {
	if d == detect.Outbound || d == detect.Inbound {
		return d.String()
	}
	return "unknown"
}

// tableBlock is how many calls the text table aligns at once: its
// columns are set by the widest cell of each block, and a table of
// millions of calls is not held to find them.
const tableBlock = 1000

func printAnalysis(w *bufio.Writer, runs []*analyzeRun, pol policy.Policy, polName string, mask func(string) string) error {
	fmt.Fprintf(w, "policy: %s\n", polName)
	for _, r := range runs {
		name := r.kind + " " + r.source
		if len(r.files) > 1 {
			name = fmt.Sprintf("captures (%d files, one stream)", len(r.files))
		}
		fmt.Fprintf(w, "\n%s: %d call%s\n", name, r.calls, plural(r.calls))
		for i, st := range r.stats {
			fmt.Fprintf(w, "  %s (%s): %d packets, %d SIP messages", r.files[i], st.Format, st.Packets, st.Messages)
			if st.Undecoded > 0 {
				fmt.Fprintf(w, ", %d packets not IP/UDP/TCP/SCTP", st.Undecoded)
			}
			if st.Reassembled > 0 || st.FragmentsDropped > 0 {
				fmt.Fprintf(w, ", %d datagrams reassembled from fragments (%d given up)", st.Reassembled, st.FragmentsDropped)
			}
			if st.TCPResyncs > 0 {
				fmt.Fprintf(w, ", TCP: %d bytes lost in %d gaps", st.TCPBytesDropped, st.TCPResyncs)
			}
			fmt.Fprintln(w)
		}
		if r.a != nil && r.a.Skipped > 0 {
			fmt.Fprintf(w, "  %d messages not readable as SIP, left out\n", r.a.Skipped)
		}
		lines := r.lines
		if len(pol.Lines) > 0 && r.kind == "trace" {
			lines = pol.Lines
		}
		ls := make([]string, len(lines))
		for i, l := range lines {
			ls[i] = mask(l)
		}
		if len(ls) == 0 {
			ls = []string{"none (no rule that needs a line applies; pass --lines)"}
		}
		fmt.Fprintf(w, "  lines (%s): %s\n", r.linesFrom, strings.Join(ls, ", "))
	}
	fmt.Fprintln(w, "\ncalls")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tstart\tdir\tline\tremote\tring\tstatus\ttalk\tbye\tattempt\tverdict")
	var c callJSON
	rows := 0
	err := eachCall(runs, pol, func(r *analyzeRun, cr *replay.CallReport) error {
		callRow(&c, r.source, cr, mask)
		verdict := c.Verdict
		if c.Rule != "" {
			verdict = fmt.Sprintf("blocked %d %s", c.BlockStatus, c.Rule)
		}
		for _, r := range c.Suspect {
			verdict += "; suspect " + r
		}
		for _, r := range c.Observed {
			verdict += "; observed " + r
		}
		att := ""
		if c.Attempt > 0 {
			att = strconv.Itoa(c.Attempt)
		}
		status := ""
		if c.Status > 0 {
			status = strconv.Itoa(c.Status)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.N, strconv.FormatFloat(c.Start, 'f', 1, 64)+"s", c.Direction[:min(3, len(c.Direction))], dash(c.Line), c.Remote,
			secs(c.Ring), dash(status), secs(c.Talk), dash(c.Bye), dash(att), verdict)
		if rows++; rows%tableBlock == 0 {
			return tw.Flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nlines")
	for _, l := range lineReports(runs, mask) {
		fmt.Fprintf(w, "  %s (%s): %d outbound attempt%s, first suspect %s, first block %s\n", l.Line, l.Source, l.Attempts, plural(l.Attempts), nth(l.FirstSuspect), nth(l.FirstBlock))
		for _, r := range l.Rules {
			fmt.Fprintf(w, "    %s %s x%d, first at attempt %s: %s\n", r.Rule, r.Action, r.Count, nth(r.FirstAttempt), figures(r.Evidence))
		}
	}
	fmt.Fprintln(w)
	for _, r := range runs {
		name := r.kind + " " + r.source
		if len(r.files) > 1 {
			name = "captures"
		}
		fmt.Fprintf(w, "%s replayed in %s\n", name, r.took.Round(time.Millisecond))
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func secs(s float64) string {
	if s == 0 {
		return "-"
	}
	return strconv.FormatFloat(s, 'f', 1, 64) + "s"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nth(p *int) string {
	if p == nil {
		return "none"
	}
	return "#" + strconv.Itoa(*p)
}

// figures prints a violation's evidence as key=value, keys sorted.
func figures(ev map[string]any) string {
	if len(ev) == 0 {
		return "(no figures)"
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(ev)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", k, ev[k])
	}
	return b.String()
}

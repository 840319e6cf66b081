package replay

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect"
)

func TestTracefileRead(t *testing.T) {
	good := `{"start": 0, "direction": "outbound", "line": "+15551230001", "remote": "+13125550101", "ring_s": 12.5, "status": 200, "talk_s": 3.25, "bye": "callee"}
{"start": 30, "direction": "outbound", "line": "+15551230001", "remote": "*72+13125550102", "ring_s": 20, "status": 487}

{"start": 5, "direction": "inbound", "line": "+15551230002", "remote": "+13125550103", "ring_s": 4, "status": 486, "diversion": ["+15551230001"], "from": "+13125550103", "pai": "+13125550104"}
`
	tr, err := ReadTraceFile(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []Call{
		{Start: 0, Direction: detect.Outbound, Line: "+15551230001", Remote: "+13125550101", Ring: 12500 * time.Millisecond, Status: 200, Talk: 3250 * time.Millisecond, Bye: ByeCallee},
		{Start: 5 * time.Second, Direction: detect.Inbound, Line: "+15551230002", Remote: "+13125550103", Ring: 4 * time.Second, Status: 486,
			Diversion: []string{"+15551230001"}, From: "+13125550103", PAI: "+13125550104"},
		{Start: 30 * time.Second, Direction: detect.Outbound, Line: "+15551230001", Remote: "*72+13125550102", Ring: 20 * time.Second, Status: 487},
	}
	if !reflect.DeepEqual(tr.Calls, want) {
		t.Errorf("calls:\n got %+v\nwant %+v", tr.Calls, want)
	}
	if !reflect.DeepEqual(tr.Lines, []string{"+15551230001", "+15551230002"}) {
		t.Errorf("lines %v, want the two lines in order of appearance", tr.Lines)
	}
}

func TestTracefileErrors(t *testing.T) {
	const ok = `{"start": 0, "direction": "outbound", "line": "+15551230001", "remote": "+13125550101", "ring_s": 1, "status": 486}`
	cases := []struct {
		name, line, want string
	}{
		{"unknown field", `{"start": 0, "direction": "outbound", "line": "+15551230001", "remote": "+13125550101", "ring_s": 1, "status": 486, "ring": 3}`, `unknown field "ring"`},
		{"missing fields", `{"start": 0, "direction": "outbound", "line": "+15551230001"}`, "missing [remote ring_s status]"},
		{"bad direction", strings.Replace(ok, `"outbound"`, `"sideways"`, 1), "neither outbound nor inbound"},
		{"line not e164", strings.Replace(ok, `"+15551230001"`, `"5551230001"`, 1), "not an E.164 number"},
		{"start as a string", strings.Replace(ok, `"start": 0`, `"start": "0s"`, 1), "cannot unmarshal string"},
		{"negative ring", strings.Replace(ok, `"ring_s": 1`, `"ring_s": -1`, 1), "ring_s -1 is not between"},
		{"provisional status", strings.Replace(ok, `486`, `180`, 1), "not a final SIP status"},
		{"answered without talk", strings.Replace(ok, `486`, `200`, 1), "missing talk_s"},
		{"answered without bye", strings.Replace(ok, `"status": 486`, `"status": 200, "talk_s": 4`, 1), "missing bye"},
		{"bye on a busy call", strings.Replace(ok, `"status": 486`, `"status": 486, "bye": "caller"`, 1), "only answered calls end with a BYE"},
		{"bye neither party", strings.Replace(ok, `"status": 486`, `"status": 200, "talk_s": 4, "bye": "both"`, 1), "neither caller nor callee"},
		{"two objects", ok + ok, "more than one JSON value"},
		{"not json", "start=0", "invalid character"},
		{"unknown field named like a number", strings.Replace(ok, `"status": 486`, `"status": 486, "+13125550199": 1`, 1), `unknown field "+1312***0199"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The bad line is the third: the error must say so.
			_, err := ReadTraceFile(strings.NewReader(ok + "\n\n" + c.line + "\n" + ok + "\n"))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrTraceFile) || !strings.Contains(err.Error(), "line 3:") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q: want ErrTraceFile naming line 3 and %q", err, c.want)
			}
		})
	}
}

// TestTracefileRoundTrip writes model traces as trace files and reads
// them back: what the form carries survives.
func TestTracefileRoundTrip(t *testing.T) {
	for mi, m := range Models() {
		if m.Class != Human && m.Class != Machine {
			continue
		}
		tr := m.Generate(rand.New(rand.NewPCG(1, uint64(mi))), "+15551230001")
		var buf bytes.Buffer
		if err := WriteTraceFile(&buf, &tr); err != nil {
			t.Fatal(err)
		}
		back, err := ReadTraceFile(&buf)
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		if len(back.Calls) != len(tr.Calls) || len(tr.Calls) == 0 {
			t.Fatalf("%s: %d calls back of %d", m.Name, len(back.Calls), len(tr.Calls))
		}
		for i := range tr.Calls {
			a, b := tr.Calls[i], back.Calls[i]
			if a.Bye == "" && a.Status < 300 {
				a.Bye = ByeCaller
			}
			if a.Status >= 300 {
				a.Talk, a.Bye = 0, "" // the form carries them for answered calls only
			}
			a.Early, a.EarlyDiversion, a.HistoryInfo, a.RPID, a.Source, a.ReferAfter = 0, false, nil, "", "", 0
			if d := a.Start - b.Start; d > time.Microsecond || d < -time.Microsecond {
				t.Fatalf("%s call %d: start %s back as %s", m.Name, i, a.Start, b.Start)
			}
			a.Start, a.Ring, a.Talk = b.Start, round(a.Ring, b.Ring), round(a.Talk, b.Talk)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%s call %d:\n wrote %+v\n read  %+v", m.Name, i, a, b)
			}
		}
	}
}

// round takes b for a when they differ by float rounding only.
func round(a, b time.Duration) time.Duration {
	if d := a - b; d <= time.Microsecond && d >= -time.Microsecond {
		return b
	}
	return a
}

// FuzzTraceFile: any input is read or refused with ErrTraceFile, never a
// panic; what is read writes back and reads again the same.
func FuzzTraceFile(f *testing.F) {
	for _, s := range []string{
		`{"start": 0, "direction": "outbound", "line": "+15551230001", "remote": "+13125550101", "ring_s": 12.5, "status": 200, "talk_s": 3, "bye": "caller"}`,
		`{"start": 1e3, "direction": "inbound", "line": "+15551230001", "remote": "anonymous", "ring_s": 0, "status": 302, "diversion": ["+1555"], "from": "x", "pai": "y"}`,
		`{"start": 0, "direction": "outbound", "line": "+15551230001", "remote": "+1`,
		`{"start": 0, "direction": "outbound", "line": "+15551230001", "remote": "+13125550101", "ring_s": 1, "status": 486, "extra": 1}`,
		"\n\n{}\n",
		`{"start": NaN}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := ReadTraceFile(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrTraceFile) {
				t.Fatalf("error %v is not ErrTraceFile", err)
			}
			return
		}
		var buf bytes.Buffer
		if err := WriteTraceFile(&buf, tr); err != nil {
			t.Fatal(err)
		}
		back, err := ReadTraceFile(&buf)
		if err != nil {
			t.Fatalf("a trace read back fails: %v\n%s", err, buf.String())
		}
		if len(back.Calls) != len(tr.Calls) {
			t.Fatalf("%d calls back of %d", len(back.Calls), len(tr.Calls))
		}
	})
}

// TestTraceReaderOrder: a file out of order within ReorderWindow comes
// back as ReadTraceFile sorts it (by start, stably); a call further back
// than that is an ErrTraceOrder naming its line and the latest above it.
func TestTraceReaderOrder(t *testing.T) {
	at := func(start string, remote int) string {
		return `{"start": ` + start + `, "direction": "outbound", "line": "+15551230001", "remote": "+1312555` + strconv.Itoa(1000+remote) + `", "ring_s": 1, "status": 486}` + "\n"
	}
	in := at("0", 1) + at("7200", 2) + at("60", 3) + at("7200", 4) + "\n" + at("3600", 5) + at("20000", 6) + at("7300", 7)
	want, err := ReadTraceFile(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, NewTraceReader(strings.NewReader(in)))
	if !reflect.DeepEqual(got, want.Calls) {
		t.Errorf("calls:\n got %+v\nwant %+v", got, want.Calls)
	}
	_, err = readAllErr(NewTraceReader(strings.NewReader(in + at("40000", 8) + at("7400", 9))))
	if !errors.Is(err, ErrTraceOrder) || !errors.Is(err, ErrTraceFile) ||
		!strings.Contains(err.Error(), "line 10 starts at 7400s, more than 4h0m0s before a call above it (line 9, at 40000s)") {
		t.Errorf("error %v: want ErrTraceOrder naming line 10 and line 9", err)
	}
}

func readAll(t *testing.T, r *TraceReader) []Call {
	t.Helper()
	calls, err := readAllErr(r)
	if err != nil {
		t.Fatal(err)
	}
	return calls
}

func readAllErr(r *TraceReader) ([]Call, error) {
	var calls []Call
	for {
		c, err := r.Next()
		if err == io.EOF {
			return calls, nil
		}
		if err != nil {
			return calls, err
		}
		calls = append(calls, c)
	}
}

// TestTraceLineScan: the fast path takes the usual lines and gives what
// encoding/json gives; the unusual ones it leaves to encoding/json.
func TestTraceLineScan(t *testing.T) {
	for _, c := range []struct {
		line string
		fast bool
	}{
		{`{"start": 0, "direction": "outbound", "line": "+15551230001", "remote": "+13125550101", "ring_s": 12.5, "status": 200, "talk_s": 3.25, "bye": "callee"}`, true},
		{`{"start":1e3,"direction":"inbound","line":"+15551230001","remote":"x","ring_s":0,"status":302,"diversion":["+1555","+1556"],"from":"f","pai":"p"}`, true},
		{` { "diversion" : [ ] , "start" : -0.5E-2 } `, true},
		{`{}`, true},
		{`{"Start": 0}`, false},                      // encoding/json matches keys without regard to case
		{`{"start": 0, "start": 1}`, false},          // the last wins
		{`{"remote": "\u002b1312"}`, false},          // escapes
		{`{"remote": "é"}`, false},                   // not ASCII
		{`{"status": 200.0}`, false},                 // not an int
		{`{"start": 01}`, false},                     // not JSON
		{`{"start": 1e999}`, false},                  // out of range
		{`{"from": null}`, false},                    // null
		{`{"direction": "Outbound"}`, false},         // encoding/json's error
		{`{"start": 0}}`, false},                     // what follows
		{`{"start": 0, "diversion": ["a",]}`, false}, // not JSON
	} {
		var fast, slow traceFields
		var p traceParser
		ok := fast.scan([]byte(c.line), &p)
		if ok != c.fast {
			t.Errorf("%s: fast path %v, want %v", c.line, ok, c.fast)
		}
		if ok {
			if err := slow.decode([]byte(c.line)); err != nil {
				t.Errorf("%s: fast path takes it, encoding/json says %v", c.line, err)
			} else if !reflect.DeepEqual(fast, slow) {
				t.Errorf("%s:\n fast %+v\n json %+v", c.line, fast, slow)
			}
		}
	}
}

// FuzzTraceLineScan: whatever line the fast path takes, encoding/json
// takes too, with the same fields.
func FuzzTraceLineScan(f *testing.F) {
	for _, s := range []string{
		`{"start": 0, "direction": "outbound", "line": "+15551230001", "remote": "+13125550101", "ring_s": 12.5, "status": 200, "talk_s": 3.25, "bye": "callee"}`,
		`{"start":1e3,"direction":"inbound","line":"+15551230001","remote":"x","ring_s":0,"status":302,"diversion":["+1555","+1556"],"from":"f","pai":"p"}`,
		` { "diversion" : [ ] , "start" : -0.5E-2 } `,
		`{"status": -12, "talk_s": 1E+2}`,
		`{"start": 0}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow traceFields
		var p traceParser
		if !fast.scan(b, &p) {
			return
		}
		if err := slow.decode(b); err != nil {
			t.Fatalf("fast path takes %q, encoding/json says %v", b, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q:\n fast %+v\n json %+v", b, fast, slow)
		}
	})
}

// FuzzTraceReader: a TraceReader reads what ReadTraceFile reads, in the
// same order, or stops with ErrTraceFile; never a panic.
func FuzzTraceReader(f *testing.F) {
	line := func(start string) string {
		return `{"start": ` + start + `, "direction": "outbound", "line": "+15551230001", "remote": "+13125550101", "ring_s": 1, "status": 486}` + "\n"
	}
	f.Add([]byte(line("0") + line("20000") + line("5")))
	f.Add([]byte(line("0") + line("20000") + line("40000") + line("5")))
	f.Add([]byte(line("1") + "\n" + line("1e3") + line("0.5")))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := readAllErr(NewTraceReader(bytes.NewReader(data)))
		want, werr := ReadTraceFile(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrTraceFile) {
				t.Fatalf("error %v is not ErrTraceFile", err)
			}
			if werr == nil && !errors.Is(err, ErrTraceOrder) {
				t.Fatalf("TraceReader: %v; ReadTraceFile reads it", err)
			}
			return
		}
		if werr != nil {
			t.Fatalf("TraceReader reads it; ReadTraceFile: %v", werr)
		}
		if len(got) != len(want.Calls) || len(got) > 0 && !reflect.DeepEqual(got, want.Calls) {
			t.Fatalf("calls:\n reader %+v\n   file %+v", got, want.Calls)
		}
	})
}

package replay

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
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

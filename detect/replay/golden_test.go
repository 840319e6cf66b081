package replay

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/detect/policy"
)

var update = flag.Bool("update", false, "rewrite the golden cases' files from goldenCases and the current rules")

// golden is what a case's expected.json holds: every block and every
// violation, in order.
type golden struct {
	Blocks     []goldenBlock     `json:"blocks"`
	Violations []goldenViolation `json:"violations"`
}

type goldenBlock struct {
	At      string `json:"at"`
	Kind    string `json:"kind"`
	Index   int    `json:"index"`
	Attempt int    `json:"attempt,omitempty"`
	Rule    string `json:"rule"`
	Status  int    `json:"status"`
}

type goldenViolation struct {
	At         string         `json:"at"`
	Rule       string         `json:"rule"`
	Line       string         `json:"line"`
	Action     string         `json:"action"`
	Confidence string         `json:"confidence"`
	Score      float64        `json:"score,omitempty"`
	CallID     string         `json:"call_id"`
	Evidence   map[string]any `json:"evidence,omitempty"`
	Numbers    []string       `json:"numbers,omitempty"`
}

func goldenOf(res *Result) golden {
	g := golden{Blocks: []goldenBlock{}, Violations: []goldenViolation{}}
	for _, b := range res.Blocks {
		g.Blocks = append(g.Blocks, goldenBlock{At: b.At.String(), Kind: b.Kind, Index: b.Index, Attempt: b.Attempt, Rule: b.Rule, Status: b.Status})
	}
	for _, v := range res.Violations {
		g.Violations = append(g.Violations, goldenViolation{At: v.At.Sub(Epoch).String(), Rule: v.Rule, Line: v.Line,
			Action: string(v.Action), Confidence: string(v.Confidence), Score: v.Score, CallID: v.CallID, Evidence: v.Evidence, Numbers: v.Numbers})
	}
	return g
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// TestGolden replays each case folder's trace under its policy and
// compares every block and violation with expected.json. The folders are
// written by `go test ./detect/replay -run TestGolden -update` from
// goldenCases, never by hand; review the diff like code.
func TestGolden(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		for _, c := range goldenCases() {
			d := filepath.Join(dir, c.name)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			res, err := Run(&c.trace, c.policy, Options{})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			for name, v := range map[string]any{"trace.json": c.trace, "policy.json": c.policy, "expected.json": goldenOf(res)} {
				if err := os.WriteFile(filepath.Join(d, name), marshal(t, v), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	cases := goldenCases()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(cases) {
		t.Errorf("%d case folders, %d cases in goldenCases: run with -update", len(entries), len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(dir, c.name)
			var tr Trace
			readJSON(t, filepath.Join(d, "trace.json"), &tr)
			if !bytes.Equal(marshal(t, tr), marshal(t, c.trace)) {
				t.Fatalf("trace.json differs from goldenCases: run with -update")
			}
			pb, err := os.ReadFile(filepath.Join(d, "policy.json"))
			if err != nil {
				t.Fatal(err)
			}
			pol, err := policy.Parse(pb)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Run(&tr, pol, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := marshal(t, goldenOf(res))
			want, err := os.ReadFile(filepath.Join(d, "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("verdicts differ from expected.json (run with -update and review the diff):\n%s", got)
			}
			c.check(t, res)
		})
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// sec is a shorthand for durations in the cases.
func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

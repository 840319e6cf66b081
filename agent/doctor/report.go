package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Report is what the doctor found: `leadport-agent doctor --json` prints it
// as it is.
type Report struct {
	Version string         `json:"version"`
	OS      string         `json:"os"`
	Arch    string         `json:"arch"`
	Host    string         `json:"host,omitempty"`
	User    string         `json:"user,omitempty"`
	Config  string         `json:"config"`
	OK      bool           `json:"ok"`
	Counts  map[Status]int `json:"counts"`
	Checks  []Result       `json:"checks"`
}

// Failed is the error of a report with failed checks: how many.
type Failed int

func (e Failed) Error() string {
	if e == 1 {
		return "1 check failed"
	}
	return fmt.Sprintf("%d checks failed", int(e))
}

// Err is Failed when any check failed, else nil.
func (r *Report) Err() error {
	if n := r.Counts[Fail]; n > 0 {
		return Failed(n)
	}
	return nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteHeader writes the text report's first line: version, platform, host
// and who runs the doctor.
func (r *Report) WriteHeader(w io.Writer) {
	who := ""
	if r.User != "" {
		who = ", as " + r.User
	}
	fmt.Fprintf(w, "leadport-agent doctor (%s, %s/%s, host %s%s)\n", r.Version, r.OS, r.Arch, r.Host, who)
}

// Columns of the text report: status, name, then what was found; details
// and the fix line start under what was found.
const (
	nameWidth = 12
	indent    = 4 + 2 + nameWidth + 2
)

// WriteChecks writes the text report after its header: a line per result,
// its details and, for WARN and FAIL, its fix under it, then the counts.
func (r *Report) WriteChecks(w io.Writer) {
	pad := strings.Repeat(" ", indent)
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%-4s  %-*s  %s\n", c.Status, nameWidth, c.Name, c.Found)
		for _, l := range c.Details {
			fmt.Fprintf(w, "%s%s\n", pad, l)
		}
		if c.Fix != "" && (c.Status == Warn || c.Status == Fail) {
			fmt.Fprintf(w, "%sfix: %s\n", pad, c.Fix)
		}
	}
	var parts []string
	for _, s := range []Status{Fail, Warn, OK, Skip} {
		if n := r.Counts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	fmt.Fprintf(w, "\n%s\n", strings.Join(parts, ", "))
}

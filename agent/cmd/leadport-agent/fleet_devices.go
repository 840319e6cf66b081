package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store"
	lpsync "github.com/leadport/leadport-agent/sync"
)

// device is one line of the roster: what a device's retained status and
// identity documents say about it (docs/protocol.md, "Status", "Identity").
type device struct {
	Device  string `json:"device"`
	Version string `json:"version,omitempty"`
	// State is online or offline (the last will, or a clean shutdown),
	// unknown when only an identity document is retained.
	State string `json:"state"`
	// LastSeen is the time of the last status the device published; the
	// last will carries none, so a device that dropped off has none.
	LastSeen      time.Time      `json:"last_seen,omitzero"`
	PolicyVersion int64          `json:"policy_version"`
	Backlog       map[string]int `json:"backlog,omitempty"` // records pending, by type
	KeyID         string         `json:"kid,omitempty"`     // the call-signing key's id
}

// fleetDevices prints the roster of the devices whose status or identity
// the broker retains.
func fleetDevices(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet devices", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b brokerFlags
	b.add(fs)
	asJSON := fs.Bool("json", false, "one JSON array instead of a table")
	settle := fs.Duration("settle", time.Second, "the roster is complete once no retained document came for this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return errUsage
	}
	c, err := b.connect()
	if err != nil {
		return err
	}
	defer c.Disconnect(250)
	roster, err := readRoster(c, b.prefix, *settle, 5*time.Minute)
	if err != nil {
		return err
	}
	if *asJSON {
		if roster == nil {
			roster = []device{}
		}
		return json.NewEncoder(stdout).Encode(roster)
	}
	return printRoster(stdout, roster)
}

// readRoster collects the retained status and identity documents. MQTT
// does not say when the retained messages of a subscription are all
// delivered, so the roster is taken as complete once none came for settle
// (at most max after subscribing).
func readRoster(c mqtt.Client, prefix string, settle, max time.Duration) ([]device, error) {
	type doc struct {
		topic   string
		payload []byte
	}
	docs := make(chan doc, 4096)
	done := make(chan struct{})
	defer close(done)
	handler := func(_ mqtt.Client, m mqtt.Message) {
		select {
		case docs <- doc{m.Topic(), m.Payload()}:
		case <-done: // read: the rest goes unread
		}
	}
	filters := map[string]byte{prefix + "/dev/+/status": 1, prefix + "/dev/+/identity": 1}
	t := c.SubscribeMultiple(filters, handler)
	if !t.WaitTimeout(20*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("subscribe to the status and identity topics: %v", t.Error())
	}
	defer c.Unsubscribe(prefix+"/dev/+/status", prefix+"/dev/+/identity")
	byID := map[string]*device{}
	get := func(id string) *device {
		d := byID[id]
		if d == nil {
			d = &device{Device: id, State: "unknown"}
			byID[id] = d
		}
		return d
	}
	ctx, cancel := context.WithTimeout(context.Background(), max)
	defer cancel()
	quiet := time.NewTimer(settle)
	defer quiet.Stop()
	for {
		select {
		case d := <-docs:
			quiet.Reset(settle)
			rest, ok := strings.CutPrefix(d.topic, prefix+"/dev/")
			if !ok {
				continue
			}
			id, leaf, ok := strings.Cut(rest, "/")
			if !ok || len(d.payload) == 0 { // a retained document cleared
				continue
			}
			switch leaf {
			case "status":
				var st lpsync.Status
				if err := json.Unmarshal(d.payload, &st); err != nil {
					continue
				}
				dev := get(id)
				dev.State, dev.LastSeen = st.State, st.At
				if st.Version != "" {
					dev.Version = st.Version
				}
				dev.PolicyVersion = st.PolicyVersion
				if len(st.Outbox) > 0 {
					dev.Backlog = map[string]int{}
					for typ, ob := range st.Outbox {
						dev.Backlog[typ] = ob.Pending
					}
				}
				if st.Identity != nil && dev.KeyID == "" {
					dev.KeyID = st.Identity.KeyID
				}
			case "identity":
				var idn lpsync.Identity
				if err := json.Unmarshal(d.payload, &idn); err == nil && idn.KeyID != "" {
					get(id).KeyID = idn.KeyID
				}
			}
		case <-quiet.C:
			return sortedRoster(byID), nil
		case <-ctx.Done():
			return sortedRoster(byID), nil
		}
	}
}

func sortedRoster(byID map[string]*device) []device {
	out := make([]device, 0, len(byID))
	for _, d := range byID {
		out = append(out, *d)
	}
	slices.SortFunc(out, func(a, b device) int { return strings.Compare(a.Device, b.Device) })
	return out
}

func printRoster(w io.Writer, roster []device) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tVERSION\tSTATE\tLAST SEEN\tPOLICY\tBACKLOG\tKEY ID")
	for _, d := range roster {
		seen := "-"
		if !d.LastSeen.IsZero() {
			seen = d.LastSeen.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Device, orDash(d.Version), d.State, seen, d.PolicyVersion, backlog(d.Backlog), orDash(d.KeyID))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d devices\n", len(roster))
	return err
}

// backlog reads "usage=12 consent=0 violation=1 receipt=0", types in the
// store's order.
func backlog(b map[string]int) string {
	if b == nil {
		return "-"
	}
	var parts []string
	for _, t := range store.Types {
		parts = append(parts, fmt.Sprintf("%s=%d", t, b[t.String()]))
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

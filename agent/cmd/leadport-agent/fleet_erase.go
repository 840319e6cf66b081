package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/leadport/leadport-agent/store/phone"
	lpsync "github.com/leadport/leadport-agent/sync"
	lpcommand "github.com/leadport/leadport-agent/sync/command"
)

// fleet erase: one signed erase per device, and a ledger of where it is
// done.
//
// The ledger (JSON, written atomically, mode 0600: it holds the signed
// commands, and so the subject) records for each device the command sent
// (id, token, expiry), whether the broker took it (PUBACK), and the receipt
// once it came: done with its counts, rejected with the reason, failed.
// The tool subscribes to the devices' receipt topics in a session the
// broker keeps (clean session false, a client id named in the ledger)
// before it sends anything, so receipts published while the tool is not
// running wait at the broker for the next run, as the commands wait for
// devices that are offline.
//
// A rerun reads the ledger and sends:
//   - nothing to a device whose receipt came (done, or rejected for a
//     reason a new command would not change);
//   - the same command (same id: a device that has it answers "replayed",
//     and never runs it twice) only to a device whose command the broker
//     never acknowledged, or to every pending device with --resend (for a
//     broker that lost its sessions: one restarted without persistence);
//     a command the broker acknowledged waits in the device's session, so
//     sending it again by default would only earn "replayed" rejections;
//   - a fresh command (new id) to a device whose command expired unanswered
//     or was refused as expired, or failed: the old one can no longer run.
//
// The tool ends when every device answered or --wait passed, prints
// device -> done / rejected / failed / pending, and exits 0 only when every
// device is done. With every device done it ends its session at the
// broker.

// ledgerVersion is the ledger file's format.
const ledgerVersion = 1

type eraseLedger struct {
	Version int    `json:"version"`
	ID      string `json:"id"` // command ids and the receipt session derive from it
	Kind    string `json:"kind"`
	// Subject is masked; SubjectDigest (SHA-256 of the normalised
	// number) tells a rerun for another subject from this one.
	Subject       string                  `json:"subject,omitempty"`
	SubjectDigest string                  `json:"subject_sha256,omitempty"`
	KeyID         string                  `json:"kid"`
	ClientID      string                  `json:"client_id"`
	CreatedAt     time.Time               `json:"created_at"`
	UpdatedAt     time.Time               `json:"updated_at"`
	Devices       map[string]*eraseDevice `json:"devices"`
}

// The states of a device in the ledger.
const (
	erasePending  = "pending"
	eraseDone     = "done"
	eraseRejected = "rejected"
	eraseFailed   = "failed"
)

type eraseDevice struct {
	State     string    `json:"state"`
	CommandID string    `json:"command_id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// Earlier are commands this device was sent before the current one
	// (expired or failed); a late receipt of one still counts.
	Earlier   []string        `json:"earlier_commands,omitempty"`
	SentAt    time.Time       `json:"sent_at,omitzero"` // the broker acknowledged it (PUBACK)
	Sends     int             `json:"sends"`
	Reason    string          `json:"reason,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	ReceiptAt time.Time       `json:"receipt_at,omitzero"`
	Note      string          `json:"note,omitempty"`
}

// stringsFlag is a flag that may be given more than once.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

func fleetErase(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet erase", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b brokerFlags
	b.add(fs)
	keyFile := fs.String("key", "", "private key file from fleet keygen; required")
	kid := fs.String("kid", "", "key id the devices trust; required")
	subject := fs.String("subject", "", "the data subject to erase (a phone number)")
	allData := fs.Bool("all-data", false, "erase every record and key (decommissioning)")
	var devices stringsFlag
	fs.Var(&devices, "device", "a device id; repeat for more")
	all := fs.Bool("all", false, "every device whose status or identity the broker retains")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for receipts")
	ledgerPath := fs.String("ledger", "leadport-erase.json", "the ledger file: read if it exists, written as the erase goes")
	ttl := fs.Duration("ttl", 30*24*time.Hour, "how long a command stays valid (a device offline longer refuses it as expired; a rerun then signs a new one)")
	resend := fs.Bool("resend", false, "send pending commands the broker already took again (same id), for a broker that lost its sessions")
	asJSON := fs.Bool("json", false, "print the ledger's state as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *keyFile == "" || *kid == "" {
		return errUsage
	}
	if (*subject == "") == !*allData {
		return errors.New("give --subject NUMBER or --all-data")
	}
	if (len(devices) == 0) == !*all {
		return errors.New("give --device ID (repeatable) or --all")
	}
	key, err := readPrivateKey(*keyFile)
	if err != nil {
		return err
	}
	for _, d := range devices {
		if !validDeviceID(d) {
			return fmt.Errorf("device id %q: want 1-64 of [A-Za-z0-9._-]", d)
		}
	}
	led, err := openLedger(*ledgerPath, *subject, *allData, *kid)
	if err != nil {
		return err
	}

	if *all {
		// On a connection of its own: the receipts session below holds
		// its messages unacknowledged until the ledger is written, and a
		// broker stops sending to a client with its in-flight window
		// full (mosquitto: 20), which would cut the roster short.
		rc, err := b.connect()
		if err != nil {
			return err
		}
		roster, err := readRoster(rc, b.prefix, time.Second, 5*time.Minute)
		rc.Disconnect(250)
		if err != nil {
			return err
		}
		for _, d := range roster {
			devices = append(devices, d.Device)
		}
	}

	// Receipts come through the default handler: those the broker kept
	// for this session arrive right after CONNACK, before any
	// subscription's handler is in place. They are acknowledged only once
	// the ledger holding them is on disk.
	receipts := make(chan mqtt.Message, 1024)
	c, err := b.connectWith(func(o *mqtt.ClientOptions) {
		o.SetClientID(led.ClientID).SetCleanSession(false).SetAutoAckDisabled(true).
			SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { receipts <- m })
	})
	if err != nil {
		return err
	}
	defer func() { c.Disconnect(250) }()

	for id := range led.Devices {
		devices = append(devices, id)
	}
	slices.Sort(devices)
	devices = slices.Compact(devices)
	if len(devices) == 0 {
		return errors.New("no device: the broker retains no status or identity document")
	}

	// Subscribed before anything is sent, so no receipt can slip by; in
	// SUBSCRIBEs of at most 1,000 topics, which any broker takes.
	for chunk := range slices.Chunk(devices, 1000) {
		filters := map[string]byte{}
		for _, d := range chunk {
			filters[b.prefix+"/dev/"+d+"/receipt"] = 1
		}
		if t := c.SubscribeMultiple(filters, func(_ mqtt.Client, m mqtt.Message) { receipts <- m }); !t.WaitTimeout(20*time.Second) || t.Error() != nil {
			return fmt.Errorf("subscribe to the receipt topics: %v", t.Error())
		}
	}

	// What to send, decided and written down before anything is sent: a
	// crash after a send leaves the command id in the ledger.
	now := time.Now().UTC()
	var send []string
	for _, d := range devices {
		e := led.Devices[d]
		renew := e == nil || e.State == eraseFailed ||
			(e.State == eraseRejected && (e.Reason == string(lpcommand.Expired) || e.Reason == string(lpcommand.NotYetValid))) ||
			(e.State == erasePending && now.After(e.ExpiresAt))
		switch {
		case renew:
			ne, err := led.newCommand(d, key, *kid, *subject, *allData, *ttl, e)
			if err != nil {
				return err
			}
			led.Devices[d] = ne
			send = append(send, d)
		case e.State == erasePending && (e.SentAt.IsZero() || *resend):
			send = append(send, d)
		}
	}
	if err := led.save(*ledgerPath); err != nil {
		return err
	}
	for _, d := range send {
		e := led.Devices[d]
		t := c.Publish(b.prefix+"/dev/"+d+"/cmd", 1, false, []byte(e.Token))
		if !t.WaitTimeout(20*time.Second) || t.Error() != nil {
			// Left unsent in the ledger: the next run sends it.
			fmt.Fprintf(stderr, "fleet erase: %s: the broker did not take the command: %v\n", d, t.Error())
			continue
		}
		e.SentAt, e.Sends = time.Now().UTC(), e.Sends+1
	}
	if err := led.save(*ledgerPath); err != nil {
		return err
	}

	deadline := time.NewTimer(*wait)
	defer deadline.Stop()
	for !led.allAnswered() {
		var batch []mqtt.Message
		select {
		case m := <-receipts:
			batch = append(batch, m)
		case <-deadline.C:
		}
		if len(batch) == 0 {
			break
		}
		for more := true; more; {
			select {
			case m := <-receipts:
				batch = append(batch, m)
			default:
				more = false
			}
		}
		for _, m := range batch {
			led.take(m.Topic(), m.Payload(), b.prefix)
		}
		if err := led.save(*ledgerPath); err != nil {
			return err
		}
		for _, m := range batch {
			m.Ack()
		}
	}
	if err := led.print(stdout, *asJSON, *ledgerPath); err != nil {
		return err
	}
	done := 0
	for _, e := range led.Devices {
		if e.State == eraseDone {
			done++
		}
	}
	if done < len(led.Devices) {
		return fmt.Errorf("%d of %d devices done; run it again later with the same --ledger to see the rest", done, len(led.Devices))
	}
	// Every device answered done: the receipt session is of no more use.
	c.Disconnect(250)
	if end, err := b.connectWith(func(o *mqtt.ClientOptions) { o.SetClientID(led.ClientID).SetCleanSession(true) }); err == nil {
		end.Disconnect(250)
	}
	return nil
}

func validDeviceID(d string) bool {
	if len(d) == 0 || len(d) > 64 {
		return false
	}
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// openLedger reads the ledger at path, or starts one; a ledger of another
// erase is refused rather than mixed with this one.
func openLedger(path, subject string, allData bool, kid string) (*eraseLedger, error) {
	kind, digest, masked := "subject", "", ""
	if allData {
		kind = "all"
	} else {
		norm := subject
		if n, err := phone.Normalize(subject, ""); err == nil {
			norm = n
		}
		sum := sha256.Sum256([]byte(norm))
		digest, masked = hex.EncodeToString(sum[:]), phone.Mask(norm)
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r := make([]byte, 6)
		if _, err := rand.Read(r); err != nil {
			return nil, err
		}
		id := hex.EncodeToString(r)
		now := time.Now().UTC()
		return &eraseLedger{Version: ledgerVersion, ID: id, Kind: kind, Subject: masked, SubjectDigest: digest, KeyID: kid,
			ClientID: "leadport-erase-" + id, CreatedAt: now, Devices: map[string]*eraseDevice{}}, nil
	case err != nil:
		return nil, err
	}
	var led eraseLedger
	if err := json.Unmarshal(b, &led); err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	if led.Version != ledgerVersion {
		return nil, fmt.Errorf("ledger %s: version %d, this tool writes %d", path, led.Version, ledgerVersion)
	}
	if led.Kind != kind || led.SubjectDigest != digest {
		return nil, fmt.Errorf("ledger %s is of another erase (%s %s): give another --ledger", path, led.Kind, led.Subject)
	}
	if led.Devices == nil {
		led.Devices = map[string]*eraseDevice{}
	}
	return &led, nil
}

// newCommand signs a fresh erase for device d; prev is the device's entry
// so far, whose command ids are kept as earlier ones.
func (l *eraseLedger) newCommand(d string, key ed25519.PrivateKey, kid, subject string, allData bool, ttl time.Duration, prev *eraseDevice) (*eraseDevice, error) {
	args := map[string]any{"subject": subject}
	if allData {
		args = map[string]any{"all": true}
	}
	a, _ := json.Marshal(args)
	id := "erase-" + l.ID + "-" + d
	var earlier []string
	if prev != nil {
		earlier = append(append(earlier, prev.Earlier...), prev.CommandID)
		id = fmt.Sprintf("%s-%d", id, len(earlier)+1)
	}
	now := time.Now().UTC().Truncate(time.Second)
	cmd := lpcommand.Command{ID: id, Type: lpcommand.TypeErase, Device: d, IssuedAt: now, ExpiresAt: now.Add(ttl), Args: a}
	token, err := lpcommand.Sign(cmd, kid, key)
	if err != nil {
		return nil, fmt.Errorf("sign the erase for %s: %w", d, err)
	}
	return &eraseDevice{State: erasePending, CommandID: id, Token: token, ExpiresAt: cmd.ExpiresAt, Earlier: earlier}, nil
}

// take files a receipt batch of a device.
func (l *eraseLedger) take(topic string, payload []byte, prefix string) {
	rest, ok := strings.CutPrefix(topic, prefix+"/dev/")
	if !ok {
		return
	}
	d, _, _ := strings.Cut(rest, "/")
	e := l.Devices[d]
	if e == nil {
		return
	}
	var batch struct {
		Records []struct {
			CommandID string          `json:"command_id"`
			Status    string          `json:"status"`
			Reason    string          `json:"reason"`
			At        time.Time       `json:"at"`
			Result    json.RawMessage `json:"result"`
		} `json:"records"`
	}
	if json.Unmarshal(payload, &batch) != nil {
		return
	}
	for _, r := range batch.Records {
		current := r.CommandID == e.CommandID
		if !current && !slices.Contains(e.Earlier, r.CommandID) {
			continue
		}
		if e.State == eraseDone {
			continue // a second receipt (at-least-once) changes nothing
		}
		switch {
		case r.Status == string(lpsync.Done):
			// A late receipt of an earlier command counts: the erase
			// ran.
			e.State, e.Reason, e.Result, e.ReceiptAt, e.Note = eraseDone, "", r.Result, r.At, ""
			if !current {
				e.Note = "done by earlier command " + r.CommandID
			}
		case !current:
			// An earlier command's failure: the current one stands.
		case r.Status == string(lpsync.Rejected) && r.Reason == string(lpcommand.Replayed):
			// The device has this command already (sent twice): its
			// own receipt tells the outcome.
			e.Note = "the device has this command already; waiting for its receipt"
		case r.Status == string(lpsync.Rejected):
			e.State, e.Reason, e.ReceiptAt = eraseRejected, r.Reason, r.At
		default:
			e.State, e.Reason, e.ReceiptAt = eraseFailed, r.Reason, r.At
		}
	}
}

func (l *eraseLedger) allAnswered() bool {
	for _, e := range l.Devices {
		if e.State == erasePending {
			return false
		}
	}
	return true
}

// save writes the ledger atomically: a temporary file, fsynced, renamed
// over the old one, and the directory fsynced.
func (l *eraseLedger) save(path string) error {
	l.UpdatedAt = time.Now().UTC()
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("ledger: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("ledger: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("ledger: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// eraseView is a device's line of the output, without the token.
type eraseView struct {
	Device    string          `json:"device"`
	State     string          `json:"state"`
	CommandID string          `json:"command_id"`
	Reason    string          `json:"reason,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	SentAt    time.Time       `json:"sent_at,omitzero"`
	ReceiptAt time.Time       `json:"receipt_at,omitzero"`
	Note      string          `json:"note,omitempty"`
}

func (l *eraseLedger) print(w io.Writer, asJSON bool, path string) error {
	ids := make([]string, 0, len(l.Devices))
	for d := range l.Devices {
		ids = append(ids, d)
	}
	slices.Sort(ids)
	views := make([]eraseView, 0, len(ids))
	count := map[string]int{}
	for _, d := range ids {
		e := l.Devices[d]
		views = append(views, eraseView{Device: d, State: e.State, CommandID: e.CommandID, Reason: e.Reason, Result: e.Result,
			SentAt: e.SentAt, ReceiptAt: e.ReceiptAt, Note: e.Note})
		count[e.State]++
	}
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]any{
			"erase": l.ID, "kind": l.Kind, "subject": l.Subject, "ledger": path, "devices": views,
			"done": count[eraseDone], "pending": count[erasePending], "rejected": count[eraseRejected], "failed": count[eraseFailed],
		})
	}
	what := "all data"
	if l.Kind == "subject" {
		what = "subject " + l.Subject
	}
	fmt.Fprintf(w, "erase %s of %s (ledger %s)\n", l.ID, what, path)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, v := range views {
		detail := ""
		switch v.State {
		case eraseDone:
			detail = resultCounts(v.Result)
		case eraseRejected, eraseFailed:
			detail = v.Reason
		case erasePending:
			if v.SentAt.IsZero() {
				detail = "not taken by the broker yet"
			} else {
				detail = "queued for the device since " + v.SentAt.Format(time.RFC3339)
			}
		}
		if v.Note != "" {
			detail = strings.TrimSpace(detail + " (" + v.Note + ")")
		}
		fmt.Fprintf(tw, "%s\t-> %s\t%s\n", v.Device, v.State, detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d done, %d pending, %d rejected, %d failed\n", count[eraseDone], count[erasePending], count[eraseRejected], count[eraseFailed])
	return err
}

// resultCounts reads an erase result as "usage_redacted=6 consent_deleted=1 ...",
// keys in order; counts only, nothing personal.
func resultCounts(r json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(r, &m) != nil {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return strings.Join(parts, " ")
}

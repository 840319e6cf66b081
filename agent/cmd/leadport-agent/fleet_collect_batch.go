package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/leadport/leadport-agent/store/phone"
)

// fleet collect, the batch: one MQTT message from a device's record topic
// in, the output lines out (one per record), or the reason it is refused.
// No broker, no files: what the fuzz test drives.

// collectLine is a line of DIR/<type>/<day>.jsonl: one record as the device
// sent it, with what makes it stand alone (the device and the batch that
// carried it) and the id repeated on top, the key to de-duplicate on.
type collectLine struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Device     string          `json:"device"`
	Batch      string          `json:"batch"`
	ReceivedAt time.Time       `json:"received_at"`
	Record     json.RawMessage `json:"record"`
}

// rejectLine is a line of DIR/rejected/<day>.jsonl: a message that is not
// a batch of the protocol, kept whole with the reason, so that nothing the
// broker handed over is lost and a fixed collector can take it again.
type rejectLine struct {
	Topic      string    `json:"topic"`
	Device     string    `json:"device,omitempty"` // from the topic
	Type       string    `json:"type,omitempty"`   // from the topic
	ReceivedAt time.Time `json:"received_at"`
	// Reason never quotes a record: it names what is wrong and where.
	Reason string `json:"reason"`
	// Payload is the message as received when it is UTF-8, otherwise
	// PayloadBase64 holds it.
	Payload       string `json:"payload,omitempty"`
	PayloadBase64 []byte `json:"payload_base64,omitempty"`
}

// batchVersion is the batch format this collector reads (PROTOCOL.md,
// "Batches").
const batchVersion = 1

// parsedBatch is a batch that passed every check: its lines, encoded.
type parsedBatch struct {
	device, typ, batch string
	records            int
	lines              []byte // one JSON object per record, each ending in '\n'
}

// recordTopic splits P/dev/D/<type> into the device and the type; ok is
// false for any other topic.
func recordTopic(prefix, topic string) (device, typ string, ok bool) {
	rest, found := strings.CutPrefix(topic, prefix+"/dev/")
	if !found {
		return "", "", false
	}
	device, typ, found = strings.Cut(rest, "/")
	if !found || !validDeviceID(device) || strings.Contains(typ, "/") {
		return "", "", false
	}
	return device, typ, true
}

// parseBatch checks a message from topic against the protocol and encodes
// its records as output lines. Any fault refuses the whole batch (the
// reason says which record): a batch is taken or set aside as a unit, as
// it is acknowledged as one. types are the record types collected.
func parseBatch(prefix, topic string, payload []byte, receivedAt time.Time, types map[string]bool) (parsedBatch, error) {
	device, typ, ok := recordTopic(prefix, topic)
	if !ok || !types[typ] {
		return parsedBatch{}, fmt.Errorf("topic is not %s/dev/<device>/<%s>", prefix, strings.Join(slices.Sorted(maps.Keys(types)), "|"))
	}
	var b struct {
		V       *int              `json:"v"`
		Device  *string           `json:"device"`
		Batch   *string           `json:"batch"`
		Records []json.RawMessage `json:"records"`
	}
	if err := json.Unmarshal(payload, &b); err != nil {
		return parsedBatch{}, fmt.Errorf("not a batch: %s", jsonFault(err))
	}
	switch {
	case b.V == nil:
		return parsedBatch{}, fmt.Errorf("no version (v)")
	case *b.V != batchVersion:
		return parsedBatch{}, fmt.Errorf("version %d, this collector reads %d", *b.V, batchVersion)
	case b.Device == nil:
		return parsedBatch{}, fmt.Errorf("no device")
	case *b.Device != device:
		// Per-device ACLs keep a device to its own topics; a batch naming
		// another is not taken as either device's.
		return parsedBatch{}, fmt.Errorf("the batch's device is not the topic's")
	case b.Batch == nil || *b.Batch == "":
		return parsedBatch{}, fmt.Errorf("no batch id")
	case b.Records == nil:
		return parsedBatch{}, fmt.Errorf("no records array")
	}
	p := parsedBatch{device: device, typ: typ, batch: *b.Batch, records: len(b.Records)}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false) // records pass as sent, but compacted onto one line
	for i, raw := range b.Records {
		var r struct {
			ID   any `json:"id"`
			Type any `json:"type"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return parsedBatch{}, fmt.Errorf("record %d: not an object: %s", i, jsonFault(err))
		}
		id, ok := r.ID.(string)
		if !ok || id == "" {
			return parsedBatch{}, fmt.Errorf("record %d: no id", i)
		}
		if t, _ := r.Type.(string); t != typ {
			return parsedBatch{}, fmt.Errorf("record %d: type is not %q (the topic's)", i, typ)
		}
		if err := enc.Encode(collectLine{ID: id, Type: typ, Device: device, Batch: p.batch, ReceivedAt: receivedAt, Record: raw}); err != nil {
			return parsedBatch{}, fmt.Errorf("record %d: %s", i, jsonFault(err))
		}
	}
	p.lines = out.Bytes()
	return p, nil
}

// rejected encodes the line that keeps a refused message.
func rejected(prefix, topic string, payload []byte, receivedAt time.Time, reason error) []byte {
	l := rejectLine{Topic: topic, ReceivedAt: receivedAt, Reason: phone.MaskText(reason.Error())}
	l.Device, l.Type, _ = recordTopic(prefix, topic)
	if utf8.Valid(payload) {
		l.Payload = string(payload)
	} else {
		l.PayloadBase64 = payload
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(l); err != nil {
		// Strings and bytes always encode; keep the line whole anyway.
		return fmt.Appendf(nil, "{\"topic\":%q,\"reason\":\"unencodable\"}\n", topic)
	}
	return out.Bytes()
}

// jsonFault is what a JSON error says about the input without quoting it:
// encoding/json names the offending character or Go type, never a value,
// but a syntax error's offset is the useful part.
func jsonFault(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("JSON syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		where := te.Field
		if where == "" {
			where = "the top level"
		}
		return fmt.Sprintf("a JSON %s at %s (byte %d)", te.Value, where, te.Offset)
	}
	return phone.MaskText(err.Error())
}

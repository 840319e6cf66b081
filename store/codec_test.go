package store

import (
	"bytes"
	"encoding/json"
	"testing"
)

func sampleStored() []*stored {
	return []*stored{
		{typ: TypeUsage, id: [16]byte{1, 2, 3}, created: 1764237600000, public: []byte(`{"line":"+15551230001","direction":"outbound","duration_s":60,"disposition":"answered"}`),
			parts: []sealedPart{{ref: subjectRef{9}, wrapped: bytes.Repeat([]byte{0xbb}, sealOver+keySize), sealed: bytes.Repeat([]byte{0xaa}, sealOver+20)}}},
		{typ: TypeConsent, id: [16]byte{4}, created: 1, public: []byte(`{"purpose":"p","state":"granted","method":"web"}`)},
		{typ: TypeViolation, id: [16]byte{5}, public: []byte(`{"rule":"pacing","action":"blocked","evidence":{"n":9}}`),
			parts: []sealedPart{{ref: subjectRef{1}, wrapped: []byte{3}, sealed: []byte{1, 2}}, {ref: subjectRef{2}, sealed: nil}}},
		{typ: TypeReceipt, id: [16]byte{6}, public: []byte(`{"command_id":"c","status":"done","reason":""}`)},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, s := range sampleStored() {
		enc := s.encode()
		got, err := decodeStored(enc)
		if err != nil {
			t.Fatalf("decode %s: %v", s.typ, err)
		}
		if !bytes.Equal(got.encode(), enc) {
			t.Errorf("%s: re-encoding differs", s.typ)
		}
		// A longer encoding of the same length field is refused.
		padded := append(append(bytes.Clone(enc[:18]), enc[18]|0x80, 0x00), enc[19:]...)
		if _, err := decodeStored(padded); err == nil {
			t.Errorf("%s: non-minimal varint accepted", s.typ)
		}
		// Every strict prefix is an error, never a panic or a short record.
		for i := range len(enc) {
			if _, err := decodeStored(enc[:i]); err == nil {
				t.Errorf("%s: truncated to %d of %d bytes decoded without error", s.typ, i, len(enc))
			}
		}
	}
}

// FuzzDecodeStored feeds the record decoder what a damaged disk might hold:
// it must return an error or a record that encodes back to the same bytes,
// and the public part must decode to a typed record or fail cleanly.
func FuzzDecodeStored(f *testing.F) {
	for _, s := range sampleStored() {
		enc := s.encode()
		f.Add(enc)
		f.Add(enc[:len(enc)/2])
	}
	// The drain decodes every record into one stored: what the last
	// record left in it must not show through.
	reuse := sampleStored()[2]
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeStored(data)
		rerr := decodeStoredInto(reuse, data)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("decodeStored: %v, decodeStoredInto a used record: %v", err, rerr)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(st.encode(), data) {
			t.Fatalf("decode/encode not inverse for %x", data)
		}
		if !bytes.Equal(reuse.encode(), data) {
			t.Fatalf("decode into a used record/encode not inverse for %x", data)
		}
		r := Record{Type: st.typ, Public: st.public}
		if p, err := r.Decode(); err == nil {
			if _, err := json.Marshal(p); err != nil {
				t.Fatalf("decoded record does not marshal: %v", err)
			}
		}
	})
}

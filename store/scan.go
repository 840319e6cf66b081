package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/leadport/leadport-agent/store/phone"
	"github.com/oklog/ulid/v2"
)

// Scan is the forensic check of an erase, done the way someone holding the
// device key would look for a person in the file: personal fields are
// sealed, so a search for the number in clear finds nothing whether or not
// it was erased. Scan reads every page of the store file (and of a
// compaction copy a crash left behind), free and unreachable pages
// included, and with the device key looks for the subject three ways:
//
//   - its keyed digest, the reference the store files it under (index
//     entries, the key table, record parts), anywhere in the bytes;
//   - wrapped data keys that unwrap with the device key under the
//     subject's reference, in the key table or in record parts;
//   - sealed fields that open, with the key carried beside them or any
//     other key of the same reference found in the file, and are filed
//     under the subject or name it in any spelling (phone.Variants).
//
// The subject spelled in clear is reported too (it never should be).
//
// Scan opens nothing for writing and takes no lock: it works on the files
// of a stopped agent, of a running one (whose latest commits it may miss),
// or on a copy. opts are the options the store is opened with (Dir,
// KeyFile, DefaultCountry); the rest are ignored.
func Scan(opts Options, subject string) (*ScanReport, error) {
	if opts.Dir == "" {
		return nil, errors.New("store: scan: no data directory")
	}
	if opts.KeyFile == "" {
		opts.KeyFile = filepath.Join(opts.Dir, KeyFileName)
	}
	master, err := os.ReadFile(opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("store: scan: device key: %w", err)
	}
	if len(master) != keySize {
		return nil, fmt.Errorf("store: scan: device key %s: %d bytes, want %d", opts.KeyFile, len(master), keySize)
	}
	sc := newScanner(opts, master, subject)
	if err := sc.eachFile(sc.scanFile); err != nil {
		return nil, err
	}
	if err := sc.openLater(); err != nil {
		return nil, err
	}
	return sc.rep, nil
}

// ScanReport is what Scan found of one subject. It holds no number.
type ScanReport struct {
	Files     []string `json:"files"`      // the files read, in the data directory
	Pages     uint64   `json:"pages"`      // pages read
	FreePages uint64   `json:"free_pages"` // of which the tree in use does not reach
	// KeysUnwrapped and FieldsOpened count what the device key opened of
	// every subject: proof that the key fits the file, so that finding
	// nothing means something.
	KeysUnwrapped int `json:"keys_unwrapped"`
	FieldsOpened  int `json:"fields_opened"`
	// Unopened counts sealed fields no key in the file opens.
	Unopened int `json:"fields_unopened"`

	Digests []Trace `json:"digests"` // the subject's keyed digest in the bytes
	Keys    []Trace `json:"keys"`    // wrapped data keys of the subject that unwrap
	Fields  []Trace `json:"fields"`  // sealed fields that open and are the subject's
	Clear   []Trace `json:"clear"`   // the number in clear
}

// Found reports whether anything of the subject can be read.
func (r *ScanReport) Found() bool {
	return len(r.Digests)+len(r.Keys)+len(r.Fields)+len(r.Clear) > 0
}

// Trace is one place where the subject can be read.
type Trace struct {
	File string `json:"file"`
	Page uint64 `json:"page"`
	// Free is set for a page the tree in use (the newest meta page's)
	// does not reach: freed, and neither reused nor zeroed since.
	Free bool `json:"free"`
	// In says what holds it: "bytes" (a match in the raw file), "key
	// table" or "record".
	In     string `json:"in"`
	Offset int64  `json:"offset,omitempty"` // of a match in the bytes
	Record string `json:"record,omitempty"` // the record's id
	Type   string `json:"type,omitempty"`   // the record's type
	Field  string `json:"field,omitempty"`  // the sealed field that opened
}

// String says where the trace is, for people: "remote of usage record
// 01J… on free page 12 of agent.db".
func (t Trace) String() string {
	where := fmt.Sprintf("page %d of %s", t.Page, t.File)
	if t.Free {
		where = "free " + where
	}
	switch {
	case t.Field != "":
		return fmt.Sprintf("%s of %s record %s on %s", t.Field, t.Type, t.Record, where)
	case t.Record != "":
		return fmt.Sprintf("in %s record %s on %s", t.Type, t.Record, where)
	case t.In == "bytes":
		return fmt.Sprintf("at byte %d, %s", t.Offset, where)
	}
	return fmt.Sprintf("in the %s on %s", t.In, where)
}

// wrappedLen is a data key sealed by the device key: nonce, key, tag.
const wrappedLen = sealOver + keySize

// maxLater bounds the sealed fields kept for a second try with keys found
// elsewhere in the file; more are only counted.
const maxLater = 1 << 16

type scanner struct {
	keys      deviceKeys
	opts      Options
	subject   string // normalised
	ref       subjectRef
	spellings []string
	needles   [][]byte // the digest, then the spellings in clear
	rep       *ScanReport
	// later holds sealed fields whose own wrapped key did not unwrap, to
	// try with other keys of their reference once the file is read.
	later []laterField
}

func newScanner(opts Options, master []byte, subject string) *scanner {
	norm := (&Store{opts: opts}).Subject(subject) // the form Append files it under
	sc := &scanner{keys: deriveKeys(master), opts: opts, subject: norm,
		rep: &ScanReport{Digests: []Trace{}, Keys: []Trace{}, Fields: []Trace{}, Clear: []Trace{}}}
	sc.ref = sc.keys.ref(norm)
	sc.spellings = phone.Variants(norm, opts.DefaultCountry)
	if len(sc.spellings) == 0 {
		sc.spellings = []string{norm}
	}
	sc.needles = [][]byte{sc.ref[:]}
	// Shorter spellings would match random bytes.
	for _, s := range append(sc.spellings, subject) {
		if len(s) >= 8 && !slicesContainBytes(sc.needles[1:], s) {
			sc.needles = append(sc.needles, []byte(s))
		}
	}
	return sc
}

// scanFile reads every page of one file.
func (sc *scanner) scanFile(name string, bf *boltFile) error {
	for _, u := range bf.inUse {
		sc.rep.Pages++
		if !u {
			sc.rep.FreePages++
		}
	}
	sc.rep.Files = append(sc.rep.Files, name)
	return bf.scanPages(sc.needles, func(h rawHit) { sc.raw(name, bf, h) },
		func(page uint64, k, v []byte) { sc.element(place{name, page, !bf.inUse[page]}, k, v) })
}

type place struct {
	file string
	page uint64
	free bool
}

func (p place) trace(in string) Trace { return Trace{File: p.file, Page: p.page, Free: p.free, In: in} }

type laterField struct {
	at   place
	typ  Type
	id   [16]byte
	ref  subjectRef
	seal []byte
}

// eachFile reads the store file and a leftover compaction copy.
func (sc *scanner) eachFile(fn func(name string, bf *boltFile) error) error {
	for _, name := range []string{FileName, FileName + ".compact"} {
		path := filepath.Join(sc.opts.Dir, name)
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) && name != FileName {
			continue
		}
		if err != nil {
			return fmt.Errorf("store: scan: %w", err)
		}
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil {
			err = sc.file(f, fi.Size(), name, fn)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("store: scan %s: %w", path, err)
		}
	}
	return nil
}

// file checks that the device key fits the file, then hands it to fn.
func (sc *scanner) file(r io.ReaderAt, size int64, name string, fn func(string, *boltFile) error) error {
	var checks [][]byte
	bf, err := readBoltFile(r, size, func(k, v []byte) {
		if bytes.Equal(k, metaKeyCheck) {
			checks = append(checks, bytes.Clone(v))
		}
	})
	if err != nil {
		return err
	}
	// A key that opens nothing would find nothing: refuse it.
	fits := len(checks) == 0
	for _, c := range checks {
		fits = fits || sc.keys.checkMatches(c)
	}
	if !fits {
		return fmt.Errorf("%w %s", ErrWrongKey, sc.opts.KeyFile)
	}
	return fn(name, bf)
}

func (sc *scanner) raw(file string, bf *boltFile, h rawHit) {
	page := uint64(h.off / bf.pageSize)
	t := place{file, page, page < uint64(len(bf.inUse)) && !bf.inUse[page]}.trace("bytes")
	t.Offset = h.off
	if h.needle == 0 {
		sc.rep.Digests = append(sc.rep.Digests, t)
	} else {
		sc.rep.Clear = append(sc.rep.Clear, t)
	}
}

// element looks at one key and value of a leaf page: a key table entry
// (reference, wrapped key) or a stored record.
func (sc *scanner) element(at place, k, v []byte) {
	if len(k) == len(subjectRef{}) && len(v) == wrappedLen {
		ref := subjectRef(k)
		if _, err := sc.keys.unwrapDataKey(ref, v); err == nil {
			sc.rep.KeysUnwrapped++
			if ref == sc.ref {
				sc.rep.Keys = append(sc.rep.Keys, at.trace("key table"))
			}
		}
	}
	if len(v) == 0 || v[0] != codecVersion {
		return
	}
	st, err := decodeStored(v)
	if err != nil {
		return
	}
	for _, p := range st.parts {
		dk, err := sc.keys.unwrapDataKey(p.ref, p.wrapped)
		if err == nil {
			sc.rep.KeysUnwrapped++
			if p.ref == sc.ref {
				sc.rep.Keys = append(sc.rep.Keys, sc.recordTrace(at, st.typ, st.id, ""))
			}
			if sc.open(at, st.typ, st.id, p.ref, p.sealed, dk) {
				continue
			}
		}
		if len(sc.later) < maxLater {
			sc.later = append(sc.later, laterField{at, st.typ, st.id, p.ref, bytes.Clone(p.sealed)})
		} else {
			sc.rep.Unopened++
		}
	}
}

func (sc *scanner) recordTrace(at place, typ Type, id [16]byte, field string) Trace {
	t := at.trace("record")
	t.Record, t.Type, t.Field = ulid.ULID(id).String(), typ.String(), field
	return t
}

// open tries one sealed field with one key.
func (sc *scanner) open(at place, typ Type, id [16]byte, ref subjectRef, sealed, dk []byte) bool {
	name, value, err := openField(dk, id, ref, sealed)
	if err != nil {
		return false
	}
	sc.rep.FieldsOpened++
	if ref == sc.ref || sc.mentions(value) {
		sc.rep.Fields = append(sc.rep.Fields, sc.recordTrace(at, typ, id, name))
	}
	return true
}

// openLater reads the files again for every key of the references of the
// fields their own key did not open, and tries those. The associated data
// of a field names its reference, so a key of another reference cannot
// open it.
func (sc *scanner) openLater() error {
	if len(sc.later) == 0 {
		return nil
	}
	want := map[subjectRef][][]byte{}
	for _, l := range sc.later {
		want[l.ref] = nil
	}
	add := func(ref subjectRef, wrapped []byte) {
		ks, ok := want[ref]
		if !ok {
			return
		}
		dk, err := sc.keys.unwrapDataKey(ref, wrapped)
		if err != nil || slicesContainBytes(ks, string(dk)) {
			return
		}
		want[ref] = append(ks, dk)
	}
	err := sc.eachFile(func(_ string, bf *boltFile) error {
		return bf.scanPages(nil, func(rawHit) {}, func(_ uint64, k, v []byte) {
			if len(k) == len(subjectRef{}) && len(v) == wrappedLen {
				add(subjectRef(k), v)
			}
			if len(v) > 0 && v[0] == codecVersion {
				if st, err := decodeStored(v); err == nil {
					for _, p := range st.parts {
						add(p.ref, p.wrapped)
					}
				}
			}
		})
	})
	if err != nil {
		return err
	}
	for _, l := range sc.later {
		opened := false
		for _, dk := range want[l.ref] {
			if opened = sc.open(l.at, l.typ, l.id, l.ref, l.seal, dk); opened {
				break
			}
		}
		if !opened {
			sc.rep.Unopened++
		}
	}
	sc.later = nil
	return nil
}

// mentions reports whether an opened field names the subject: a JSON
// string that normalises to it, or any spelling of it standing alone (not
// inside a longer number).
func (sc *scanner) mentions(value []byte) bool {
	var s string
	if json.Unmarshal(value, &s) == nil && (&Store{opts: sc.opts}).Subject(s) == sc.subject {
		return true
	}
	for _, sp := range sc.spellings {
		if containsAlone(value, []byte(sp)) {
			return true
		}
	}
	return false
}

func containsAlone(b, word []byte) bool {
	digit := func(i int) bool { return i >= 0 && i < len(b) && b[i] >= '0' && b[i] <= '9' }
	for from := 0; ; {
		i := bytes.Index(b[from:], word)
		if i < 0 {
			return false
		}
		at := from + i
		if !digit(at-1) && !digit(at+len(word)) {
			return true
		}
		from = at + 1
	}
}

func slicesContainBytes(list [][]byte, s string) bool {
	for _, b := range list {
		if string(b) == s {
			return true
		}
	}
	return false
}

package passport

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzParseIdentity: ParseIdentity never panics, every refusal is
// ErrMalformed, and what it accepts it writes back (String) to a value
// that parses to the same Identity. The seeds in testdata/fuzz include
// headers cut short at every interesting place.
func FuzzParseIdentity(f *testing.F) {
	full := IdentityHeader(tok, "https://keys.leadport.example/d/pbx-0042")
	f.Add(full)
	for _, n := range []int{0, 1, 20, len(tok) - 1, len(tok), len(tok) + 1, len(tok) + 6, len(tok) + 8, len(full) - 12, len(full) - 1} {
		f.Add(full[:n])
	}
	f.Add(tok + `;info=<sip:k@k.example;transport=tls>;ppt="shaken";x;y=[::1]:5060`)
	f.Fuzz(func(t *testing.T, in string) {
		id, err := ParseIdentity(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseIdentity(%q): %v is not ErrMalformed", in, err)
			}
			return
		}
		out := id.String()
		again, err := ParseIdentity(out)
		if err != nil {
			t.Fatalf("ParseIdentity(%q) accepted, but not its String %q: %v", in, out, err)
		}
		if !reflect.DeepEqual(again, id) {
			t.Fatalf("round trip of %q:\n got %#v\nwant %#v", in, again, id)
		}
	})
}

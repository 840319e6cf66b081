package phone

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	const want = "+15551234567"
	tests := []struct {
		name, raw, cc, want string
	}{
		// The forms the agent must fold into one key.
		{"spaced international", "+1 555 123 4567", "1", want},
		{"NANP parentheses", "(555) 123-4567", "1", want},
		{"00 prefix", "0015551234567", "1", want},
		{"SIP URI", "sip:+15551234567@host;user=phone", "1", want},
		{"tel URI", "tel:+1-555-123-4567", "1", want},
		{"NANP 11 digits", "15551234567", "1", want},
		{"NANP 10 digits", "5551234567", "1", want},
		{"dots", "+1.555.123.4567", "1", want},
		{"name-addr with port", "<sip:+15551234567@10.0.0.1:5060;user=phone>", "1", want},
		{"display name", `"Bob" <sip:5551234567@pbx>`, "1", want},

		// URI variants.
		{"sips URI", "sips:+15551234567@host", "1", want},
		{"upper-case scheme", "SIP:+15551234567@host", "1", want},
		{"tel phone-context", "tel:+1-555-123-4567;phone-context=example.com", "1", want},
		{"tel local with phone-context", "tel:555-123-4567;phone-context=+1", "1", want},
		{"percent-encoded plus", "sip:%2B15551234567@host", "1", want},
		{"percent-encoded lower hex", "sip:%2b15551234567@host", "", want},
		{"URI headers", "<sip:+15551234567@host?Subject=hi>", "1", want},
		{"user params", "sip:+1-555-123-4567;npdi@host;user=phone", "1", want},
		{"SIP password", "sip:+15551234567:secret@host", "1", want},
		{"SIP without user", "sip:+15551234567", "1", want},
		{"SIP without user with port", "sip:+15551234567:5060", "1", want},
		{"tel extension dropped", "tel:+1-555-123-4567;ext=22", "1", want},
		{"display name containing angle bracket", `"a<b" <sip:+15551234567@h>`, "1", want},
		{"surrounding whitespace", "  +15551234567\t", "", want},
		{"unterminated angle bracket", "<sip:+15551234567@host", "1", want},
		{"bare user@host", "5551234567@pbx.local", "1", want},

		// Prefixes and separators.
		{"slashes", "555/123/4567", "1", want},
		{"plus before parenthesis", "(+1) 555 123 4567", "", want},
		{"canonical without default", want, "", want},
		{"canonical with other default", want, "44", want},
		{"011 in NANP", "011 44 7700 900123", "1", "+447700900123"},
		{"00 without default", "00 44 7700 900123", "", "+447700900123"},
		{"default with plus", "5551234567", "+1", want},

		// Other countries.
		{"UK trunk 0", "07700 900123", "44", "+447700900123"},
		{"UK without trunk 0", "7700 900123", "44", "+447700900123"},
		{"UK international", "+44 7700 900123", "1", "+447700900123"},
		{"UK (0) trunk marker", "+44 (0)7700 900123", "1", "+447700900123"},
		{"NANP parentheses after plus", "+1 (555) 123-4567", "1", want},
		{"German 00", "0049 30 1234567", "49", "+49301234567"},
		{"three-digit code", "012 345 678", "353", "+35312345678"},
		{"shortest", "+12345678", "", "+12345678"},
		{"longest", "+123456789012345", "", "+123456789012345"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(tt.raw, tt.cc)
			if err != nil || got != tt.want {
				t.Errorf("Normalize(%q, %q) = %q, %v; want %q, nil", tt.raw, tt.cc, got, err, tt.want)
			}
		})
	}
}

func TestNormalizeRejects(t *testing.T) {
	tests := []struct {
		name, raw, cc string
	}{
		{"empty", "", "1"},
		{"blank", "   ", "1"},
		{"extension", "1001", "1"},
		{"extension other country", "1001", "44"},
		{"feature code", "*72", "1"},
		{"feature code with hash", "*21#", "1"},
		{"anonymous", "anonymous", "1"},
		{"SIP anonymous", "sip:anonymous@anonymous.invalid", "1"},
		{"user name", "alice", "1"},
		{"SIP user name", "<sip:alice@pbx>", "1"},
		{"SIP host only", "sip:pbx.example.com", "1"},
		{"SIP no user", "sip:@host", "1"},
		{"letters inside", "555-CALL-NOW", "1"},
		{"extension suffix", "+1 555 123 4567 x22", "1"},
		{"comma pause", "5551234567,,22", "1"},
		{"unknown scheme", "mailto:5551234567", "1"},
		{"colon outside SIP", "5551234567:5060", "1"},
		{"no default country", "5551234567", ""},
		{"national with trunk 0 and no default", "07700 900123", ""},
		{"plus after digits", "1+5551234567", "1"},
		{"(0) only dropped after plus", "44 (0)7700 9001", "1"},
		{"double plus", "++15551234567", "1"},
		{"plus alone", "+", "1"},
		{"too short international", "+1234567", "1"},
		{"too long international", "+1234567890123456", "1"},
		{"very long", strings.Repeat("9", 100), "1"},
		{"zero country code", "+0123456789", "1"},
		{"000 prefix", "000123456789", "1"},
		{"NANP 7 digits", "123-4567", "1"},
		{"NANP 9 digits", "555123456", "1"},
		{"NANP 12 digits", "155512345678", "1"},
		{"NANP area code starting 1", "1551234567", "1"},
		{"NANP area code starting 0", "0551234567", "1"},
		{"NANP 11 digits not starting 1", "25551234567", "1"},
		{"bad default letters", "5551234567", "US"},
		{"bad default zero", "5551234567", "01"},
		{"bad default long", "5551234567", "1234"},
		{"011 outside NANP", "011 44 7700 900123", "49"},
		{"short other country", "12345", "44"},
		{"broken percent", "sip:%2@host", "1"},
		{"non-hex percent", "sip:%zz15551234567@host", "1"},
		{"double-encoded", "sip:%252B15551234567@host", "1"},
		{"percent-encoded letter", "sip:%41@host", "1"},
		{"fullwidth digits", "５５５１２３４５６７", "1"},
		{"semicolon only", ";user=phone", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(tt.raw, tt.cc)
			if !errors.Is(err, ErrNotE164) || got != "" {
				t.Errorf("Normalize(%q, %q) = %q, %v; want \"\", ErrNotE164", tt.raw, tt.cc, got, err)
			}
		})
	}
}

// Errors are logged; they must not carry the number they reject.
func TestNormalizeErrorHidesNumber(t *testing.T) {
	for _, raw := range []string{
		"5551234567",
		"+1 555 123 4567 x22",
		"sip:+1555123456789012@host",
		"+1234567890123456",
		"07700 900123",
	} {
		_, err := Normalize(raw, "")
		if err == nil {
			t.Errorf("Normalize(%q, \"\") = nil error; want one", raw)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, raw) || strings.Contains(msg, "1234") || strings.Contains(msg, "900123") {
			t.Errorf("Normalize(%q) error %q reveals the number", raw, msg)
		}
	}
}

func TestMask(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"+15551234567", "+1555***4567"},
		{"+447700900123", "+4477***0123"},
		{"+123456789012345", "+1234***2345"},
		{"15551234567", "1555***4567"},
		{"+12345678", "+1***5678"},   // short numbers still hide three digits
		{"+123456789", "+12***6789"}, // ditto
		{"1001", "***01"},
		{"*72", "***72"},
		{"12345678", "***78"},
		{"7", "***"},
		{"42", "***"},
		{"anonymous", "an***mous"},
		{"anonymous caller", "anon***ller"},
		{"sip:+15551234567@host", "sip:***host"},
		{"Zoë Müller-Lüdenscheidt", "Zoë ***eidt"},
		{"ééééé", "***éé"},
	}
	for _, tt := range tests {
		if got := Mask(tt.in); got != tt.want {
			t.Errorf("Mask(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestVariants(t *testing.T) {
	tests := []struct {
		num, cc string
		want    []string
	}{
		{"+15551234567", "1", []string{
			"+15551234567", "15551234567", "5551234567", "sip:+15551234567@", "sip:5551234567@",
		}},
		{"+447700900123", "44", []string{
			"+447700900123", "447700900123", "07700900123", "sip:+447700900123@", "sip:07700900123@",
		}},
		// A foreign number has no national form in the default country.
		{"+447700900123", "1", []string{
			"+447700900123", "447700900123", "sip:+447700900123@",
		}},
		{"+15551234567", "", []string{
			"+15551234567", "15551234567", "sip:+15551234567@",
		}},
		// Unnormalised input is accepted.
		{"(555) 123-4567", "1", []string{
			"+15551234567", "15551234567", "5551234567", "sip:+15551234567@", "sip:5551234567@",
		}},
		{"1001", "1", nil},
		{"", "1", nil},
	}
	for _, tt := range tests {
		if got := Variants(tt.num, tt.cc); !slices.Equal(got, tt.want) {
			t.Errorf("Variants(%q, %q) = %q; want %q", tt.num, tt.cc, got, tt.want)
		}
	}
}

var e164RE = regexp.MustCompile(`^\+[1-9][0-9]{7,14}$`)

func FuzzNormalize(f *testing.F) {
	for _, s := range [][2]string{
		{"+1 555 123 4567", "1"},
		{"(555) 123-4567", "1"},
		{"0015551234567", "1"},
		{"011 44 7700 900123", "1"},
		{"sip:+15551234567@host;user=phone", "1"},
		{`"Bob" <sip:5551234567@pbx>`, "1"},
		{"tel:+1-555-123-4567;phone-context=example.com", ""},
		{"sip:%2B15551234567@host", ""},
		{"07700 900123", "44"},
		{"*21#", "1"},
		{"anonymous", "44"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, raw, cc string) {
		got, err := Normalize(raw, cc)
		if err != nil {
			if !errors.Is(err, ErrNotE164) {
				t.Fatalf("Normalize(%q, %q) error %v does not wrap ErrNotE164", raw, cc, err)
			}
			if got != "" {
				t.Fatalf("Normalize(%q, %q) = %q with error %v", raw, cc, got, err)
			}
			if digitCount(raw) >= 4 && strings.Contains(err.Error(), raw) {
				t.Fatalf("Normalize(%q, %q) error %q contains the input", raw, cc, err)
			}
			return
		}
		if !e164RE.MatchString(got) {
			t.Fatalf("Normalize(%q, %q) = %q, not E.164", raw, cc, got)
		}
		if again, err := Normalize(got, cc); again != got || err != nil {
			t.Fatalf("Normalize(%q, %q) = %q, %v; want %q, nil (idempotence)", got, cc, again, err, got)
		}
		if m := Mask(got); m == got || strings.Contains(m, got[1:]) {
			t.Fatalf("Mask(%q) = %q reveals the number", got, m)
		}
		if v := Variants(got, cc); len(v) == 0 || v[0] != got {
			t.Fatalf("Variants(%q, %q) = %q; want it to start with the number", got, cc, v)
		}
	})
}

func digitCount(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			n++
		}
	}
	return n
}

func BenchmarkNormalize(b *testing.B) {
	for _, bm := range []struct{ name, raw string }{
		{"canonical", "+15551234567"},
		{"name-addr", "<sip:+15551234567@10.0.0.1:5060;user=phone>"},
		{"display-name", `"Bob" <sip:5551234567@pbx>`},
		{"national", "(555) 123-4567"},
		{"anonymous", "sip:anonymous@anonymous.invalid"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Normalize(bm.raw, "1")
			}
		})
	}
}

func ExampleNormalize() {
	for _, in := range []struct{ raw, defaultCountry string }{
		{`"Bob" <sip:5551234567@pbx>`, "1"},
		{"tel:+1-555-123-4567", "44"},
		{"07700 900123", "44"},
	} {
		n, err := Normalize(in.raw, in.defaultCountry)
		fmt.Println(n, err)
	}
	_, err := Normalize("1001", "1")
	fmt.Println(errors.Is(err, ErrNotE164))
	// Output:
	// +15551234567 <nil>
	// +15551234567 <nil>
	// +447700900123 <nil>
	// true
}

func ExampleMask() {
	fmt.Println(Mask("+15551234567"))
	fmt.Println(Mask("1001"))
	// Output:
	// +1555***4567
	// ***01
}

func ExampleVariants() {
	for _, v := range Variants("+15551234567", "1") {
		fmt.Println(v)
	}
	// Output:
	// +15551234567
	// 15551234567
	// 5551234567
	// sip:+15551234567@
	// sip:5551234567@
}

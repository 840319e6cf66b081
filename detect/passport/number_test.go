package passport

import (
	"errors"
	"testing"
)

func TestCanonical(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{"+15551234567", "15551234567", nil},
		{"15551234567", "15551234567", nil},
		{"+1 (555) 123-4567", "15551234567", nil},
		{"+1.555.123.4567", "15551234567", nil},
		{" +44 20 7946 0958 ", "442079460958", nil},
		{"(+1) 555", "1555", nil}, // '+' is still leading once separators go
		{"*72", "*72", nil},
		{"#31#5551234567", "#31#5551234567", nil},
		{"0", "0", nil},
		{"", "", ErrNotNumber},
		{"+", "", ErrNotNumber},
		{"-.()", "", ErrNotNumber},
		{"++15551234567", "", ErrNotNumber},
		{"1555+1234", "", ErrNotNumber},
		{"alice", "", ErrNotNumber},
		{"5551234567;npdi", "", ErrNotNumber},
		{"555%2A", "", ErrNotNumber},
		{"１２３", "", ErrNotNumber}, // full-width digits are not digits here
		{"555\t123", "", ErrNotNumber},
	}
	for _, tt := range tests {
		got, err := Canonical(tt.in)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("Canonical(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestCanonicalNoAllocWhenCanonical(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Canonical("15551234567") }); n != 0 {
		t.Errorf("Canonical of a canonical number allocates %v times", n)
	}
}

func TestBinding(t *testing.T) {
	tests := []struct {
		callID, tag, want string
	}{
		// Computed outside Go: base64url(sha256(callID + "\n" + tag)), unpadded.
		{"a84b4c76e66710@pc33.example.com", "1928301774", "XOD8DQqSPOsl27vGcMxItlHbR9G13o86lfqv1I-BbxA"},
		{"", "", "AbpHGcgLb-kRsJGnwFEktk7uzpZOCcBY74-YBdrKVGs"},
	}
	for _, tt := range tests {
		if got := Binding(tt.callID, tt.tag); got != tt.want {
			t.Errorf("Binding(%q, %q) = %q, want %q", tt.callID, tt.tag, got, tt.want)
		}
	}
	if Binding("ab", "c") == Binding("a", "bc") {
		t.Error("Binding does not separate Call-ID from tag")
	}
}

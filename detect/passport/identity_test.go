package passport

import (
	"errors"
	"reflect"
	"testing"
)

const tok = "eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjF9.c2lnbmF0dXJl"

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		name, in string
		want     Identity
	}{
		{"agent", IdentityHeader(tok, "https://keys.leadport.example/d/pbx-0042"),
			Identity{Token: tok, Info: "https://keys.leadport.example/d/pbx-0042", Alg: "ES256"}},
		{"whitespace", "  " + tok + " ; info = <https://k.example/a> ;\talg = ES256 ",
			Identity{Token: tok, Info: "https://k.example/a", Alg: "ES256"}},
		{"order", tok + ";alg=ES256;info=<https://k.example/a>",
			Identity{Token: tok, Info: "https://k.example/a", Alg: "ES256"}},
		{"no alg", tok + ";info=<https://k.example/a>",
			Identity{Token: tok, Info: "https://k.example/a"}},
		{"case", tok + ";INFO=<https://k.example/a>;Alg=ES256",
			Identity{Token: tok, Info: "https://k.example/a", Alg: "ES256"}},
		{"shaken", tok + ";info=<https://cert.example/c.pem>;alg=ES256;ppt=shaken",
			Identity{Token: tok, Info: "https://cert.example/c.pem", Alg: "ES256", PPT: "shaken"}},
		{"quoted ppt", tok + `;info=<https://c.example/c.pem>;ppt="shaken"`,
			Identity{Token: tok, Info: "https://c.example/c.pem", PPT: `"shaken"`}},
		{"info with params", tok + ";info=<sip:keys@k.example;transport=tls>",
			Identity{Token: tok, Info: "sip:keys@k.example;transport=tls"}},
		{"extensions", tok + `;info=<https://k.example/a>;x-flag;X-Note="a;b \" c";host=[::1]:5060`,
			Identity{Token: tok, Info: "https://k.example/a", Params: []Param{
				{"x-flag", ""}, {"x-note", `"a;b \" c"`}, {"host", "[::1]:5060"}}}},
		{"compact form", "eyJhbGciOiJFUzI1NiJ9..c2ln;info=<https://k.example/a>",
			Identity{Token: "eyJhbGciOiJFUzI1NiJ9..c2ln", Info: "https://k.example/a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseIdentity(tt.in)
			if err != nil {
				t.Fatalf("ParseIdentity: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseIdentity\n got %#v\nwant %#v", got, tt.want)
			}
			again, err := ParseIdentity(got.String())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip of %q: %#v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseIdentityRefuses(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"blank", " \t "},
		{"bare token", tok},
		{"two parts", "eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjF9;info=<https://k.example/a>"},
		{"four parts", tok + ".x;info=<https://k.example/a>"},
		{"empty header", ".eyJpYXQiOjF9.c2ln;info=<https://k.example/a>"},
		{"empty signature", "eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjF9.;info=<https://k.example/a>"},
		{"standard base64", "eyJhbGciOiJFUzI1NiJ9.eyJp+YXQ/iOjF9.c2ln;info=<https://k.example/a>"},
		{"padding", "eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjF9.c2ln==;info=<https://k.example/a>"},
		{"space in token", "eyJhbGciOiJFUzI1NiJ9. eyJpYXQiOjF9.c2ln;info=<https://k.example/a>"},
		{"no info", tok + ";alg=ES256"},
		{"info without brackets", tok + ";info=https://k.example/a"},
		{"info unclosed", tok + ";info=<https://k.example/a"},
		{"info truncated", tok + ";info=<"},
		{"info empty", tok + ";info=<>"},
		{"info not absolute", tok + ";info=</keys/a>"},
		{"info space", tok + ";info=<https://k.example/a b>"},
		{"info twice", tok + ";info=<https://k.example/a>;info=<https://k.example/b>"},
		{"alg twice", tok + ";info=<https://k.example/a>;alg=ES256;alg=ES256"},
		{"ppt twice", tok + ";info=<https://k.example/a>;ppt=shaken;ppt=div"},
		{"alg quoted", tok + `;info=<https://k.example/a>;alg="ES256"`},
		{"alg empty", tok + ";info=<https://k.example/a>;alg="},
		{"ppt no value", tok + ";info=<https://k.example/a>;ppt"},
		{"angle elsewhere", tok + ";info=<https://k.example/a>;x=<y:z>"},
		{"empty param", tok + ";info=<https://k.example/a>;;alg=ES256"},
		{"trailing semicolon", tok + ";info=<https://k.example/a>;"},
		{"junk after value", tok + ";info=<https://k.example/a> x"},
		{"unterminated quote", tok + `;info=<https://k.example/a>;x="abc`},
		{"escape at end", tok + `;info=<https://k.example/a>;x="abc\`},
		{"control in quote", tok + ";info=<https://k.example/a>;x=\"a\x01\""},
		{"bad value", tok + ";info=<https://k.example/a>;x=@"},
		{"comma list", tok + ";info=<https://k.example/a>, " + tok + ";info=<https://k.example/b>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ParseIdentity(tt.in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseIdentity(%q) = %#v, %v; want ErrMalformed", tt.in, id, err)
			}
		})
	}
}

func TestCheckInfo(t *testing.T) {
	for _, ok := range []string{
		"https://keys.leadport.example/d/pbx-0042",
		"https://keys.leadport.example/jwk/NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
		"urn:leadport:device:pbx-0042",
	} {
		if err := checkInfo(ok); err != nil {
			t.Errorf("checkInfo(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{
		"", "pbx-0042", "https://k.example/key?id=pbx-0042", "sip:k.example;transport=tls",
		"https://k.example/a,b", "https://k.example/a b", "https://k.example/<a>", "1https://k.example",
	} {
		if err := checkInfo(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("checkInfo(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

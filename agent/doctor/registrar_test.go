package doctor

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// doctorRegistrar is an edge that answers OPTIONS 200 and REGISTER with
// answer(req); it returns the address and the REGISTERs it got.
func doctorRegistrar(t *testing.T, answer func(*sip.Request) *sip.Response) (string, chan *sip.Request) {
	t.Helper()
	ua, srv := doctorSIPServer(t, "registrar")
	got := make(chan *sip.Request, 4)
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		got <- req
		tx.Respond(answer(req))
	})
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(c)
	t.Cleanup(func() {
		c.Close()
		ua.Close()
	})
	return c.LocalAddr().String(), got
}

// TestDoctorRegistrar: the registrar line of the report, from the probe
// REGISTER in path mode and from a running agent's sip.register.
func TestDoctorRegistrar(t *testing.T) {
	// ok200 answers the query with the line's binding (as a registrar
	// with a phone registered does), echoing the Path or not; without a
	// binding the 200 shows nothing of Path.
	ok200 := func(echo, binding bool) func(*sip.Request) *sip.Response {
		return func(req *sip.Request) *sip.Response {
			res := sip.NewResponseFromRequest(req, 200, "OK", nil)
			if binding {
				res.AppendHeader(sip.NewHeader("Contact", "<sip:+15551230001@192.0.2.20:5062>;expires=300"))
			}
			if p := req.GetHeader("Path"); echo && p != nil {
				res.AppendHeader(sip.NewHeader("Path", p.Value()))
			}
			return res
		}
	}
	status := func(code int, extra ...sip.Header) func(*sip.Request) *sip.Response {
		return func(req *sip.Request) *sip.Response {
			res := sip.NewResponseFromRequest(req, code, "", nil)
			for _, h := range extra {
				res.AppendHeader(h)
			}
			return res
		}
	}
	tests := []struct {
		name    string
		mode    string
		answer  func(*sip.Request) *sip.Response
		running string // the running agent's sip.register, JSON
		want    []string
	}{
		{name: "takes Path", mode: "path", answer: ok200(true, true),
			want: []string{`(?m)^OK    registrar +the registrar takes Path \(answered 200 with the Path\)`}},
		{name: "ignores Path", mode: "path", answer: ok200(false, true),
			want: []string{`(?m)^WARN  registrar +the registrar ignores Path`, `fix: set sip\.register_mode: contact`}},
		{name: "no binding to tell", mode: "path", answer: ok200(false, false),
			want: []string{`(?m)^OK    registrar +the registrar answers REGISTER \(200, with no binding of the line`}},
		{name: "refuses Path", mode: "path", answer: status(420, sip.NewHeader("Unsupported", "path")),
			want: []string{`(?m)^WARN  registrar +the registrar refuses Path \(420 Unsupported: path\)`}},
		{name: "asks for credentials", mode: "path", answer: status(401, sip.NewHeader("WWW-Authenticate", `Digest realm="leadport.test", nonce="n"`)),
			want: []string{`(?m)^OK    registrar +the registrar answers REGISTER \(401, it asks for credentials first\)`}},
		{name: "contact mode needs no probe", mode: "contact", answer: status(500),
			want: []string{`(?m)^OK    registrar +register_mode contact`}},
		{name: "a running agent with a line failing", mode: "path", answer: status(401),
			running: `{"mode":"contact","fallback":true,"lines_failing":{"+1555***0001":403}}`,
			want: []string{`(?m)^FAIL  registrar +the running agent sees registrations failing on \+1555\*\*\*0001 \(403\)`,
				`(?m)^OK    registrar +the registrar answers REGISTER \(401`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, got := doctorRegistrar(t, tt.answer)
			e := newDoctorEnv(t)
			e.raw = fmt.Sprintf("device_id: pbx-test\ndata_dir: %q\nlines: [\"+15551230001\"]\ndefault_country: \"1\"\n"+
				"sip:\n  listen: [%q]\n  upstream: \"udp://%s\"\n  register_mode: %s\napi:\n  socket: %q\n",
				e.dataDir, e.listen[0], addr, tt.mode, e.socket)
			if tt.running != "" {
				l, err := net.Listen("unix", e.socket)
				if err != nil {
					t.Fatal(err)
				}
				srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					fmt.Fprintf(w, `{"device_id":"pbx-test","sip":{"register":%s}}`, tt.running)
				})}
				go srv.Serve(l)
				t.Cleanup(func() { srv.Close() })
			}
			_, out := runDoctor(t, e.writeConfig())
			for _, w := range tt.want {
				if !regexp.MustCompile(w).MatchString(out) {
					t.Errorf("report lacks %s:\n%s", w, out)
				}
			}
			if tt.mode == "path" {
				select {
				case req := <-got:
					if req.Contact() != nil || req.GetHeader("Path") == nil || req.GetHeader("Supported") == nil {
						t.Errorf("probe REGISTER: want no Contact (a query), a Path and Supported: path:\n%s", req)
					}
				default:
					t.Error("the registrar got no probe REGISTER")
				}
			}
		})
	}
}

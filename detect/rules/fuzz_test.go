package rules_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/policy"
	"github.com/leadport/leadport-agent/detect/rules"
)

// FuzzRules drives the tracker and the rules, wired as the agent wires
// them, with random sequences of calls, answers, ends, redirects, REFERs,
// REGISTERs, policy swaps and headers made of the fuzzer's bytes. No rule
// may fail (a panic would be recovered and counted, so count it), and the
// state held stays bounded by what is live.
func FuzzRules(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 2, 0, 3, 1, 7, 200, 0, 3, 4, 1, 5, 0, 6, 9, 9, 8, 1, 9, 'x'})
	f.Add([]byte("\x00\x01\x00\x02\x00\x03\x00\x04\x00\x05\x07\x01\x00\x06\x00\x07\x00\x08"))
	f.Add([]byte("\x09<sip:+15551230001@x;cause=302>;index=1, <sip:+1212@y>\x06\x00\x06\x01\x08\x02"))
	lines := []string{"+15551230001", "+15551230002", "+15551230003"}
	f.Fuzz(func(t *testing.T, ops []byte) {
		p := policy.Default()
		p.Lines = lines
		e, err := rules.New(p, rules.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tr := dialog.New(dialog.Options{OnEnd: e.CallEnded, OnAnswer: e.CallAnswered})
		lineSet, _ := detect.NewLines(lines, "")
		at := t0
		var live []string
		reqs := map[string]*sip.Request{}
		dirs := map[string]detect.Direction{}
		invites := 0
		next := func(i *int) byte {
			if *i >= len(ops) {
				return 0
			}
			b := ops[*i]
			*i++
			return b
		}
		for i := 0; i < len(ops); {
			op := next(&i) % 10
			arg := next(&i)
			l := lines[int(arg)%len(lines)]
			switch op {
			case 0, 1, 9:
				dir := detect.Outbound
				from, to := l, fmt.Sprintf("+1212555%04d", int(arg)*7)
				if op == 1 {
					dir, from, to = detect.Inbound, to, l
				}
				id := fmt.Sprintf("c%d", invites)
				invites++
				req := invite(id, from, to, dir)
				if op == 9 {
					// Arbitrary header values from the fuzzer.
					n := int(next(&i)) % 32
					junk := string(ops[min(i, len(ops)):min(i+n, len(ops))])
					i += n
					for _, h := range []string{"Diversion", "History-Info", "P-Asserted-Identity", "Remote-Party-ID"} {
						req.AppendHeader(sip.NewHeader(h, junk))
					}
					req.From().Address.User = junk
				}
				line, remote := detect.Classify(lineSet, dir, req)
				v := e.Decide(&detect.Event{At: at, Direction: dir, Line: line, Remote: remote, Request: req})
				if line == "" {
					continue
				}
				c := dialog.Call{CallID: id, Line: line, Direction: dir, Remote: remote, StartedAt: at}
				if !tr.Begin(c) {
					continue
				}
				if v.Block {
					tr.Block(id, v.Rule, v.Status, at)
					continue
				}
				live = append(live, id)
				reqs[id], dirs[id] = req, dir
			case 2, 3, 4, 5:
				if len(live) == 0 {
					continue
				}
				k := int(arg) % len(live)
				id := live[k]
				switch op {
				case 2:
					tr.Response(id, 200, at, 0)
				case 3:
					tr.Bye(id, at)
					live = append(live[:k], live[k+1:]...)
				case 4:
					status := []int{302, 181, 486, 480}[int(arg)%4]
					res := sip.NewResponseFromRequest(reqs[id], status, "", nil)
					if status == 181 {
						res.AppendHeader(sip.NewHeader("Diversion", "<sip:"+l+"@x>"))
					}
					c, ok := tr.Get(id)
					if !ok {
						continue
					}
					v := e.Decide(&detect.Event{At: at, Direction: dirs[id], Line: c.Line, Remote: c.Remote, Request: reqs[id], Response: res})
					if v.Block {
						tr.Block(id, v.Rule, v.Status, at)
					} else if status >= 200 {
						tr.Response(id, status, at, 0)
					}
				case 5:
					refer := invite(id, l, "+12125550000", detect.Outbound)
					refer.Method = sip.REFER
					e.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: l, InDialog: true, Request: refer})
				}
			case 6:
				req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "edge.example"})
				aor := sip.Uri{Scheme: "sip", User: l, Host: "edge.example"}
				req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.NewParams()})
				req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
				cid := sip.CallIDHeader("r")
				req.AppendHeader(&cid)
				params := sip.NewParams()
				params.Add("expires", fmt.Sprint([]int{0, 60, 3600}[int(arg)%3]))
				req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: l, Host: fmt.Sprintf("192.0.2.%d", arg%8)}, Params: params})
				req.SetSource(fmt.Sprintf("192.0.2.%d:5060", arg%8))
				e.Decide(&detect.Event{At: at, Direction: detect.Outbound, Line: l, Request: req})
			case 7:
				at = at.Add(time.Duration(arg) * time.Second * 7)
				tr.Expire(at)
			case 8:
				q := policy.Default()
				q.Lines = lines[:1+int(arg)%len(lines)]
				q.Pacing.Action = []policy.Action{policy.Block, policy.Observe, policy.Off}[int(arg)%3]
				q.Quota.MonthlyMinutes = int(arg) % 3
				if err := e.SetPolicy(q); err != nil {
					t.Fatal(err)
				}
			}
		}
		s := e.Stats()
		if len(s.RuleErrors) > 0 {
			t.Fatalf("rules failed: %v", s.RuleErrors)
		}
		if s.Calls > len(live) || s.Lines > len(lines) {
			t.Fatalf("engine holds %d calls on %d lines; %d calls live, %d lines", s.Calls, s.Lines, len(live), len(lines))
		}
		// Everything ends: nothing may stay held.
		for _, id := range live {
			tr.Bye(id, at)
		}
		if s := e.Stats(); s.Calls != 0 {
			t.Fatalf("%d calls held after every call ended", s.Calls)
		}
	})
}

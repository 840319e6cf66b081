package doctor

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/detect/sipproxy"
)

// registrar says whether phones can register through the agent: in path
// mode, whether the registrar takes a Path (a probe REGISTER that changes
// nothing, sipproxy.ProbePath), and, when an agent runs, what it learnt
// from the phones' own registrations: the mode in force and the lines
// whose registrations fail. It reports nothing without an upstream or
// lines, or when the upstream does not answer (the upstream check says so).
type registrar struct{}

func (registrar) Name() string { return "registrar" }

func (registrar) Run(ctx context.Context, env *Env) []Result {
	sipc := env.Config.SIP
	e := sipc.Upstream
	if e.IsZero() || len(env.Config.Lines) == 0 {
		return nil
	}
	var out []Result
	if env.agentRunning() {
		if r, ok := runningRegistrations(env.api.register); ok {
			out = append(out, r)
		}
	}
	if sipc.RegisterMode != "path" {
		if len(out) == 0 {
			out = append(out, Result{Status: OK, Found: "register_mode contact: phones register with the agent's address as their contact; the registrar needs no Path support"})
		}
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, e.Host)
	if err != nil || len(addrs) == 0 {
		return out
	}
	res, err := sipproxy.ProbePath(ctx, sipproxy.Endpoint{Transport: e.Transport, Host: e.Host, Port: e.Port}, addrs[0], env.Config.Lines[0], "leadport-agent-doctor")
	if err != nil {
		return out // no answer: the upstream check reports it
	}
	return append(out, pathVerdict(res))
}

// pathVerdict reads the registrar's answer to the probe, as the proxy reads
// the answers to the phones' REGISTERs (sipproxy.PathSupport).
func pathVerdict(res *sip.Response) Result {
	var r Result
	code := res.StatusCode
	switch support := sipproxy.PathSupport(res); {
	case support == sipproxy.PathRefused:
		r.Status = Warn
		r.Found = "the registrar refuses Path (420 Unsupported: path): the agent falls back to contact mode at the first registration"
		r.Fix = "set sip.register_mode: contact, so the mode is the one in force from the start"
	case support == sipproxy.PathTaken:
		r.Status, r.Found = OK, fmt.Sprintf("the registrar takes Path (answered %d with the Path)", code)
	case support == sipproxy.PathIgnored:
		r.Status = Warn
		r.Found = fmt.Sprintf("the registrar ignores Path (answered %d without it): calls to the phones would not come through the agent; it falls back to contact mode at the first registration", code)
		r.Fix = "set sip.register_mode: contact"
	case code >= 200 && code < 300:
		r.Status = OK
		r.Found = fmt.Sprintf("the registrar answers REGISTER (%d, with no binding of the line to show whether it keeps a Path): whether it takes Path shows at the phones' first registration (leadport-agent status, sip.register)", code)
	case code == sip.StatusUnauthorized || code == sip.StatusProxyAuthRequired:
		r.Status = OK
		r.Found = fmt.Sprintf("the registrar answers REGISTER (%d, it asks for credentials first): whether it takes Path shows at the phones' first registration (leadport-agent status, sip.register)", code)
	default:
		r.Status = Warn
		r.Found = fmt.Sprintf("the registrar answered a probe REGISTER %d %s", code, res.Reason)
		r.Fix = "check that sip.upstream is the registrar Leadport gave you"
	}
	return r
}

// runningRegistrations reports what the running agent learnt from the
// phones' registrations; false when it has nothing to say.
func runningRegistrations(reg agentRegister) (Result, bool) {
	if reg.Mode == "" {
		return Result{}, false
	}
	if len(reg.LinesFailing) > 0 {
		var lines []string
		for l, status := range reg.LinesFailing {
			lines = append(lines, fmt.Sprintf("%s (%d)", l, status)) // masked by the agent
		}
		slices.Sort(lines)
		return Result{Status: Fail,
			Found: "the running agent sees registrations failing on " + strings.Join(lines, ", "),
			Fix:   "check the phone's account (user, password, registrar) for those lines; 401/403 is a credential the registrar refuses, 420 a Path it refuses"}, true
	}
	if reg.Fallback {
		return Result{Status: Warn,
			Found: "the running agent fell back to contact mode: the registrar refused or ignored Path",
			Fix:   "set sip.register_mode: contact"}, true
	}
	return Result{Status: OK, Found: fmt.Sprintf("the running agent registers phones in %s mode, no line failing", reg.Mode)}, true
}

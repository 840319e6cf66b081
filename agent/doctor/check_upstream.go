package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect/sipproxy"
)

// upstream asks the Leadport edge (sip.upstream) with an OPTIONS whether
// it answers, and keeps the Date of its answer for the edge clock check.
type upstream struct{}

func (upstream) Name() string { return "upstream" }

func (upstream) Run(ctx context.Context, env *Env) []Result {
	var r Result
	e := env.Config.SIP.Upstream
	if e.IsZero() {
		r.Status = Warn
		r.Found = "sip.upstream is not set: the SIP proxy is off and calls are not checked"
		r.Fix = "set sip.upstream to the Leadport SIP edge Leadport gave you (e.g. udp://edge.leadport.example:5060)"
		return []Result{r}
	}
	label := e.String()
	ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, e.Host)
	if err != nil || len(addrs) == 0 {
		r.Status = Fail
		r.Found = fmt.Sprintf("%s: %s does not resolve (%v)", label, e.Host, err)
		r.Fix = "check the name in sip.upstream and this host's DNS (/etc/resolv.conf)"
		return []Result{r}
	}
	res, rtt, err := ping(ctx, e, addrs[0])
	if err != nil {
		r.Status = Fail
		r.Found = fmt.Sprintf("%s: no answer to OPTIONS within %s", label, upstreamTimeout)
		if !errors.Is(err, context.DeadlineExceeded) {
			r.Found += fmt.Sprintf(" (%v)", err)
		}
		r.Fix = fmt.Sprintf("check that a firewall lets %s port %d out and the answers back in, and that sip.upstream is the address Leadport gave you", strings.ToUpper(e.Transport), e.Port)
		if errors.Is(err, syscall.ECONNREFUSED) {
			r.Fix = fmt.Sprintf("nothing takes %s on %s: check the port and transport in sip.upstream", strings.ToUpper(e.Transport), net.JoinHostPort(addrs[0], strconv.Itoa(e.Port)))
		}
		return []Result{r}
	}
	if h := res.GetHeader("Date"); h != nil {
		env.sawUpstreamDate(h.Value(), time.Now())
	}
	r.Found = fmt.Sprintf("%s: answered %d %s in %s", label, res.StatusCode, res.Reason, ms(rtt))
	r.Status = OK
	if res.StatusCode >= 500 {
		r.Status = Warn
		r.Fix = "the edge answers but reports a problem on its side: try again later, or tell Leadport support"
	}
	return []Result{r}
}

// sipLogOnce quiets sipgo's package logger before the doctor's first
// OPTIONS: it would write to stderr, whole messages included.
var sipLogOnce sync.Once

// ping sends one OPTIONS to e at ip from a user agent of the doctor's own.
func ping(ctx context.Context, e config.Endpoint, ip string) (*sip.Response, time.Duration, error) {
	sipLogOnce.Do(func() { sip.SetDefaultLogger(slog.New(slog.NewTextHandler(io.Discard, nil))) })
	return sipproxy.Ping(ctx, sipproxy.Endpoint{Transport: e.Transport, Host: e.Host, Port: e.Port}, ip, "leadport-agent-doctor")
}

// sawUpstreamDate keeps the Date of the upstream's answer to the doctor's
// OPTIONS, for the edge clock check.
func (env *Env) sawUpstreamDate(date string, received time.Time) {
	t, err := http.ParseTime(date)
	if err != nil {
		return
	}
	env.mu.Lock()
	env.edgeOffset = t.Add(500 * time.Millisecond).Sub(received)
	env.edgeDate = true
	env.mu.Unlock()
}

// Package doctor checks an installation the way a technician on the device
// needs it: one line per check, what was found and, for WARN and FAIL, how
// to fix it. `leadport-agent doctor` parses its flags, calls Run and prints
// the Report, as text or JSON.
//
// Each check is a Check in a file of its own (check_*.go), listed in
// report order in checks, below. The config check runs first and loads
// what the others read; the checks that wait on the network (upstream and
// after it invite size; broker) then run beside the others, and the report
// keeps the order of the list. Checks share what they learn
// through Env: the config, who runs the doctor and who should own the data,
// whether the agent's local API answers, the dates of the broker's
// certificate and of the edge's answer.
//
//	config ─▶ data dir ─▶ device key ─▶ identity key ─▶ trusted keys ─▶ sip listen ─▶ client cert ─▶ clock ─▶ edge clock
//	   ├─▶ upstream ─▶ invite size   (beside the line above; edge clock reads the Date of the edge's answer)
//	   └─▶ broker                    (beside it too; clock reads the broker certificate's dates)
//
// What another package owns is asked of it: the device key's format
// (store.CheckKeyFile), the OPTIONS ping (sipproxy.Ping), the call-signing
// key (passport.LoadKey), the broker's TLS settings (agent.MQTTTLS).
package doctor

import (
	"cmp"
	"context"
	"os"
	"os/user"
	"sync"
	"time"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/agent/config"
)

// Status is a check's outcome.
type Status string

// Check outcomes. Skip is a check that could not run because one it needs
// (the config) failed, or that does not apply.
const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Result is one line of the report.
type Result struct {
	Name    string   `json:"name"`
	Status  Status   `json:"status"`
	Found   string   `json:"found"`
	Details []string `json:"details,omitempty"`
	Fix     string   `json:"fix,omitempty"`
}

// A Check is one part of the report.
type Check interface {
	// Name is the report's second column, the same on every line the
	// check reports.
	Name() string
	// Run looks and reports: one result, one per thing looked at (each
	// listener, each broker), or none where the check does not apply. Run
	// leaves Name empty: the report fills it from Name.
	Run(ctx context.Context, env *Env) []Result
}

// entry is a check and when it runs.
type entry struct {
	Check
	// network: it waits on peers, so it starts as soon as the config is
	// loaded and runs beside the others.
	network bool
	// after names an earlier check whose findings (in Env) this one reads:
	// it runs once that one is done.
	after string
	// optional: it reports only where it applies, so nothing at all when
	// the config failed.
	optional bool
	// noConfig: it runs when the config failed too (it needs none).
	noConfig bool
}

// checks are the report's lines after config's, in order.
var checks = []entry{
	{Check: dataDir{}},
	{Check: deviceKey{}},
	{Check: identityKey{}},
	{Check: trustedKeys{}},
	{Check: sipListen{}},
	{Check: upstream{}, network: true},
	{Check: inviteSize{}, network: true, after: "upstream", optional: true},
	{Check: registrar{}, network: true, after: "upstream", optional: true},
	{Check: broker{}, network: true},
	{Check: clientCert{}, optional: true},
	{Check: clock{}, after: "broker", noConfig: true},
	{Check: edgeClock{}, after: "upstream", optional: true},
}

// Limits of the network checks: a technician waits for all of them, so
// they run at the same time and none waits longer than this.
const (
	upstreamTimeout = 3 * time.Second
	brokerTimeout   = 5 * time.Second
	apiTimeout      = time.Second
	// certWarn is how early an expiring certificate is reported.
	certWarn = 30 * 24 * time.Hour
)

// Options say what to check.
type Options struct {
	// Config is the configuration file; "" checks the built-in defaults.
	Config string
	// FromEnv: $LEADPORT_CONFIG named Config, which the report says (and a
	// missing file's fix is to correct or unset it).
	FromEnv bool
	// Begin, when set, gets the report's header (version, host, user,
	// config) before any check runs, so that a text report can show it
	// while the network checks wait for their answers.
	Begin func(*Report)

	// serviceUser is the packaged service's user; "" is
	// config.ServiceUser. Tests name one that does not exist, so that
	// whether this host has the real one (another package's test may be
	// installing it) does not matter.
	serviceUser string
}

// Run performs every check and returns the report, its results in the
// order of checks.
func Run(ctx context.Context, opts Options) *Report {
	env := newEnv(opts)
	v := agent.Version()
	rep := &Report{Version: v.Version, OS: v.OS, Arch: v.Arch, Config: opts.Config, Counts: map[Status]int{}, Checks: []Result{}}
	rep.Host, _ = os.Hostname()
	rep.User = env.self.name
	if rep.Config == "" {
		rep.Config = "(built-in defaults)"
	}
	if opts.Begin != nil {
		opts.Begin(rep)
	}
	for _, r := range env.run(ctx) {
		rep.Checks = append(rep.Checks, r)
		rep.Counts[r.Status]++
	}
	rep.OK = rep.Counts[Fail] == 0
	return rep
}

// Env is what the checks share.
type Env struct {
	// Config is the configuration under check, loaded by the config check;
	// nil when it failed, and then only the checks that need none run.
	Config *config.Config

	opts Options
	self account // who runs the doctor
	// owner is the account expected to own the data: the service user when
	// run as root and it exists, else whoever runs the doctor.
	owner account
	// service is the packaged service user, when it exists.
	service account

	api struct {
		once     sync.Once
		up       bool
		err      error
		deviceID string
		register agentRegister
	}

	mu sync.Mutex // guards the fields that follow
	// notBefore is the latest start of validity of a broker certificate
	// seen: a clock before it is certainly wrong.
	notBefore   time.Time
	notBeforeOf string
	// edgeOffset is the upstream's clock less ours, from the Date of its
	// answer to OPTIONS, when edgeDate.
	edgeOffset time.Duration
	edgeDate   bool
}

func newEnv(opts Options) *Env {
	env := &Env{opts: opts}
	env.self = currentAccount()
	env.owner = env.self
	if u, err := user.Lookup(cmp.Or(opts.serviceUser, config.ServiceUser)); err == nil && env.self.known {
		if a, ok := accountOf(u); ok {
			a.service = true
			env.service = a
			if env.self.uid == 0 {
				env.owner = a
			}
		}
	}
	return env
}

// run performs every check and returns the results in report order.
func (env *Env) run(ctx context.Context) []Result {
	out := named(configCheck{}, configCheck{}.Run(ctx, env))
	if env.Config == nil {
		for _, e := range checks {
			switch {
			case e.noConfig:
				out = append(out, named(e, e.Run(ctx, env))...)
			case !e.optional:
				out = append(out, Result{Name: e.Name(), Status: Skip, Found: "needs a valid config"})
			}
		}
		return out
	}
	results := make([]*pending, len(checks))
	byName := make(map[string]*pending, len(checks))
	for i, e := range checks {
		results[i] = &pending{done: make(chan struct{})}
		byName[e.Name()] = results[i]
	}
	start := func(i int) {
		e := checks[i]
		if e.after != "" {
			byName[e.after].wait()
		}
		results[i].res = named(e, e.Run(ctx, env))
		close(results[i].done)
	}
	for i, e := range checks {
		if e.network {
			go start(i)
		}
	}
	for i, e := range checks {
		if !e.network {
			start(i)
		}
		out = append(out, results[i].wait()...)
	}
	return out
}

// pending is the results of a check that may still be running.
type pending struct {
	done chan struct{} // closed once res is set
	res  []Result
}

func (p *pending) wait() []Result {
	<-p.done
	return p.res
}

// named sets the check's name on its results.
func named(c Check, rs []Result) []Result {
	for i := range rs {
		rs[i].Name = c.Name()
	}
	return rs
}

// async runs f in a goroutine; the function returned waits for its results.
func async(f func() []Result) func() []Result {
	ch := make(chan []Result, 1)
	go func() { ch <- f() }()
	return func() []Result { return <-ch }
}

// Command fleet-sim runs a fleet of simulated devices in one process
// against an MQTT broker (issue 16): each device has its own real store
// (bbolt, on tmpfs by default), its own call-signing key and identity
// document, and the agent's own sync client, and makes usage and
// violation records at set rates and answers signed commands. Only the
// SIP side is simulated.
//
//	go run ./scripts/fleet-sim -devices 1000 -nats-cluster -kill   # as make bench-fleet
//	go run ./scripts/fleet-sim -devices 50 -brokers tcp://127.0.0.1:1883
//
// With -nats-cluster it starts a three-node NATS cluster (the pinned
// nats-server that scripts/setup.sh builds) and measures, in order: the
// connect storm (every device connecting at once, until each has its
// subscriptions), the steady state (records per second reaching the
// platform, CPU and RSS of the brokers and of the simulator), a fleet-wide
// ping answered by every device, and with -kill the loss of the node that
// holds the most devices (records lost, time until every device publishes
// again). The figures go to standard output (and to -json FILE).
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	gosync "sync"
	"syscall"
	"time"

	"github.com/leadport/leadport-agent/sync/command"
	"github.com/leadport/leadport-agent/sync/synctest"
)

const platformKID = "fleet-sim-platform"

type simOptions struct {
	devices                  int
	brokers                  []string
	prefix                   string
	usageRate, violationRate float64
	duration                 time.Duration
	kill                     bool
	dir, clusterDir          string
	keep                     bool
	jsonOut                  string
	verbose                  bool
	mqttExtra                []string
	idle                     time.Duration
	stormTimeout             time.Duration
}

func main() {
	var o simOptions
	var brokers, mqttExtra string
	cluster := flag.Bool("nats-cluster", false, "start a three-node NATS cluster (JetStream, MQTT, R3) and use it")
	flag.IntVar(&o.devices, "devices", 100, "simulated devices")
	flag.StringVar(&brokers, "brokers", "", "comma-separated broker URLs (instead of -nats-cluster)")
	flag.StringVar(&o.prefix, "prefix", "leadport/v1", "MQTT topic prefix")
	flag.Float64Var(&o.usageRate, "usage-rate", 0.5, "usage records per second per device")
	flag.Float64Var(&o.violationRate, "violation-rate", 0.05, "violation records per second per device")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "length of the steady-state measurement")
	flag.DurationVar(&o.idle, "idle", 10*time.Second, "length of the idle measurement (connected, no records) after the storm; 0 skips it")
	flag.BoolVar(&o.kill, "kill", false, "with -nats-cluster: SIGKILL the node holding the most devices, then count losses and time the recovery")
	flag.StringVar(&o.dir, "dir", "", "directory for the devices' stores; default a new one under /dev/shm (tmpfs)")
	flag.StringVar(&o.clusterDir, "cluster-dir", "", "directory for the NATS nodes' JetStream stores; default a new one under $TMPDIR")
	flag.BoolVar(&o.keep, "keep", false, "keep the directories")
	flag.StringVar(&o.jsonOut, "json", "", "also write the figures as JSON to this file")
	flag.BoolVar(&o.verbose, "v", false, "log the sync clients' warnings")
	flag.StringVar(&mqttExtra, "nats-mqtt", "", `with -nats-cluster: ';'-separated lines for each node's mqtt block, e.g. 'js_api_timeout: "30s"'`)
	flag.DurationVar(&o.stormTimeout, "storm-timeout", 5*time.Minute, "how long the connect storm may take before the run goes on with the devices subscribed by then")
	flag.Parse()
	if flag.NArg() != 0 || o.devices <= 0 || (brokers == "") == !*cluster {
		fmt.Fprintln(os.Stderr, "fleet-sim: give -nats-cluster or -brokers, and -devices > 0")
		flag.Usage()
		os.Exit(2)
	}
	if brokers != "" {
		o.brokers = strings.Split(brokers, ",")
	}
	if mqttExtra != "" {
		o.mqttExtra = strings.Split(mqttExtra, ";")
	}
	if o.kill && !*cluster {
		fmt.Fprintln(os.Stderr, "fleet-sim: -kill needs -nats-cluster")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, *cluster); err != nil {
		fmt.Fprintln(os.Stderr, "fleet-sim:", err)
		os.Exit(1)
	}
}

// report holds the figures; JSON names are stable for scripts.
type report struct {
	Devices      int     `json:"devices"`
	NATSVersion  string  `json:"nats_version,omitempty"`
	OpenS        float64 `json:"open_s"`          // opening every store and key
	StormS       float64 `json:"connect_storm_s"` // all clients started at once, until each is subscribed
	StormConnect int     `json:"connect_storm_connects"`
	StormBrokers cpuRSS  `json:"connect_storm_brokers"`
	Unsubscribed int     `json:"unsubscribed_after_storm"` // devices whose command subscriptions failed
	Idle         cpuRSS  `json:"idle_brokers"`

	OfferedPerS   float64 `json:"offered_records_per_s"`
	ReceivedPerS  float64 `json:"received_records_per_s"`
	SteadyS       float64 `json:"steady_s"`
	Brokers       cpuRSS  `json:"steady_brokers"`
	Sim           cpuRSS  `json:"steady_simulator"`
	SimCPUPerDev  float64 `json:"simulator_cpu_ms_per_device_s"` // CPU ms per device per second
	SimRSSPerDevK float64 `json:"simulator_rss_kib_per_device"`

	PingAllS     float64 `json:"fleet_ping_all_answered_s"`
	PingAnswered int     `json:"fleet_ping_answered"`

	Killed          string  `json:"killed_node,omitempty"`
	OnKilled        int     `json:"devices_on_killed_node,omitempty"`
	ReconnectAllS   float64 `json:"reconnect_all_s,omitempty"` // every device of the dead node connected elsewhere
	PublishAllS     float64 `json:"publish_all_s,omitempty"`   // every device had a batch acknowledged after the kill
	PublishP50S     float64 `json:"publish_p50_s,omitempty"`   // among the devices of the dead node
	PublishP99S     float64 `json:"publish_p99_s,omitempty"`   //
	ConnectsAfterKl int     `json:"connects_after_kill"`       // connections made by the dead node's devices until all published
	Sent            int     `json:"records_sent"`              // appended by the devices
	Lost            int     `json:"records_lost"`              // appended, never received by the platform
	Duplicates      int     `json:"duplicate_copies"`          // copies beyond the first
	AppendFailures  uint64  `json:"append_failures"`           // appends the stores refused
	Undrained       int     `json:"records_left_in_outboxes"`  // at the end
	Note            string  `json:"note,omitempty"`
}

// cpuRSS is CPU used (cores: CPU seconds per second) and RSS at the end.
type cpuRSS struct {
	Cores  float64 `json:"cpu_cores"`
	RSSMiB float64 `json:"rss_mib"`
}

func run(ctx context.Context, o simOptions, cluster bool) error {
	raiseFileLimit(o.devices)
	logLevel := slog.LevelError
	if o.verbose {
		logLevel = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	r := report{Devices: o.devices}

	var err error
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("/dev/shm", "leadport-fleet-sim-"); err != nil {
			return fmt.Errorf("store directory: %w", err)
		}
	}
	if !o.keep {
		defer os.RemoveAll(o.dir)
	}

	var nc *synctest.NATSCluster
	if cluster {
		if o.clusterDir == "" {
			if o.clusterDir, err = os.MkdirTemp("", "leadport-fleet-nats-"); err != nil {
				return fmt.Errorf("cluster directory: %w", err)
			}
		}
		if !o.keep {
			defer os.RemoveAll(o.clusterDir)
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		nc, err = synctest.StartNATSCluster(sctx, synctest.NATSServerPath(), o.clusterDir, 3, o.mqttExtra...)
		cancel()
		if err != nil {
			return fmt.Errorf("nats cluster (%s; scripts/setup.sh builds it): %w", synctest.NATSServerPath(), err)
		}
		defer nc.Stop()
		o.brokers = nc.MQTTURLs()
		r.NATSVersion = synctest.NATSVersion
		say("nats cluster: %d nodes ready (%s, mqtt extra %q), stores under %s", len(nc.Nodes), synctest.NATSVersion, o.mqttExtra, o.clusterDir)
	}
	brokerPIDs := func() []int {
		if nc == nil {
			return nil
		}
		var pids []int
		for _, nd := range nc.Nodes {
			if pid := nd.PID(); pid != 0 {
				pids = append(pids, pid)
			}
		}
		return pids
	}

	// The platform reads from the last node: -kill takes the first.
	plat, err := newPlatform(rotate(o.brokers, len(o.brokers)-1), o.prefix)
	if err != nil {
		return err
	}
	defer plat.cli.Disconnect(200)

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	quietLog := log
	if !o.verbose {
		quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	say("opening %d devices under %s", o.devices, o.dir)
	t0 := time.Now()
	devs := make([]*device, 0, o.devices)
	defer func() {
		for _, d := range devs {
			d.store.Close()
		}
	}()
	for i := range o.devices {
		// Each device starts its broker list at another node, as a fleet
		// spread by configuration (or a load balancer) would.
		d, err := openDevice(i, filepath.Join(o.dir, fmt.Sprintf("dev-%05d", i)), rotate(o.brokers, i), pub, o, quietLog)
		if err != nil {
			return err
		}
		devs = append(devs, d)
	}
	r.OpenS = time.Since(t0).Seconds()

	// Connect storm: every client at once.
	runCtx, stopDevices := context.WithCancel(context.Background())
	var running gosync.WaitGroup
	defer func() {
		stopDevices()
		running.Wait()
	}()
	cpu0 := sample(brokerPIDs())
	t0 = time.Now()
	for _, d := range devs {
		running.Add(1)
		go func() { defer running.Done(); d.sync.Run(runCtx) }()
	}
	// The client does not subscribe again on a connection whose SUBSCRIBE
	// the broker refused (a NATS node that cannot create the JetStream
	// consumer in js_api_timeout answers 0x80): such a device stays
	// unsubscribed until its next connection. The storm ends when every
	// device is subscribed, or at -storm-timeout, counting those that are
	// not.
	next := time.Now().Add(10 * time.Second)
	stormErr := poll(ctx, o.stormTimeout, "every device subscribed", func() bool {
		sub := count(devs, func(d *device) bool { return d.sync.Stats().Subscribed })
		if time.Now().After(next) {
			next = time.Now().Add(10 * time.Second)
			say("connect storm: %d connected, %d subscribed after %.0f s", count(devs, func(d *device) bool { return d.sync.Stats().Connected }), sub, time.Since(t0).Seconds())
		}
		return sub == len(devs)
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.StormS = time.Since(t0).Seconds()
	r.Unsubscribed = len(devs) - count(devs, func(d *device) bool { return d.sync.Stats().Subscribed })
	if stormErr != nil {
		say("connect storm: %v; %d devices without their command subscriptions go on without them", stormErr, r.Unsubscribed)
	}
	r.StormBrokers = cpu0.since(brokerPIDs())
	for _, d := range devs {
		r.StormConnect += int(d.sync.Stats().Connects)
	}
	say("connect storm: %d devices subscribed in %.2f s (%d connections)", len(devs), r.StormS, r.StormConnect)

	// Idle: every device connected and subscribed, no records: what the
	// sessions alone cost the brokers.
	if o.idle > 0 {
		cpuB := sample(brokerPIDs())
		if err := wait(ctx, o.idle); err != nil {
			return err
		}
		r.Idle = cpuB.since(brokerPIDs())
		say("idle: brokers %.2f cores %.0f MiB with %d devices connected and no records", r.Idle.Cores, r.Idle.RSSMiB, len(devs))
	}

	// Steady state.
	var sentMu gosync.Mutex
	var sent []string // bounded by the run: rates x duration x devices
	record := func(id string) { sentMu.Lock(); sent = append(sent, id); sentMu.Unlock() }
	prodCtx, stopProducing := context.WithCancel(runCtx)
	defer stopProducing()
	var producing gosync.WaitGroup
	for _, d := range devs {
		producing.Add(1)
		go func() { defer producing.Done(); d.produce(prodCtx, o.usageRate, o.violationRate, record) }()
	}
	// A short warm-up, so the window starts with the pipeline full.
	if err := wait(ctx, 3*time.Second); err != nil {
		return err
	}
	_, copies0 := plat.counts()
	sentMu.Lock()
	sent0 := len(sent)
	sentMu.Unlock()
	cpuB, cpuS := sample(brokerPIDs()), sample([]int{os.Getpid()})
	t0 = time.Now()
	if err := wait(ctx, o.duration); err != nil {
		return err
	}
	r.SteadyS = time.Since(t0).Seconds()
	_, copies1 := plat.counts()
	sentMu.Lock()
	sent1 := len(sent)
	sentMu.Unlock()
	r.OfferedPerS = float64(sent1-sent0) / r.SteadyS
	r.ReceivedPerS = float64(copies1-copies0) / r.SteadyS
	r.Brokers, r.Sim = cpuB.since(brokerPIDs()), cpuS.since([]int{os.Getpid()})
	r.SimCPUPerDev = r.Sim.Cores * 1000 / float64(len(devs))
	r.SimRSSPerDevK = r.Sim.RSSMiB * 1024 / float64(len(devs))
	say("steady: %.0f records/s offered, %.0f received; brokers %.2f cores %.0f MiB; simulator %.2f cores %.0f MiB (%.2f ms CPU/s and %.0f KiB per device)",
		r.OfferedPerS, r.ReceivedPerS, r.Brokers.Cores, r.Brokers.RSSMiB, r.Sim.Cores, r.Sim.RSSMiB, r.SimCPUPerDev, r.SimRSSPerDevK)

	// A fleet-wide command: every device answers.
	ping := command.Command{ID: "fleet-sim-ping", Type: command.TypePing, Device: command.AllDevices,
		IssuedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(time.Hour)}
	tok, err := command.Sign(ping, platformKID, priv)
	if err != nil {
		return err
	}
	t0 = time.Now()
	if err := plat.publish(o.prefix+"/fleet/cmd", []byte(tok)); err != nil {
		return err
	}
	// Devices without their subscriptions cannot answer.
	want := len(devs) - r.Unsubscribed
	perr := poll(ctx, 2*time.Minute, "the subscribed devices' ping receipts", func() bool { return plat.answered(ping.ID) >= want })
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.PingAllS, r.PingAnswered = time.Since(t0).Seconds(), plat.answered(ping.ID)
	say("fleet ping: answered by %d of %d devices in %.2f s", r.PingAnswered, len(devs), r.PingAllS)
	if perr != nil {
		say("fleet ping: %v", perr)
	}

	if o.kill {
		if err := killNode(ctx, nc, devs, &r); err != nil {
			return err
		}
	}

	// Drain: stop producing, wait until every outbox is empty and the
	// platform has every record.
	stopProducing()
	producing.Wait()
	sentMu.Lock()
	all := slices.Clone(sent)
	sentMu.Unlock()
	r.Sent = len(all)
	for _, d := range devs {
		r.AppendFailures += d.failed.Load()
	}
	err = poll(ctx, 3*time.Minute, "every outbox empty and every record at the platform", func() bool {
		for _, d := range devs {
			if d.pending() != 0 {
				return false
			}
		}
		return plat.missing(all) == 0
	})
	r.Lost = plat.missing(all)
	for _, d := range devs {
		r.Undrained += d.pending()
	}
	distinct, copies := plat.counts()
	r.Duplicates = copies - distinct
	say("records: %d sent, %d lost, %d duplicate copies, %d left in outboxes, %d appends refused", r.Sent, r.Lost, r.Duplicates, r.Undrained, r.AppendFailures)
	if err != nil {
		r.Note = err.Error()
	}
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if werr := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); werr != nil {
			return werr
		}
	}
	if r.Lost > 0 {
		return fmt.Errorf("%d records lost", r.Lost)
	}
	return err
}

// killNode SIGKILLs the node holding the most devices while they produce,
// and times until each of its devices is connected through another node
// and until every device of the fleet has had a batch acknowledged since.
func killNode(ctx context.Context, nc *synctest.NATSCluster, devs []*device, r *report) error {
	on := map[*synctest.NATSNode][]*device{}
	for _, d := range devs {
		if nd := nc.Node(d.sync.Stats().Broker); nd != nil {
			on[nd] = append(on[nd], d)
		}
	}
	var victim *synctest.NATSNode
	// Never the last node: the platform reads from it.
	for _, nd := range nc.Nodes[:len(nc.Nodes)-1] {
		if victim == nil || len(on[nd]) > len(on[victim]) {
			victim = nd
		}
	}
	hit := on[victim]
	connects := map[*device]uint64{}
	for _, d := range hit {
		connects[d] = d.sync.Stats().Connects
	}
	r.Killed, r.OnKilled = victim.Name, len(hit)
	if err := nc.Kill(victim); err != nil {
		return err
	}
	killed := time.Now()
	say("killed %s (SIGKILL) with %d of %d devices on it", victim.Name, len(hit), len(devs))
	reconnected := map[*device]bool{}
	published := map[*device]time.Duration{}
	err := poll(ctx, 5*time.Minute, "every device publishing again after the kill", func() bool {
		for _, d := range devs {
			if _, ok := published[d]; ok {
				continue
			}
			s := d.sync.Stats()
			if _, mine := connects[d]; mine && !reconnected[d] && s.Connected && nc.Node(s.Broker) != victim {
				reconnected[d] = true
				if len(reconnected) == len(hit) {
					r.ReconnectAllS = time.Since(killed).Seconds()
				}
			}
			if s.LastSync.After(killed) {
				published[d] = time.Since(killed)
			}
		}
		return len(published) == len(devs)
	})
	r.PublishAllS = time.Since(killed).Seconds()
	var ds []time.Duration
	for _, d := range hit {
		ds = append(ds, published[d])
		r.ConnectsAfterKl += int(d.sync.Stats().Connects - connects[d])
	}
	slices.Sort(ds)
	if len(ds) > 0 {
		r.PublishP50S = ds[len(ds)/2].Seconds()
		r.PublishP99S = ds[min(len(ds)-1, len(ds)*99/100)].Seconds()
	}
	say("after the kill: the %d devices of %s reconnected within %.2f s; publishing p50 %.2f s, p99 %.2f s; the whole fleet within %.2f s (%d connections)",
		len(hit), victim.Name, r.ReconnectAllS, r.PublishP50S, r.PublishP99S, r.PublishAllS, r.ConnectsAfterKl)
	return err
}

func rotate(s []string, n int) []string {
	n %= len(s)
	return append(slices.Clone(s[n:]), s[:n]...)
}

func count(devs []*device, f func(*device) bool) int {
	n := 0
	for _, d := range devs {
		if f(d) {
			n++
		}
	}
	return n
}

// poll checks cond every 50 ms until it holds, the deadline passes or ctx
// ends.
func poll(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", d, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// wait lets the simulation run for d (a measurement window, not a wait
// for a state).
func wait(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func say(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// raiseFileLimit lifts the soft limit on open files to the hard one: each
// device holds its bbolt file and a socket.
func raiseFileLimit(devices int) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	if need := uint64(devices)*3 + 100; l.Cur < need {
		fmt.Fprintf(os.Stderr, "fleet-sim: warning: %d open files allowed, %d devices need about %d (ulimit -n)\n", l.Cur, devices, need)
	}
}

var errNoProc = errors.New("no /proc")

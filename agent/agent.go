package agent

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	gosync "sync"
	"time"

	"github.com/leadport/leadport-agent/agent/config"
	"github.com/leadport/leadport-agent/detect/dialog"
	"github.com/leadport/leadport-agent/detect/rules"
	"github.com/leadport/leadport-agent/detect/sipproxy"
	"github.com/leadport/leadport-agent/store"
	lpsync "github.com/leadport/leadport-agent/sync"
)

// Agent is the running daemon.
type Agent struct {
	cfg      *config.Config
	log      *slog.Logger
	store    *store.Store
	deviceID string
	proxy    *sipproxy.Proxy
	rules    *rules.Engine
	tracker  *dialog.Tracker
	sync     *lpsync.Client
	signer   *callSigner
	durable  durableCalls
	started  time.Time
	recent   *recentViolations

	mu       gosync.Mutex
	sink     *recordSink // set by Run
	sipUp    bool        // the proxy's listeners are up
	sipErr   string      // why the proxy stopped
	upstream *upstreamCheck

	// OnBacklog, when set before Run, is called when work waits for a
	// CPU (sipproxy.Options.OnBacklog): run gives the scheduler its
	// processors back at once.
	OnBacklog func()
}

// Open brings the agent up to the point where it can serve: the store is
// open and the device id known.
func Open(cfg *config.Config, log *slog.Logger) (*Agent, error) {
	st, err := store.Open(store.Options{
		Dir:            cfg.DataDir,
		KeyFile:        cfg.Store.KeyFile,
		MaxSize:        int64(cfg.Store.MaxSize),
		DefaultCountry: cfg.DefaultCountry,
		Logger:         log,
	})
	if err != nil {
		return nil, err
	}
	id := cfg.DeviceID
	if id == "" {
		if id, err = st.DeviceID(newDeviceID); err != nil {
			st.Close()
			return nil, fmt.Errorf("device id: %w", err)
		}
	}
	a := &Agent{cfg: cfg, log: log, store: st, deviceID: id, started: time.Now(), recent: &recentViolations{max: 200}}
	if a.signer, err = newCallSigner(cfg.DataDir, id, st, commandHandler{a}.PolicyVersion, log); err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

// newDeviceID makes an id that fits the protocol's [A-Za-z0-9._-]{1,64}.
func newDeviceID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return "lp-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// DeviceID is the id the device uses towards the platform.
func (a *Agent) DeviceID() string { return a.deviceID }

// Store is the agent's store.
func (a *Agent) Store() *store.Store { return a.store }

// Run serves until ctx is done, then closes everything it opened.
func (a *Agent) Run(ctx context.Context) error {
	st, err := a.store.Stats()
	if err != nil {
		return err
	}
	pending := 0
	for _, t := range st.Outbox {
		pending += t.Pending
	}
	a.log.Info("agent running", "version", Version().Version, "device_id", a.deviceID,
		"store", st.Path, "store_bytes", st.SizeBytes, "store_cap_bytes", st.MaxBytes,
		"pending_records", pending, "lines", len(a.cfg.Lines))

	// runCtx ends with ctx, or when Run returns early: sync and the
	// upstream checks must stop before the store closes.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	sink := newRecordSink(a.store, a.log)
	a.mu.Lock()
	a.sink = sink
	a.mu.Unlock()
	sinkCtx, stopSink := context.WithCancel(context.Background())
	go sink.run(sinkCtx)
	defer func() {
		stopSink()
		sink.wait(10 * time.Second)
		a.Close()
	}()

	proxy, err := a.newProxy(sink)
	if err != nil {
		return err
	}
	a.proxy = proxy
	if a.rules != nil {
		a.restorePolicyUsage()
		defer a.savePolicyUsage()
		go every(ctx, time.Minute, a.savePolicyUsage)
	}
	client, err := a.newSync()
	if err != nil {
		return err
	}
	a.sync = client
	syncDone := make(chan struct{})
	if client == nil {
		close(syncDone)
		a.log.Warn("sync off: no mqtt.brokers configured; records wait in the store")
	} else {
		sink.onFlush = client.Wake
		go func() { client.Run(runCtx); close(syncDone) }()
	}
	// The local API: a failure here must not stop the call path, so it
	// is logged, not returned.
	apiCtx, stopAPI := context.WithCancel(ctx)
	apiDone := make(chan struct{})
	go func() {
		defer close(apiDone)
		if err := a.newAPI().Serve(apiCtx, a.cfg.API.Socket, a.cfg.API.Listen); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("local API not available", "err", err)
		}
	}()
	// Also when the proxy fails and Run returns without ctx ending.
	defer func() { stopAPI(); <-apiDone }()
	errc := make(chan error, 1)
	if proxy == nil {
		a.log.Warn("sip proxy off: sip.upstream is not set")
	} else {
		go func() {
			err := proxy.Run(ctx)
			a.mu.Lock()
			a.sipUp = false
			if err != nil {
				a.sipErr = err.Error()
			} else {
				a.sipErr = "stopped"
			}
			a.mu.Unlock()
			errc <- err
		}()
		go func() {
			select {
			case <-proxy.Ready():
				a.mu.Lock()
				a.sipUp = a.sipErr == ""
				a.mu.Unlock()
				a.pingUpstream(runCtx, 30*time.Second)
			case <-ctx.Done():
			}
		}()
	}
	select {
	case <-ctx.Done():
		a.log.Info("agent stopping", "reason", context.Cause(ctx))
		if proxy != nil {
			<-errc // the sink then checkpoints the calls still up
		}
		<-syncDone
		return nil
	case err := <-errc:
		// The proxy failed: stop the rest before the store closes.
		stopRun()
		<-syncDone
		return err
	}
}

// Rules is the rules engine, nil when the proxy is not configured.
func (a *Agent) Rules() *rules.Engine { return a.rules }

// Proxy is the running SIP proxy, nil when not configured.
func (a *Agent) Proxy() *sipproxy.Proxy { return a.proxy }

// Close releases what Open acquired.
func (a *Agent) Close() error {
	if err := a.store.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

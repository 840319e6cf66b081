package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/leadport/leadport-agent/agent"
	"github.com/leadport/leadport-agent/detect/passport"
	"github.com/leadport/leadport-agent/store"
	lpsync "github.com/leadport/leadport-agent/sync"
	"github.com/leadport/leadport-agent/sync/command"
)

// device is one simulated PBX: the agent's own store (bbolt, its device
// key sealing personal fields), its call-signing key and identity document,
// and the agent's sync client with its command verifier. Only the SIP side
// is simulated: records are made at set rates instead of from calls.
type device struct {
	id    string
	dir   string
	store *store.Store
	sync  *lpsync.Client
	key   *passport.FileKey
	h     *handler

	appended atomic.Uint64
	failed   atomic.Uint64 // appends the store refused
}

// openDevice opens the device's store and key in dir and prepares its
// sync client; run starts it.
func openDevice(i int, dir string, brokers []string, platformKey ed25519.PublicKey, o simOptions, log *slog.Logger) (*device, error) {
	d := &device{dir: dir}
	st, err := store.Open(store.Options{Dir: dir, DefaultCountry: "1", Logger: log})
	if err != nil {
		return nil, fmt.Errorf("device %d: store: %w", i, err)
	}
	d.store = st
	// The store keeps the id, as the agent's does when the config has
	// none; sim ids are readable and keep the protocol's alphabet (no
	// '.', which Debian's nats-server 2.9 would refuse).
	if d.id, err = st.DeviceID(func() string { return fmt.Sprintf("lp-sim-%05d", i) }); err != nil {
		st.Close()
		return nil, fmt.Errorf("device %d: id: %w", i, err)
	}
	if d.key, _, err = passport.LoadOrCreateKey(filepath.Join(dir, agent.IdentityKeyFile)); err != nil {
		st.Close()
		return nil, fmt.Errorf("device %d: call-signing key: %w", i, err)
	}
	d.h = &handler{st: st}
	d.sync, err = lpsync.New(lpsync.Options{
		Brokers:     brokers,
		TopicPrefix: o.prefix,
		DeviceID:    d.id,
		Store:       st,
		Verifier:    &command.Verifier{Keys: map[string]ed25519.PublicKey{platformKID: platformKey}, Device: d.id},
		Handler:     d.h,
		Status:      d.status,
		Identity:    func() lpsync.Identity { return agent.IdentityOf(d.id, d.key) },
		Logger:      log.With("device", d.id),
	})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("device %d: sync: %w", i, err)
	}
	return d, nil
}

// status is the device's status document: what the agent publishes, less
// the SIP and host parts a simulation has no figures for.
func (d *device) status() lpsync.Status {
	s := lpsync.Status{Version: "fleet-sim", PolicyVersion: d.h.PolicyVersion()}
	if st, err := d.store.Stats(); err == nil {
		s.Outbox = map[string]lpsync.OutboxStatus{}
		for t, ts := range st.Outbox {
			s.Outbox[t] = lpsync.OutboxStatus{Pending: ts.Pending}
		}
	}
	return s
}

// produce appends usage and violation records at the given rates (per
// second, Poisson arrivals) until ctx ends, and reports each record's id
// to sent.
func (d *device) produce(ctx context.Context, usageRate, violationRate float64, sent func(id string)) {
	var wg gosync.WaitGroup
	run := func(rate float64, make func(n int) store.Payload) {
		defer wg.Done()
		if rate <= 0 {
			return
		}
		for n := 0; ; n++ {
			wait := time.Duration(rand.ExpFloat64() / rate * float64(time.Second))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			ids, err := d.store.Append(ctx, make(n))
			if err != nil {
				if ctx.Err() == nil {
					d.failed.Add(1)
				}
				continue
			}
			d.appended.Add(uint64(len(ids)))
			for _, id := range ids {
				sent(id)
			}
			d.sync.Wake()
		}
	}
	wg.Add(2)
	go run(usageRate, d.usage)
	go run(violationRate, d.violation)
	wg.Wait()
}

// usage is a call of a minute or so to a number that differs per call.
func (d *device) usage(n int) store.Payload {
	end := time.Now().UTC()
	dur := 30 + rand.Float64()*120
	return &store.Usage{Line: "+15551230001", Direction: "outbound", Remote: fmt.Sprintf("+1212555%04d", rand.IntN(10000)),
		StartedAt: end.Add(-time.Duration(dur+5) * time.Second), AnsweredAt: end.Add(-time.Duration(dur) * time.Second),
		EndedAt: end, DurationS: dur, Disposition: "answered", FinalStatus: 200, CallID: fmt.Sprintf("%s-call-%d", d.id, n)}
}

// violation is a pacing block with the figures a real one carries.
func (d *device) violation(n int) store.Payload {
	ev, _ := json.Marshal(map[string]any{"attempts_per_minute": 9 + rand.IntN(5), "limit": 6})
	return &store.Violation{Rule: "pacing.rate", Line: "+15551230001", Action: "blocked", At: time.Now().UTC(),
		CallID: fmt.Sprintf("%s-call-v%d", d.id, n), Evidence: ev, Numbers: []string{fmt.Sprintf("+1212555%04d", rand.IntN(10000))},
		Confidence: "certain"}
}

// pending is the number of records in the device's outbox.
func (d *device) pending() int {
	st, err := d.store.Stats()
	if err != nil {
		return -1
	}
	n := 0
	for _, ts := range st.Outbox {
		n += ts.Pending
	}
	return n
}

// handler carries out commands on the device's store as the agent does
// for those a simulation can: erase, ping, policy (version only).
type handler struct {
	st       *store.Store
	mu       gosync.Mutex // guards the fields that follow
	version  int64
	executed int
}

func (h *handler) Execute(_ context.Context, c *command.Command) lpsync.Outcome {
	h.mu.Lock()
	h.executed++
	h.mu.Unlock()
	result := func(v any, err error) lpsync.Outcome {
		if err != nil {
			return lpsync.Outcome{Status: lpsync.Failed, Reason: err.Error()}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return lpsync.Outcome{Status: lpsync.Failed, Reason: err.Error()}
		}
		return lpsync.Outcome{Status: lpsync.Done, Result: b}
	}
	switch c.Type {
	case command.TypePing:
		return lpsync.Outcome{Status: lpsync.Done}
	case command.TypeErase:
		if a := c.Erase(); a.All {
			return result(h.st.EraseAll())
		} else {
			return result(h.st.EraseSubject(a.Subject))
		}
	case command.TypePolicy:
		var p struct {
			Version int64 `json:"version"`
		}
		if err := json.Unmarshal(c.Args, &p); err != nil {
			return lpsync.Outcome{Status: lpsync.Rejected, Reason: string(command.Malformed)}
		}
		h.mu.Lock()
		h.version = p.Version
		h.mu.Unlock()
		return result(map[string]int64{"version": p.Version}, nil)
	}
	return lpsync.Outcome{Status: lpsync.Rejected, Reason: string(command.Unsupported)}
}

func (h *handler) PolicyVersion() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.version
}

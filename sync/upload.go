package sync

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/oklog/ulid/v2"

	"github.com/leadport/leadport-agent/store"
)

// uploadOrder: receipts first (small, and the platform waits on them),
// usage last (the bulk).
var uploadOrder = []store.Type{store.TypeReceipt, store.TypeViolation, store.TypeConsent, store.TypeUsage}

// flight is a batch published and not yet acknowledged: the records of
// one type from first to last (sequences), n of them.
type flight struct {
	token       mqtt.Token
	typ         store.Type
	first, last uint64
	n           int
	epoch       uint64
	buf         []byte // the payload, reused once the batch is settled
}

// uploader drains the outbox while connected: per type in order, batches
// of up to BatchBytes, at most MaxInFlight unacknowledged. A batch's
// records are acknowledged in the store once its PUBACK arrived on the
// connection it was sent on; anything else sends them again (the platform
// de-duplicates on record ids).
func (c *Client) uploader(ctx context.Context) {
	var passed uint64 // the connection whose barrier the upload has waited for
	// A batch buffer kept from one pass to the next: the outbox is looked
	// at every Idle and after every append, mostly to find nothing or a
	// few records, and each look allocated BatchBytes per record type.
	var kept []byte
	for {
		epoch, ok := c.waitConnected(ctx)
		if !ok {
			return
		}
		// Commands queued at the broker first (barrier.go); once per
		// connection.
		if epoch != passed {
			if !c.waitBarrier(ctx, epoch) {
				return
			}
			passed = epoch
			if c.epoch.Load() != epoch {
				continue
			}
		}
		sent, err := c.drain(ctx, epoch, &kept)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.setErr(err)
			c.log.Warn("upload interrupted; unacknowledged batches will be sent again", "err", err)
			// Let the connection loop notice, or the broker catch up.
			select {
			case <-time.After(c.o.BackoffMin):
			case <-ctx.Done():
				return
			}
			continue
		}
		if sent > 0 {
			continue
		}
		select {
		case <-c.wake:
		case <-time.After(c.o.Idle):
		case <-ctx.Done():
			return
		}
	}
}

// drain sends what is pending now and returns the number of records
// acknowledged. It holds the gate's read lock throughout, and gives it up
// as soon as an erase waits, after its batches in flight are
// acknowledged: so every batch read before an erase has reached the
// broker when the erase runs, and none read before it goes after it.
// *kept is a batch buffer to start with, and one to keep when it ends.
func (c *Client) drain(ctx context.Context, epoch uint64, kept *[]byte) (int, error) {
	c.gate.RLock()
	defer c.gate.RUnlock()
	// Within the gate: the keys it keeps must not outlive an erase.
	rd := c.o.Store.NewDrain()
	var inflight []flight
	acked := 0
	// Delivered records leave the store in groups: one transaction (one
	// fsync) per up to MaxInFlight batches, not one per batch, and by
	// sequence range, not one delete per record (store/ack.go). Until then
	// a crash only sends them again.
	var delivered []store.Range
	records := 0
	flush := func() error {
		if len(delivered) == 0 {
			return nil
		}
		if _, err := c.o.Store.AckRanges(delivered...); err != nil {
			return fmt.Errorf("acknowledging %d records in the store: %w", records, err)
		}
		acked += records
		c.mu.Lock()
		c.stats.Batches += uint64(len(delivered))
		c.stats.Records += uint64(records)
		c.stats.LastSync = c.o.Now()
		c.mu.Unlock()
		delivered, records = delivered[:0], 0
		return nil
	}
	// Payload buffers (BatchBytes each) go round: paho holds one until its
	// PUBACK, and a fresh one per batch was a tenth of the drain's CPU in
	// zeroing and collecting them. At most MaxInFlight+1 during a pass,
	// one kept after it.
	var spare [][]byte
	if *kept != nil {
		spare, *kept = append(spare, *kept), nil
	}
	defer func() {
		if len(spare) > 0 {
			*kept = spare[len(spare)-1][:0]
		}
	}()
	settle := func(f flight) error {
		if !f.token.WaitTimeout(c.o.AckTimeout) {
			return fmt.Errorf("no PUBACK within %s", c.o.AckTimeout)
		}
		if err := f.token.Error(); err != nil {
			return err
		}
		if c.epoch.Load() != f.epoch {
			return errLost
		}
		spare = append(spare, f.buf[:0])
		delivered = append(delivered, store.Range{Type: f.typ, First: f.first, Last: f.last})
		records += f.n
		if len(delivered) >= c.o.MaxInFlight {
			return flush()
		}
		return nil
	}
	defer func() {
		// What was delivered before an interruption still leaves the
		// store.
		if err := flush(); err != nil {
			c.log.Error("delivered records not acknowledged in the store; they will be sent again", "err", err)
		}
	}()
	for _, t := range uploadOrder {
		var after uint64
		for ctx.Err() == nil && c.erasing.Load() == 0 {
			if c.epoch.Load() != epoch {
				return acked, errLost
			}
			var buf []byte
			if len(spare) > 0 {
				buf, spare = spare[len(spare)-1], spare[:len(spare)-1]
			}
			f, last, n, err := c.publishNext(rd, buf, t, after, epoch)
			if err != nil {
				return acked, err
			}
			if n == 0 {
				spare = append(spare, f.buf) // nothing read: the buffer goes back
				break
			}
			after = last
			inflight = append(inflight, f)
			if len(inflight) >= c.o.MaxInFlight {
				if err := settle(inflight[0]); err != nil {
					return acked, err
				}
				inflight = inflight[1:]
			}
		}
	}
	for _, f := range inflight {
		if err := settle(f); err != nil {
			return acked, err
		}
	}
	if err := flush(); err != nil {
		return acked, err
	}
	return acked, ctx.Err()
}

// publishNext packs the next records of type t after seq `after` into one
// batch of at most BatchBytes (a larger record goes alone) and publishes
// it. With nothing to send, the flight holds only the buffer, emptied.
func (c *Client) publishNext(rd *store.Drain, buf []byte, t store.Type, after, epoch uint64) (flight, uint64, int, error) {
	if buf == nil {
		buf = make([]byte, 0, c.o.BatchBytes+4096)
	}
	buf = fmt.Appendf(buf, `{"v":1,"device":%q,"batch":%q,"records":[`, c.o.DeviceID, ulid.MustNew(ulid.Timestamp(c.o.Now()), rand.Reader).String())
	// Room for the closing "]}".
	buf, rg, n, err := rd.AppendPendingJSON(buf, t, after, c.o.BatchBytes-2)
	if err != nil {
		return flight{}, 0, 0, fmt.Errorf("reading the %s outbox: %w", t, err)
	}
	if n == 0 {
		return flight{buf: buf[:0]}, 0, 0, nil
	}
	buf = append(buf, "]}"...)
	tok := c.cli.Publish(c.topic(t.String()), 1, false, buf)
	// The range from the first record read to the last one sent holds
	// exactly the records in the batch: sequences are never reused, and
	// the gate keeps erases from changing them meanwhile.
	return flight{token: tok, typ: t, first: rg.First, last: rg.Last, n: n, epoch: epoch, buf: buf}, rg.Last, n, nil
}

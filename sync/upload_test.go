package sync_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store/storetest"
	"github.com/leadport/leadport-agent/sync/synctest"
)

// TestIdleUploaderAllocates: with nothing to send, the uploader looks at
// the outbox every Idle (50 ms here) without allocating a batch buffer
// each time. It took BatchBytes (256 KiB) per record type per look, 1 MiB
// every half second at the default Idle, for a box with 48 MiB in all.
func TestIdleUploaderAllocates(t *testing.T) {
	br := synctest.StartBroker(t)
	db := storetest.Open(t)
	syncClient(t, db, newKeys(t), &handler{db: db}, br.URL(), nil)
	// The barrier, then a first look that finds nothing.
	time.Sleep(500 * time.Millisecond)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	const idle = time.Second // 20 looks
	time.Sleep(idle)
	runtime.ReadMemStats(&m1)
	// The broker runs in this process too; both stay far below one
	// batch buffer a look.
	if got := m1.TotalAlloc - m0.TotalAlloc; got > 2<<20 {
		t.Errorf("%d KiB allocated in %s of idle uploads, want at most 2048", got>>10, idle)
	}
}

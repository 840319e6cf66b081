package store_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

// mappedKiB is how much of path this process has resident through its
// maps (the Rss of its entries in /proc/self/smaps).
func mappedKiB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[len(fields)-1] == path
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			total += kb
		}
	}
	return total
}

// The store drops bbolt's map from the resident set without changing a
// byte read through it: records read before and after a trim are the
// same, and the trim takes the pages the reads touched out of the RSS.
func TestTrimMap(t *testing.T) {
	db := storetest.Open(t)
	var batch []store.Payload
	for i := range 20000 {
		batch = append(batch, usage(fmt.Sprintf("+1555%07d", i)))
		if len(batch) == 500 {
			mustAppend(t, db, batch...)
			batch = batch[:0]
		}
	}
	readAll := func() []byte {
		var all []byte
		var after uint64
		for {
			out, r, n, err := db.AppendPendingJSON(nil, store.TypeUsage, after, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				return all
			}
			all, after = append(all, out...), r.Last
		}
	}
	before := readAll()
	path, err := filepath.EvalSymlinks(filepath.Join(db.Dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	mapped := mappedKiB(t, path)
	if mapped < 1024 {
		t.Fatalf("%d KiB of the store resident after reading 20,000 records: the test reads too little to see a trim", mapped)
	}
	// A trim of its own (a commit's), and the one a merge step of the
	// index runs makes once it has read them.
	for _, trim := range []struct {
		name string
		do   func(*store.Store) error
	}{{"trim", store.TrimMapForTest}, {"merge step", store.StepRunsForTest}} {
		if trim.name != "trim" {
			readAll()
			if mapped = mappedKiB(t, path); mapped < 1024 {
				t.Fatalf("%d KiB resident after reading again", mapped)
			}
		}
		if err := trim.do(db.Store); err != nil {
			t.Fatalf("%s: %v", trim.name, err)
		}
		if left := mappedKiB(t, path); left > mapped/4 {
			t.Errorf("%s: %d KiB resident after it, %d before", trim.name, left, mapped)
		}
		if after := readAll(); !bytes.Equal(before, after) {
			t.Errorf("%s: records read after it differ from before (%d against %d bytes)", trim.name, len(after), len(before))
		}
	}
}

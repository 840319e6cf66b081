package store_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
	"github.com/leadport/leadport-agent/store/storetest"
)

var (
	crashAppends = flag.Int("crash.appends", 50, "SIGKILLs of a process appending to the store (make test-long raises it)")
	crashErases  = flag.Int("crash.erases", 30, "SIGKILLs of a process erasing a subject and compacting")
)

// The crash tests run this test binary again as the process to kill; the
// environment tells the child which part to play.
const helperEnv = "LEADPORT_STORE_CRASH_HELPER"

func TestCrashHelper(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("runs only as the child of a crash test")
	}
	dir := os.Getenv("LEADPORT_STORE_CRASH_DIR")
	opts := store.Options{Dir: dir, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)}
	if point := os.Getenv("LEADPORT_STORE_CRASH_POINT"); point != "" {
		store.WithCrashPoint(&opts, func(name string) {
			if name == point {
				fmt.Println("at", name)
				time.Sleep(time.Minute) // wait here for the SIGKILL
			}
		})
	}
	if n, _ := strconv.Atoi(os.Getenv("LEADPORT_STORE_CRASH_MERGE_EVERY")); n > 0 {
		store.WithMergeEvery(&opts, n)
	}
	if n, _ := strconv.Atoi(os.Getenv("LEADPORT_STORE_CRASH_RUN_STEP")); n > 0 {
		store.WithRunStep(&opts, n)
	}
	s, err := store.Open(opts)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	fmt.Println("opened")
	switch role {
	case "append":
		var iter int
		fmt.Sscan(os.Getenv("LEADPORT_STORE_CRASH_ITER"), &iter)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Bounded, so a child whose parent died cannot run forever.
				for j := range 20000 {
					remote := fmt.Sprintf("+1555%03d%d%04d", iter%1000, g, j)
					ids, err := s.Append(context.Background(), usage(remote))
					if err != nil {
						fmt.Println("append:", err)
						os.Exit(2)
					}
					// Reported only once Append returned: durable.
					mu.Lock()
					fmt.Printf("%s %s\n", ids[0], remote)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	case "counter":
		// Ranges of 8 handed out one value at a time, as the call signer
		// does; bounded, so an orphaned child ends.
		for range 5000 {
			first, err := s.ReserveCounter("passport", 8)
			if err != nil {
				fmt.Println("reserve:", err)
				os.Exit(2)
			}
			for v := first; v < first+8; v++ {
				fmt.Printf("ctr %d\n", v)
			}
		}
	case "erase":
		if _, err := s.EraseSubject(eraseSubject); err != nil {
			fmt.Println("erase:", err)
			os.Exit(2)
		}
		fmt.Println("erased")
	case "erase-all":
		if _, err := s.EraseAll(); err != nil {
			fmt.Println("erase all:", err)
			os.Exit(2)
		}
		fmt.Println("erased")
	}
	s.Close()
	os.Exit(0)
}

// child runs the helper in dir and returns its output lines as they come.
func child(t *testing.T, role, dir string, iter int, env ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), helperEnv+"="+role, "LEADPORT_STORE_CRASH_DIR="+dir, fmt.Sprintf("LEADPORT_STORE_CRASH_ITER=%d", iter))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
	}()
	return cmd, lines
}

// next returns the next line, failing the test if none comes in time.
func next(t *testing.T, lines <-chan string) (string, bool) {
	t.Helper()
	select {
	case l, ok := <-lines:
		return l, ok
	case <-time.After(30 * time.Second):
		t.Fatal("child said nothing for 30s")
		return "", false
	}
}

// An append reported as returned must survive a SIGKILL at any moment, and
// the file must pass bbolt's check every time. The child merges its index
// every 16 records and its runs 8 entries a step, so kills land in index
// merges and in merges of runs half written too: the runs must keep their
// rules (Check), and an export must find every record of a subject.
func TestAppendSurvivesSIGKILL(t *testing.T) {
	kills := *crashAppends
	if testing.Short() {
		kills = min(kills, 5)
	}
	dir := t.TempDir()
	acked := map[string]string{} // id -> remote
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for i := range kills {
		cmd, lines := child(t, "append", dir, i, "LEADPORT_STORE_CRASH_MERGE_EVERY=16", "LEADPORT_STORE_CRASH_RUN_STEP=8")
		if l, _ := next(t, lines); l != "opened" {
			cmd.Process.Kill()
			t.Fatalf("iteration %d: child: %s", i, l)
		}
		killAfter := rng.IntN(400)
		for n := 0; ; n++ {
			if n == killAfter {
				cmd.Process.Kill() // SIGKILL
			}
			l, ok := next(t, lines)
			if !ok {
				break
			}
			id, remote, found := strings.Cut(l, " ")
			if !found {
				t.Fatalf("iteration %d: child: %s", i, l)
			}
			acked[id] = remote
		}
		cmd.Wait()

		s, err := store.Open(store.Options{Dir: dir, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("iteration %d: reopen after SIGKILL: %v", i, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("iteration %d: bbolt check: %v", i, err)
		}
		recs, err := s.Pending(store.TypeUsage, store.ReadOptions{})
		if err != nil {
			t.Fatalf("iteration %d: read back: %v", i, err)
		}
		got := map[string]string{}
		for _, r := range recs {
			p, err := r.Decode()
			if err != nil {
				t.Fatalf("iteration %d: decode %s: %v", i, r.ID, err)
			}
			got[r.ID] = p.(*store.Usage).Remote
		}
		checked := 0
		for id, remote := range acked {
			if got[id] != remote {
				t.Fatalf("iteration %d: record %s reported durable is %q after SIGKILL, want it back", i, id, got[id])
			}
			if checked < 3 { // map order: different subjects each time
				checked++
				exp, err := s.Export(remote)
				if err != nil || !slices.ContainsFunc(exp, func(r store.Record) bool { return r.ID == id }) {
					t.Fatalf("iteration %d: export of %s = %d records, %v; want record %s (the subject index lost it)", i, remote, len(exp), err, id)
				}
			}
		}
		if err := s.Check(); err != nil {
			t.Fatalf("iteration %d: check after exports: %v", i, err)
		}
		s.Close()
	}
	t.Logf("%d SIGKILLs, %d acknowledged records all present", kills, len(acked))
}

const eraseSubject = "+15551234567"

// A SIGKILL at any moment of an erase leaves the store holding the data from
// before the erase or from after it, complete, and nothing in between.
func TestEraseSurvivesSIGKILL(t *testing.T) {
	kills := *crashErases
	if testing.Short() {
		kills = min(kills, 5)
	}
	const nA, nB = 2000, 20000
	template := t.TempDir()
	tdb, err := store.Open(store.Options{Dir: template, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]store.Payload, 0, 500)
	flush := func() {
		if _, err := tdb.Append(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	batch = append(batch, consent(eraseSubject))
	for i := range nA + nB {
		remote := eraseSubject
		if i >= nA {
			remote = fmt.Sprintf("+1555%07d", i)
		}
		if batch = append(batch, usage(remote)); len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	tdb.Close()
	// The forensic scan finds the subject in the file the kills start from:
	// "erased" below is a finding, not a scan that sees nothing.
	storetest.AssertFound(t, template, eraseSubject)

	// Calibrate: how long the whole erase takes, so kills spread over it.
	calib := time.Now()
	dir := copyDir(t, template)
	cmd, lines := child(t, "erase", dir, 0)
	for l := range lines {
		if strings.Contains(l, ":") {
			t.Fatalf("calibration run: %s", l)
		}
	}
	cmd.Wait()
	span := time.Since(calib)

	rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	var pre, post, midScrub int
	// Every other kill lands at a named point of the erase, the rest at a
	// random moment of it.
	// The first lands before the commit: the data from before the erase
	// must come back whole, whatever the scheduling of the random kills.
	points := []string{"erase:before-commit", "erase:committed", "scrub:metas-flipped", "scrub:half-zeroed", "scrub:synced"}
	for i := range kills {
		dir := copyDir(t, template)
		point := ""
		if i%2 == 1 {
			point = points[(i/2)%len(points)]
		}
		cmd, lines := child(t, "erase", dir, i, "LEADPORT_STORE_CRASH_POINT="+point)
		var timer *time.Timer
		if point == "" {
			timer = time.AfterFunc(time.Duration(rng.Int64N(int64(span))), func() { cmd.Process.Kill() })
		}
		reached := false
		for l := range lines {
			if point != "" && l == "at "+point {
				reached = true
				cmd.Process.Kill()
			}
		}
		cmd.Wait()
		if timer != nil {
			timer.Stop()
		}
		if point != "" && !reached {
			t.Fatalf("iteration %d: the erase never reached %s", i, point)
		}
		if store.CompactPendingForTest(t, filepath.Join(dir, store.FileName)) {
			midScrub++ // killed after the erase committed, before its scrub ended
		}

		s, err := store.Open(store.Options{Dir: dir, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("iteration %d: reopen: %v", i, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("iteration %d: bbolt check: %v", i, err)
		}
		exp, err := s.Export(eraseSubject)
		if err != nil {
			t.Fatalf("iteration %d: export: %v", i, err)
		}
		usageRecs, _ := s.Pending(store.TypeUsage, store.ReadOptions{})
		consents, _ := s.Pending(store.TypeConsent, store.ReadOptions{})
		if len(usageRecs) != nA+nB {
			t.Fatalf("iteration %d: %d usage records, want %d whatever happened", i, len(usageRecs), nA+nB)
		}
		others := 0
		for _, r := range usageRecs {
			p, _ := r.Decode()
			if u := p.(*store.Usage); u.Remote != "" && u.Remote != eraseSubject {
				others++
			}
		}
		if others != nB {
			t.Fatalf("iteration %d: %d other subjects' records intact, want %d", i, others, nB)
		}
		switch {
		case len(exp) == nA+1 && len(consents) == 1:
			if point != "" && point != "erase:before-commit" {
				t.Fatalf("iteration %d: killed at %s, after the erase committed, yet the subject is back", i, point)
			}
			pre++
			s.Close()
		case len(exp) == 0 && len(consents) == 0:
			if point == "erase:before-commit" {
				t.Fatalf("iteration %d: killed before the erase committed, yet the subject is gone", i)
			}
			post++
			s.Close()
			storetest.AssertErased(t, dir, eraseSubject)
		default:
			s.Close()
			t.Fatalf("iteration %d: half an erase: export %d records, %d consents", i, len(exp), len(consents))
		}
	}
	t.Logf("%d SIGKILLs over a %v erase: %d left the data before it, %d after it; %d landed between the erase's commit and the end of its scrub", kills, span.Round(time.Millisecond), pre, post, midScrub)
	if kills >= 10 && (pre == 0 || post == 0 || midScrub == 0) {
		t.Errorf("kills missed part of the erase (pre %d, post %d, mid-scrub %d): the test is not exercising what it claims", pre, post, midScrub)
	}
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, name := range []string{store.FileName, store.KeyFileName} {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// EraseAll frees most of the file, so it takes the other way to no trace:
// a compacted copy renamed over the store. A SIGKILL at any point leaves
// everything or nothing.
func TestEraseAllSurvivesSIGKILL(t *testing.T) {
	template := t.TempDir()
	tdb, err := store.Open(store.Options{Dir: template, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	batch := make([]store.Payload, 0, 500)
	for i := range n {
		batch = append(batch, usage(fmt.Sprintf("+1555%07d", i)))
		if len(batch) == cap(batch) {
			if _, err := tdb.Append(context.Background(), batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	watched := []string{"+15550000000", "+15550004999"}
	tdb.Close()
	for _, w := range watched {
		storetest.AssertFound(t, template, w)
	}

	points := []string{"erase:committed", "compact:copied", "compact:renamed", ""}
	kills := 8
	if testing.Short() {
		kills = 4
	}
	for i := range kills {
		point := points[i%len(points)]
		dir := copyDir(t, template)
		cmd, lines := child(t, "erase-all", dir, i, "LEADPORT_STORE_CRASH_POINT="+point)
		reached := false
		for l := range lines {
			if point == "" || l == "at "+point {
				reached = true
				cmd.Process.Kill() // "" : as soon as it has opened
			}
		}
		cmd.Wait()
		if !reached {
			t.Fatalf("iteration %d: the erase never reached %q", i, point)
		}
		s, err := store.Open(store.Options{Dir: dir, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("iteration %d (%s): reopen: %v", i, point, err)
		}
		if err := s.Check(); err != nil {
			t.Fatalf("iteration %d (%s): bbolt check: %v", i, point, err)
		}
		recs, err := s.Pending(store.TypeUsage, store.ReadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		switch {
		case len(recs) == n && point == "":
		case len(recs) == 0 && point != "":
			for _, w := range watched {
				storetest.AssertErased(t, dir, w)
			}
		default:
			t.Fatalf("iteration %d: killed at %q: %d records left, want %d before the erase or 0 after", i, point, len(recs), n)
		}
	}
}

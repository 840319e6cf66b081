package store_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/leadport/leadport-agent/store"
)

const ackHelperEnv = "LEADPORT_STORE_ACK_HELPER"

// TestAckCrashHelper is the process TestAckRangesSurviveSIGKILL kills: it
// drains the usage outbox as the uploader does, a range at a time, while
// appending, and says what it acknowledges before and after.
func TestAckCrashHelper(t *testing.T) {
	dir := os.Getenv(ackHelperEnv)
	if dir == "" {
		t.Skip("runs only as the child of a crash test")
	}
	s, err := store.Open(store.Options{Dir: dir, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	fmt.Println("opened")
	go func() {
		for i := 0; ; i++ {
			if _, err := s.Append(context.Background(), usage(fmt.Sprintf("+1555%07d", 5000000+i%997))); err != nil {
				return
			}
		}
	}()
	var after uint64
	for range 5000 { // bounded, so an orphaned child ends
		recs, err := s.Pending(store.TypeUsage, store.ReadOptions{After: after, Limit: 1 + rand.IntN(300)})
		if err != nil {
			fmt.Println("pending:", err)
			os.Exit(2)
		}
		if len(recs) == 0 {
			continue
		}
		first, last := recs[0].Seq, recs[len(recs)-1].Seq
		fmt.Printf("acking %d %d\n", first, last)
		if _, err := s.AckRanges(store.Range{Type: store.TypeUsage, First: first, Last: last}); err != nil {
			fmt.Println("ack:", err)
			os.Exit(2)
		}
		fmt.Printf("acked %d %d\n", first, last)
		after = last
	}
	os.Exit(0)
}

// A SIGKILL at any moment of a drain that acknowledges by range loses no
// record: every record is either acknowledged (in a range whose AckRanges
// returned, or the one in progress) or still there, readable, and found by
// its subject; bbolt's check passes.
func TestAckRangesSurviveSIGKILL(t *testing.T) {
	kills := 12
	if testing.Short() {
		kills = 4
	}
	dir := t.TempDir()
	s, err := store.Open(store.Options{Dir: dir, DefaultCountry: "1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// More than a merge's worth, so ranges cover merged records, whose
	// index entries go through the ack log.
	for i := 0; i < 40000; i += 500 {
		batch := make([]store.Payload, 500)
		for j := range batch {
			batch[j] = usage(fmt.Sprintf("+1555%07d", (i+j)%997))
		}
		if _, err := s.Append(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	type span struct{ first, last uint64 }
	var acked []span
	for i := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestAckCrashHelper$")
		cmd.Env = append(os.Environ(), ackHelperEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		if !sc.Scan() || sc.Text() != "opened" {
			cmd.Process.Kill()
			t.Fatalf("iteration %d: child: %s", i, sc.Text())
		}
		killAfter := 1 + rng.IntN(60)
		var inProgress *span
		for n := 0; sc.Scan(); n++ {
			if n == killAfter {
				cmd.Process.Kill() // SIGKILL
			}
			var sp span
			var word string
			if _, err := fmt.Sscan(sc.Text(), &word, &sp.first, &sp.last); err != nil {
				t.Fatalf("iteration %d: child: %s", i, sc.Text())
			}
			switch word {
			case "acking":
				inProgress = &sp
			case "acked":
				acked = append(acked, sp)
				inProgress = nil
			}
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
		held := map[uint64]bool{}
		bySubject := map[string]int{}
		for _, r := range recs {
			p, err := r.Decode()
			if err != nil {
				t.Fatalf("iteration %d: decode %s: %v", i, r.ID, err)
			}
			held[r.Seq] = true
			bySubject[p.(*store.Usage).Remote]++
		}
		in := func(seq uint64, sps []span) bool {
			for _, sp := range sps {
				if seq >= sp.first && seq <= sp.last {
					return true
				}
			}
			return false
		}
		top := recs[len(recs)-1].Seq
		for seq := uint64(1); seq <= top; seq++ {
			ackedHere := in(seq, acked)
			if ackedHere && held[seq] {
				t.Fatalf("iteration %d: record %d acknowledged, still held", i, seq)
			}
			if !ackedHere && !held[seq] && (inProgress == nil || !in(seq, []span{*inProgress})) {
				t.Fatalf("iteration %d: record %d neither acknowledged nor held: lost", i, seq)
			}
		}
		if inProgress != nil && !held[inProgress.first] {
			// The range in progress committed: the child would have
			// said so a moment later.
			acked = append(acked, *inProgress)
		}
		// The index finds every held record of a subject, and no other.
		for _, subject := range []string{"+15550000007", "+15550000500"} {
			exp, err := s.Export(subject)
			if err != nil || len(exp) != bySubject[subject] {
				t.Fatalf("iteration %d: export %s = %d records, %v; want %d", i, subject, len(exp), err, bySubject[subject])
			}
		}
		s.Close()
	}
	t.Logf("%d SIGKILLs during range acknowledgements, %d ranges acknowledged, no record lost", kills, len(acked))
}

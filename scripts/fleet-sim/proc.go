package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuSample is the CPU time of a set of processes at an instant (Linux
// /proc; figures are 0 elsewhere).
type cpuSample struct {
	at  time.Time
	cpu map[int]time.Duration
}

func sample(pids []int) cpuSample {
	s := cpuSample{at: time.Now(), cpu: map[int]time.Duration{}}
	for _, pid := range pids {
		if d, err := cpuTime(pid); err == nil {
			s.cpu[pid] = d
		}
	}
	return s
}

// since is the CPU the processes used since the sample, in cores, and
// their RSS now. A process gone since (a killed node) counts up to then
// only through the processes still there.
func (s cpuSample) since(pids []int) cpuRSS {
	var used time.Duration
	var rss int64
	for _, pid := range pids {
		d, err := cpuTime(pid)
		if err != nil {
			continue
		}
		used += d - s.cpu[pid]
		rss += rssBytes(pid)
	}
	return cpuRSS{Cores: used.Seconds() / time.Since(s.at).Seconds(), RSSMiB: float64(rss) / (1 << 20)}
}

// cpuTime is utime+stime of a process, from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, errNoProc
	}
	// The command name may hold spaces: the fields start after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errNoProc
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errNoProc
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	// USER_HZ is 100 on every Linux this runs on.
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

func rssBytes(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

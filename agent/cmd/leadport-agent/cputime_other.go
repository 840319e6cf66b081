//go:build !unix

package main

import "time"

// cpuTime: not read on this platform; adaptProcs leaves GOMAXPROCS alone.
func cpuTime() time.Duration { return -1 }

package main

import (
	"os"
	"testing"
)

// TestMain removes the binary the end-to-end tests built. (The doctor's
// checks that start SIP user agents, and so set sipgo's package logger,
// are package doctor's tests: its TestMain sets that logger first.)
func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

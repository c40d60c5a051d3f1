//go:build unix

package main

import (
	"testing"
	"time"
)

// waitFor polls cond until it holds, and fails the test naming what it
// waited for when timeout passes first. Tests wait on a condition they can
// observe (a log line, a status, a file) rather than sleeping for a guess.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// poll reports whether cond held within timeout, checking it every 10ms.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

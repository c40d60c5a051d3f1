package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startProfile writes a CPU profile of the whole run to the file named by
// SCANAGENT_CPUPROFILE, for benchmarks (docs/BENCHMARKS.md); without it,
// nothing. The returned function ends the profile.
func startProfile() func() {
	path := os.Getenv("SCANAGENT_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scanagent: SCANAGENT_CPUPROFILE:", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

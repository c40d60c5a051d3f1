//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// consoleClients opens n event streams of the technician console
// (/api/events) on the agent, as n browsers showing the page would, and
// reads them until ctx is done. What they received is in the returned
// function's answer.
func consoleClients(ctx context.Context, addr string, n int) (wait func() (bytes, scanEvents int64, err error), _ error) {
	var bytesIn, scans atomic.Int64
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	opened := make(chan error, n)
	for range n {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/api/events", nil)
			if err != nil {
				opened <- err
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				opened <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				opened <- fmt.Errorf("console stream: %s", resp.Status)
				return
			}
			opened <- nil
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			for sc.Scan() {
				line := sc.Bytes()
				bytesIn.Add(int64(len(line) + 1))
				if string(line) == "event: scans" {
					scans.Add(1)
				}
			}
			if err := sc.Err(); err != nil && ctx.Err() == nil {
				errMu.Lock()
				firstErr = err
				errMu.Unlock()
			}
		})
	}
	for range n {
		if err := <-opened; err != nil {
			return nil, err
		}
	}
	return func() (int64, int64, error) {
		wg.Wait()
		return bytesIn.Load(), scans.Load(), firstErr
	}, nil
}

// consoleDropped reads how many console events the agent dropped (a
// client too slow for the scans).
func consoleDropped(addr string) (uint64, error) {
	resp, err := http.Get("http://" + addr + "/api/console")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var s struct {
		Dropped uint64 `json:"dropped"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return 0, fmt.Errorf("console snapshot: %w", err)
	}
	return s.Dropped, nil
}

func consoleRow(l LiveResult) string {
	if l.ConsoleClients == 0 {
		return ""
	}
	return strings.TrimSpace(fmt.Sprintf("%d streams: %.1f MB received, %d scan batches, %d events dropped",
		l.ConsoleClients, float64(l.ConsoleBytes)/1e6, l.ConsoleBatches, l.ConsoleDropped))
}

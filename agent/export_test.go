package agent

import "time"

// SetHTTPLimits replaces the HTTP server's timeouts (all four set to
// timeout) and caps, so tests need not wait for the defaults. Call it
// before Run.
func SetHTTPLimits(a *Agent, timeout time.Duration, maxHeaderBytes, maxConns int) {
	a.http = httpLimits{readHeader: timeout, read: timeout, write: timeout, idle: timeout,
		maxHeaderBytes: maxHeaderBytes, maxConns: maxConns}
}

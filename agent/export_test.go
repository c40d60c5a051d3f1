package agent

import (
	"time"

	"github.com/scanagent/scanagent/agent/httpapi"
)

// SetHTTPLimits replaces the HTTP server's timeouts (all four set to
// timeout) and caps, so tests need not wait for the defaults. Call it
// before Run.
func SetHTTPLimits(a *Agent, timeout time.Duration, maxHeaderBytes, maxConns int) {
	a.api = a.newAPI(httpapi.Limits{ReadHeader: timeout, Read: timeout, Write: timeout, Idle: timeout,
		MaxHeaderBytes: maxHeaderBytes, MaxConns: maxConns})
}

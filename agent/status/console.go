package status

// ConfigLoad is the result of the last load or reload of the
// configuration file, as the technician console shows it.
type ConfigLoad struct {
	Path string `json:"path,omitempty"`
	At   string `json:"at"`
	// Kind is "start" (the file the agent started with) or "reload"; By
	// says what asked for a reload: "signal" (SIGHUP) or "console".
	Kind string `json:"kind"`
	By   string `json:"by,omitempty"`
	OK   bool   `json:"ok"`
	// Errors are why a reload was refused (the running configuration
	// stays), each with its file:line:col.
	Errors   []string `json:"errors,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// RestartNeeded lists the sections that changed but apply only after
	// a restart (agent, mqtt, buffer, http, log.format).
	RestartNeeded []string `json:"restart_needed,omitempty"`
}

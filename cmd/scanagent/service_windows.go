//go:build windows

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

const (
	serviceName        = "scanagent"
	serviceDisplayName = "scanagent parcel scan agent"
	serviceDescription = "Reads barcode scanners and scales on serial ports, stores every scan durably and forwards it over MQTT."

	// How long start and stop wait for the service to get there. Stopping
	// includes the agent's own shutdown (flushing the backlog store).
	serviceStartWait = 30 * time.Second
	serviceStopWait  = 60 * time.Second

	// The service's stderr (the agent's log) goes to this file in the
	// data directory; at each start a file over the limit is moved to
	// scanagent.log.1, replacing the previous one.
	serviceLogName  = "scanagent.log"
	serviceLogLimit = 10 << 20

	// Event IDs in the Application log (source "scanagent").
	eventStarted = 1
	eventStopped = 2
	eventFailed  = 3
)

const serviceUsage = `usage: scanagent service <command>

commands (install, uninstall, start and stop need an elevated prompt):
  install [-c FILE]  install the Windows service, started automatically at boot
                     (default config %ProgramData%\scanagent\scanagent.yaml)
  uninstall          stop and remove the service (data and config are kept)
  start              start the service
  stop               stop the service
  status             print the service state

"scanagent service COMMAND -h" shows its flags and an example.
`

// serviceDir is %ProgramData%\scanagent: the default data directory, the
// default config file's directory and the service's log directory.
func serviceDir() string {
	dir := os.Getenv("ProgramData")
	if dir == "" {
		dir = `C:\ProgramData`
	}
	return filepath.Join(dir, "scanagent")
}

// serviceHelp is each service subcommand's -h.
var serviceHelp = map[string]help{
	"install": {
		usage:   "scanagent service install [-c FILE]",
		summary: "Install the Windows service, started at boot (elevated prompt).",
		example: `scanagent service install -c C:\ProgramData\scanagent\scanagent.yaml`,
	},
	"uninstall": {
		usage:   "scanagent service uninstall",
		summary: "Stop and remove the Windows service; data and config are kept (elevated prompt).",
		example: "scanagent service uninstall",
	},
	"start": {
		usage:   "scanagent service start",
		summary: "Start the Windows service (elevated prompt).",
		example: "scanagent service start",
	},
	"stop": {
		usage:   "scanagent service stop",
		summary: "Stop the Windows service (elevated prompt).",
		example: "scanagent service stop",
	},
	"status": {
		usage:   "scanagent service status",
		summary: "Print the Windows service's state.",
		example: "scanagent service status",
	},
}

func cmdService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, serviceUsage)
		return usagef("service: missing command (install, uninstall, start, stop or status)")
	}
	sub, args := args[0], args[1:]
	if sub == "help" || isHelpFlag(sub) {
		fmt.Fprint(stdout, serviceUsage)
		return nil
	}
	h, ok := serviceHelp[sub]
	if !ok {
		fmt.Fprint(stderr, serviceUsage)
		return usagef("service: unknown command %q", sub)
	}
	fs := newFlags("service "+sub, h, stdout, stderr)
	var path *string
	if sub == "install" {
		path = fs.String("c", filepath.Join(serviceDir(), "scanagent.yaml"), "config `FILE`")
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	switch sub {
	case "install":
		return serviceInstall(*path, stdout)
	case "uninstall":
		return serviceUninstall(ctx, stdout)
	case "start":
		return serviceStart(ctx, stdout)
	case "stop":
		return serviceStop(ctx, stdout)
	default:
		return serviceStatus(stdout)
	}
}

// scmError names the fix for the usual failure: not running elevated.
func scmError(action string, err error) error {
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%s: access denied: run this from an elevated prompt (right-click the terminal, \"Run as administrator\")", action)
	}
	return fmt.Errorf("%s: %w", action, err)
}

func connectSCM() (*mgr.Mgr, error) {
	m, err := mgr.Connect()
	if err != nil {
		return nil, scmError("connect to the Windows service manager", err)
	}
	return m, nil
}

// withService runs fn with the installed service opened with full access.
func withService(fn func(s *mgr.Service) error) error {
	m, err := connectSCM()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := openService(m)
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(s)
}

// openService opens the installed service with full access.
func openService(m *mgr.Mgr) (*mgr.Service, error) {
	s, err := m.OpenService(serviceName)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		return nil, fmt.Errorf("service %s is not installed (install it with: scanagent service install -c FILE)", serviceName)
	}
	if err != nil {
		return nil, scmError("open service "+serviceName, err)
	}
	return s, nil
}

func serviceInstall(configPath string, stdout io.Writer) error {
	configPath, err := filepath.Abs(configPath)
	if err != nil {
		return usagef("config path: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the scanagent binary: %w", err)
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	dir := serviceDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return scmError("create "+dir, err)
	}

	m, err := connectSCM()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		return fmt.Errorf("service %s is already installed; to reinstall, run: scanagent service uninstall", serviceName)
	}
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName:  serviceDisplayName,
		Description:  serviceDescription,
		StartType:    mgr.StartAutomatic,
		ErrorControl: mgr.ErrorNormal,
	}, "run", "-c", configPath)
	if err != nil {
		if errors.Is(err, windows.ERROR_SERVICE_MARKED_FOR_DELETE) {
			return fmt.Errorf("install service %s: the previous installation is still being removed; close the Services console (services.msc) and any Event Viewer, then retry", serviceName)
		}
		return scmError("install service "+serviceName, err)
	}
	defer s.Close()

	// Restart 5 s after a failure, up to 3 times within a day; the SCM
	// repeats the last action for every further failure, hence the
	// trailing "none". Failures include the agent exiting with an error
	// (non-crash failures), not only the process dying.
	// The service works without them, so a failure here is a warning.
	restart := mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: 5 * time.Second}
	actions := []mgr.RecoveryAction{restart, restart, restart, {Type: mgr.NoAction}}
	recovery := "restart after 5s, up to 3 times a day"
	err = s.SetRecoveryActions(actions, uint32((24 * time.Hour).Seconds()))
	if err == nil {
		err = s.SetRecoveryActionsOnNonCrashFailures(true)
	}
	if err != nil {
		recovery = "not set"
		fmt.Fprintf(stdout, "warning: set the service's recovery actions: %v\n"+
			"  set them by hand: sc.exe failure %s reset= 86400 actions= restart/5000/restart/5000/restart/5000\n"+
			"  and: sc.exe failureflag %s 1\n", err, serviceName, serviceName)
	}

	evErr := eventlog.InstallAsEventCreate(serviceName, eventlog.Error|eventlog.Warning|eventlog.Info)
	if evErr != nil && !strings.Contains(evErr.Error(), "already exists") {
		s.Delete()
		return scmError("register the event log source "+serviceName, evErr)
	}

	fmt.Fprintf(stdout, "installed service %s (%s), automatic start\n", serviceName, serviceDisplayName)
	fmt.Fprintf(stdout, "  command: %s run -c %s\n", exe, configPath)
	fmt.Fprintf(stdout, "  on failure: %s\n", recovery)
	fmt.Fprintf(stdout, "  log: %s; start, stop and failures also in Event Viewer > Windows Logs > Application (source %s)\n",
		filepath.Join(dir, serviceLogName), serviceName)
	if _, err := os.Stat(configPath); err != nil {
		fmt.Fprintf(stdout, "note: %s does not exist yet: create it, check it with `scanagent check -c %s`, then run `scanagent service start`\n", configPath, configPath)
	} else {
		fmt.Fprintf(stdout, "check the config with `scanagent check -c %s`, then run `scanagent service start`\n", configPath)
	}
	return nil
}

func serviceUninstall(ctx context.Context, stdout io.Writer) error {
	return withService(func(s *mgr.Service) error {
		return uninstall(ctx, s, stdout)
	})
}

func uninstall(ctx context.Context, s *mgr.Service, stdout io.Writer) error {
	st, err := s.Query()
	if err != nil {
		return scmError("query service "+serviceName, err)
	}
	if st.State != svc.Stopped {
		if err := stopAndWait(ctx, s, stdout); err != nil {
			return err
		}
	}
	if err := s.Delete(); err != nil {
		return scmError("delete service "+serviceName, err)
	}
	if err := eventlog.Remove(serviceName); err != nil && !errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
		fmt.Fprintf(stdout, "warning: remove the event log source %s: %v\n", serviceName, err)
	}
	fmt.Fprintf(stdout, "removed service %s; data, config and log in %s are kept\n", serviceName, serviceDir())
	return nil
}

func serviceStart(ctx context.Context, stdout io.Writer) error {
	return withService(func(s *mgr.Service) error {
		return start(ctx, s, stdout)
	})
}

func start(ctx context.Context, s *mgr.Service, stdout io.Writer) error {
	if err := s.Start(); err != nil {
		if errors.Is(err, windows.ERROR_SERVICE_ALREADY_RUNNING) {
			fmt.Fprintf(stdout, "service %s is already running\n", serviceName)
			return nil
		}
		if errors.Is(err, windows.ERROR_SERVICE_DISABLED) {
			return fmt.Errorf("start service %s: it is disabled; enable it in services.msc or run: sc.exe config %s start= auto", serviceName, serviceName)
		}
		return scmError("start service "+serviceName, err)
	}
	st, err := waitState(ctx, s, svc.Running, serviceStartWait)
	if err == nil && st.State == svc.Running {
		// The service reports running before the agent has read its
		// config: catch one that fails at once.
		st, err = waitState(ctx, s, svc.Stopped, 2*time.Second)
	}
	if err != nil {
		return err
	}
	switch st.State {
	case svc.Running:
		fmt.Fprintf(stdout, "service %s is running (pid %d)\n", serviceName, st.ProcessId)
		return nil
	case svc.Stopped:
		return fmt.Errorf("service %s stopped right after starting%s; see %s and the Application event log (source %s)",
			serviceName, exitSuffix(st), filepath.Join(serviceDir(), serviceLogName), serviceName)
	}
	return fmt.Errorf("service %s is still %s after %s", serviceName, stateName(st.State), serviceStartWait)
}

func serviceStop(ctx context.Context, stdout io.Writer) error {
	return withService(func(s *mgr.Service) error {
		return stopAndWait(ctx, s, stdout)
	})
}

func stopAndWait(ctx context.Context, s *mgr.Service, stdout io.Writer) error {
	st, err := s.Control(svc.Stop)
	if errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
		fmt.Fprintf(stdout, "service %s is not running\n", serviceName)
		return nil
	}
	if err != nil && !errors.Is(err, windows.ERROR_SERVICE_CANNOT_ACCEPT_CTRL) {
		return scmError("stop service "+serviceName, err)
	}
	if st.State != svc.Stopped {
		if st, err = waitState(ctx, s, svc.Stopped, serviceStopWait); err != nil {
			return err
		}
		if st.State != svc.Stopped {
			return fmt.Errorf("service %s is still %s after %s", serviceName, stateName(st.State), serviceStopWait)
		}
	}
	fmt.Fprintf(stdout, "service %s stopped\n", serviceName)
	return nil
}

// waitState polls until the service reaches want or Stopped, or timeout.
func waitState(ctx context.Context, s *mgr.Service, want svc.State, timeout time.Duration) (svc.Status, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.Query()
		if err != nil {
			return st, scmError("query service "+serviceName, err)
		}
		if st.State == want || st.State == svc.Stopped || time.Now().After(deadline) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// serviceStatus needs no elevation: it asks only for query rights.
func serviceStatus(stdout io.Writer) error {
	h, err := windows.OpenSCManager(nil, nil, windows.SC_MANAGER_CONNECT)
	if err != nil {
		return scmError("connect to the Windows service manager", err)
	}
	m := &mgr.Mgr{Handle: h}
	defer m.Disconnect()
	name, _ := windows.UTF16PtrFromString(serviceName)
	sh, err := windows.OpenService(h, name, windows.SERVICE_QUERY_STATUS|windows.SERVICE_QUERY_CONFIG)
	if errors.Is(err, windows.ERROR_SERVICE_DOES_NOT_EXIST) {
		fmt.Fprintf(stdout, "service %s: not installed\n", serviceName)
		return errSilent{Code: 3}
	}
	if err != nil {
		return scmError("open service "+serviceName, err)
	}
	s := &mgr.Service{Name: serviceName, Handle: sh}
	defer s.Close()
	st, err := s.Query()
	if err != nil {
		return scmError("query service "+serviceName, err)
	}
	line := fmt.Sprintf("service %s: %s", serviceName, stateName(st.State))
	if st.State == svc.Running {
		line += fmt.Sprintf(" (pid %d)", st.ProcessId)
	}
	if st.State == svc.Stopped {
		line += exitSuffix(st)
	}
	fmt.Fprintln(stdout, line)
	if c, err := s.Config(); err == nil {
		start := map[uint32]string{mgr.StartAutomatic: "automatic", mgr.StartManual: "manual", mgr.StartDisabled: "disabled"}[c.StartType]
		if c.DelayedAutoStart {
			start += " (delayed)"
		}
		fmt.Fprintf(stdout, "  start: %s\n  command: %s\n", start, c.BinaryPathName)
	}
	fmt.Fprintf(stdout, "  log: %s\n", filepath.Join(serviceDir(), serviceLogName))
	if st.State != svc.Running {
		return errSilent{Code: 3} // like systemctl status: not running
	}
	return nil
}

func stateName(s svc.State) string {
	switch s {
	case svc.Stopped:
		return "stopped"
	case svc.StartPending:
		return "starting"
	case svc.StopPending:
		return "stopping"
	case svc.Running:
		return "running"
	case svc.ContinuePending:
		return "continuing"
	case svc.PausePending:
		return "pausing"
	case svc.Paused:
		return "paused"
	}
	return fmt.Sprintf("state %d", s)
}

// exitSuffix describes a stopped service's last exit code, if any.
func exitSuffix(st svc.Status) string {
	switch {
	case st.Win32ExitCode == uint32(windows.ERROR_SERVICE_SPECIFIC_ERROR):
		return fmt.Sprintf(", last exit code %d", st.ServiceSpecificExitCode)
	case st.Win32ExitCode != 0 && st.Win32ExitCode != uint32(windows.ERROR_SERVICE_NEVER_STARTED):
		return fmt.Sprintf(", last exit: %v", windows.Errno(st.Win32ExitCode))
	}
	return ""
}

// runAsService runs run as the Windows service when the process was started
// by the service manager; otherwise it returns handled=false at once.
//
// In the service, stderr (the agent's log, and a crash's stack trace) is
// redirected to %ProgramData%\scanagent\scanagent.log by replacing
// os.Stderr before run is called: run must use os.Stderr as it is when run
// is called, not a copy taken before runAsService.
func runAsService(run func(ctx context.Context) error) (handled bool, err error) {
	isService, err := svc.IsWindowsService()
	if err != nil {
		return false, fmt.Errorf("detect Windows service: %w", err)
	}
	if !isService {
		return false, nil
	}
	h := &serviceHandler{run: run, result: make(chan error, 1)}
	h.elog, _ = eventlog.Open(serviceName) // nil: no event log, keep running
	if h.elog != nil {
		defer h.elog.Close()
	}
	h.logPath, h.logStart = redirectStderr()
	if err := svc.Run(serviceName, h); err != nil {
		h.event(eventFailed, "error", "scanagent could not run as a service: "+err.Error())
		return true, fmt.Errorf("run as Windows service: %w", err)
	}
	select {
	case err = <-h.result:
	default:
	}
	return true, err
}

type serviceHandler struct {
	run      func(ctx context.Context) error
	result   chan error
	elog     *eventlog.Log
	logPath  string // "" when stderr could not be redirected
	logStart int64  // size of the log file when this run started
}

func (h *serviceHandler) Execute(_ []string, r <-chan svc.ChangeRequest, s chan<- svc.Status) (svcSpecificEC bool, exitCode uint32) {
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	s <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.run(ctx) }()
	s <- svc.Status{State: svc.Running, Accepts: accepts}
	h.event(eventStarted, "info", fmt.Sprintf("scanagent %s started (pid %d)%s", version, os.Getpid(), h.logHint()))

	// While stopping, tell the SCM every 2 s that the agent is still
	// shutting down (flushing), so it does not give up on the service.
	ticker := time.NewTicker(2 * time.Second)
	ticker.Stop()
	defer ticker.Stop()
	var (
		stopping   bool
		checkpoint uint32
		tick       <-chan time.Time
		err        error
	)
wait:
	for {
		select {
		case err = <-done:
			break wait
		case c := <-r:
			switch c.Cmd {
			case svc.Interrogate:
				s <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				if !stopping {
					stopping = true
					cancel()
					checkpoint++
					s <- svc.Status{State: svc.StopPending, CheckPoint: checkpoint, WaitHint: 10000}
					ticker.Reset(2 * time.Second)
					tick = ticker.C
				}
			}
		case <-tick:
			checkpoint++
			s <- svc.Status{State: svc.StopPending, CheckPoint: checkpoint, WaitHint: 10000}
		}
	}
	h.result <- err
	code := 0
	if err != nil {
		code = exitCodeOf(err)
	}
	switch {
	case code != 0:
		msg := fmt.Sprintf("scanagent failed (exit code %d)", code)
		if !errors.As(err, new(errSilent)) { // else already in the log
			msg += ": " + err.Error()
		}
		if tail := h.logTail(2000); tail != "" {
			msg += "\n\nlast log lines:\n" + tail
		}
		h.event(eventFailed, "error", msg+h.logHint())
		return true, uint32(code)
	case stopping:
		h.event(eventStopped, "info", "scanagent stopped")
	default:
		h.event(eventStopped, "warning", "scanagent exited without being asked to stop"+h.logHint())
	}
	return false, 0
}

// exitCodeOf is exitCode without printing.
func exitCodeOf(err error) int { return exitCode(err, io.Discard) }

func (h *serviceHandler) event(id uint32, kind, msg string) {
	if h.elog == nil {
		return
	}
	switch kind {
	case "error":
		h.elog.Error(id, msg)
	case "warning":
		h.elog.Warning(id, msg)
	default:
		h.elog.Info(id, msg)
	}
}

func (h *serviceHandler) logHint() string {
	if h.logPath == "" {
		return ""
	}
	return "\nlog: " + h.logPath
}

// logTail returns up to n bytes from the end of what this run wrote to the
// log file, starting at a line boundary.
func (h *serviceHandler) logTail(n int64) string {
	if h.logPath == "" {
		return ""
	}
	f, err := os.Open(h.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	from := max(h.logStart, fi.Size()-n)
	buf := make([]byte, fi.Size()-from)
	if _, err := f.ReadAt(buf, from); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	s := string(buf)
	if from > h.logStart {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return strings.TrimRight(s, "\r\n")
}

// redirectStderr points os.Stderr and the process's standard error handle
// (used by the Go runtime for a crash's stack trace) at the log file; a
// service has no console, so stderr would otherwise be lost. It returns
// the file's path and its size before this run, or "" if it failed.
func redirectStderr() (string, int64) {
	dir := serviceDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0
	}
	path := filepath.Join(dir, serviceLogName)
	if fi, err := os.Stat(path); err == nil && fi.Size() > serviceLogLimit {
		os.Rename(path, path+".1") // replaces the previous .1
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return "", 0
	}
	var start int64
	if fi, err := f.Stat(); err == nil {
		start = fi.Size()
	}
	if err := windows.SetStdHandle(windows.STD_ERROR_HANDLE, windows.Handle(f.Fd())); err != nil {
		f.Close()
		return "", 0
	}
	os.Stderr = f
	fmt.Fprintf(f, "---- %s scanagent %s service start (pid %d)\n", time.Now().UTC().Format(time.RFC3339), version, os.Getpid())
	return path, start
}

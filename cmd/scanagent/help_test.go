package main

import (
	"strings"
	"testing"
)

// commands are the commands the list names, each with a flag its -h shows.
var commands = []struct{ args, flag string }{
	{"run", "-c FILE"},
	{"check", "-c FILE"},
	{"status", "-addr address"},
	{"ports", "-json"},
	{"monitor", "-probe"},
	{"tap", "-follow"},
	{"buffer stats", "-json"},
	{"buffer export", "-parked"},
	{"buffer import", "-in FILE"},
	{"version", ""},
}

// TestCommandList: bare "scanagent" prints the command list on stderr as a
// usage error (exit 2, like the go command); -h, --help and help print it
// on stdout, exit 0.
func TestCommandList(t *testing.T) {
	code, out, errs := runCmd(t)
	if code != 2 || out != "" || errs != usageText {
		t.Errorf("bare: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	for _, arg := range []string{"-h", "--help", "-help", "help"} {
		code, out, errs := runCmd(t, arg)
		if code != 0 || out != usageText || errs != "" {
			t.Errorf("%s: exit %d\nstdout: %s\nstderr: %s", arg, code, out, errs)
		}
	}
	for _, c := range append(commands, struct{ args, flag string }{"demo", ""}, struct{ args, flag string }{"service", ""}) {
		if !strings.Contains(usageText, "\n  "+strings.Fields(c.args)[0]+" ") {
			t.Errorf("the command list does not name %s:\n%s", c.args, usageText)
		}
	}
}

// TestCommandHelp: each command's -h prints what it does, its flags and an
// example on stdout (exit 0); "help COMMAND" prints the same.
func TestCommandHelp(t *testing.T) {
	for _, c := range commands {
		args := append(strings.Fields(c.args), "-h")
		code, out, errs := runCmd(t, args...)
		example := strings.Contains(out, "\nexample:\n  scanagent "+c.args) ||
			strings.Contains(out, "\nexample:\n  sudo -u scanagent scanagent "+c.args)
		if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: scanagent "+c.args) || !example {
			t.Errorf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errs)
			continue
		}
		if c.flag != "" && (!strings.Contains(out, "\nflags:\n") || !strings.Contains(out, c.flag)) {
			t.Errorf("%v does not show the flag %s:\n%s", args, c.flag, out)
		}
		code, out2, _ := runCmd(t, append([]string{"help"}, strings.Fields(c.args)...)...)
		if code != 0 || out2 != out {
			t.Errorf("help %s: exit %d\n%s", c.args, code, out2)
		}
	}
	code, out, _ := runCmd(t, "buffer", "-h")
	if code != 0 || !strings.Contains(out, "usage: scanagent buffer <stats|export|import>") {
		t.Errorf("buffer -h: exit %d\n%s", code, out)
	}
	if code, _, errs := runCmd(t, "help", "frobnicate"); code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("help frobnicate: exit %d\n%s", code, errs)
	}
}

// TestStatusHelp: the status command's -h in full: its flags and an
// example.
func TestStatusHelp(t *testing.T) {
	code, out, _ := runCmd(t, "status", "-h")
	for _, want := range []string{"usage: scanagent status", "\nflags:\n", "-addr address", "-c FILE", "-json", "-timeout duration",
		"-token-file FILE", "1 when the agent cannot be reached", "\nexample:\n  scanagent status -c /etc/scanagent/scanagent.yaml\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("exit %d, no %q in:\n%s", code, want, out)
		}
	}
}

// TestBadFlagShowsHelp: a flag the command does not have is a usage error
// that names it and shows the command's help on stderr; a flag first
// without a command is run's ("scanagent -c FILE" runs the agent).
func TestBadFlagShowsHelp(t *testing.T) {
	code, out, errs := runCmd(t, "status", "--nope")
	if code != 2 || out != "" || !strings.Contains(errs, "flag provided but not defined: -nope") || !strings.Contains(errs, "usage: scanagent status") {
		t.Errorf("status --nope: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	code, _, errs = runCmd(t, "-c", "x.yaml", "--nope")
	if code != 2 || !strings.Contains(errs, "usage: scanagent run") {
		t.Errorf("-c x.yaml --nope: exit %d\n%s", code, errs)
	}
	code, _, errs = runCmd(t, "-c", "/nonexistent/scanagent.yaml")
	if code != 2 || !strings.Contains(errs, "/nonexistent/scanagent.yaml") {
		t.Errorf("-c /nonexistent/scanagent.yaml: exit %d\n%s", code, errs)
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// usageText is the command list: "scanagent -h", "scanagent help", and
// bare "scanagent" (on stderr, exit 2: no command is a usage error).
const usageText = `scanagent reads barcode scanners and scales over serial ports, keeps every
scan on disk and forwards it over MQTT.

usage: scanagent <command> [flags]
       scanagent -c FILE [flags]      same as: scanagent run -c FILE [flags]

commands:
  run -c FILE     run the agent (the default command when the first argument is a flag)
  check -c FILE   validate a config file; print every error
  status [-c FILE | --addr A]   ask the running agent for its state (exit 1 unreachable, 3 needs attention)
  ports [--json]  list serial ports with USB VID:PID, serial number, product and by-id alias
  monitor PORT    print what a scanner or scale sends, decoded, live (--probe finds the baud rate)
  tap STATION scanner|scale   the last frames a running station's device sent, raw and decoded (--follow)
  fleet [--broker URL] [--once --json | --check | --listen ADDR]   every hub from the central broker
  buffer stats|export|import -c FILE   inspect, export or re-import the backlog (agent stopped)
  service install|uninstall|start|stop|status   the Windows service (event log, restart on failure)
  demo            run end to end with simulated scanners and an in-process broker
  version         print version information
  help [COMMAND]  this list, or a command's help

"scanagent COMMAND -h" shows a command's flags and an example.
New here? "scanagent demo" shows the whole path, without hardware.
`

// isHelpFlag reports whether arg asks for help the way the flag package
// understands it.
func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "--h", "-help", "--help":
		return true
	}
	return false
}

// cmdHelp prints the command list, or with a command (and a buffer or
// service subcommand) that command's help: "scanagent help status" is
// "scanagent status -h".
func cmdHelp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, usageText)
		return nil
	}
	if strings.HasPrefix(args[0], "-") || args[0] == "help" || len(args) > 2 {
		fmt.Fprint(stderr, usageText)
		return usagef("help takes a command name, e.g. scanagent help status")
	}
	return run(ctx, append(slices.Clip(args), "-h"), stdout, stderr)
}

// help is what a command's -h says besides its flags.
type help struct {
	usage   string // the synopsis, after "usage: "
	summary string // one line: what the command does
	more    string // optional paragraphs after the summary, each line ending in \n
	example string // one command line (or a few, one per line)
}

// flagSet is a command's flags and its help. -h prints the help (summary,
// flags, example) to stdout, exit 0; a bad flag prints the problem and the
// help to stderr, exit 2.
type flagSet struct {
	*flag.FlagSet
	help           help
	stdout, stderr io.Writer
}

func newFlags(name string, h help, stdout, stderr io.Writer) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet("scanagent "+name, flag.ContinueOnError), help: h, stdout: stdout, stderr: stderr}
	fs.SetOutput(stderr)
	fs.Usage = func() { fs.printHelp(fs.Output()) }
	return fs
}

func (fs *flagSet) printHelp(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", fs.help.usage, fs.help.summary)
	if fs.help.more != "" {
		fmt.Fprintf(w, "\n%s", fs.help.more)
	}
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, "\nflags:\n")
		out := fs.Output()
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
	if fs.help.example != "" {
		fmt.Fprint(w, "\nexample:\n")
		for l := range strings.Lines(fs.help.example) {
			fmt.Fprintf(w, "  %s", strings.TrimSuffix(l, "\n")+"\n")
		}
	}
}

// parseArgs parses the flags; arguments that are not flags are left in
// fs.Args().
func (fs *flagSet) parseArgs(args []string) error {
	var msg bytes.Buffer
	fs.SetOutput(&msg)
	err := fs.Parse(args)
	fs.SetOutput(fs.stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.printHelp(fs.stdout)
		return errSilent{Code: 0}
	case err != nil:
		fs.stderr.Write(msg.Bytes()) // the problem, then the help
		return errSilent{Code: 2}
	}
	return nil
}

// parse parses the flags of a command that takes no other arguments.
func (fs *flagSet) parse(args []string) error {
	if err := fs.parseArgs(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s (see scanagent %s -h)", strings.Join(fs.Args(), " "), strings.TrimPrefix(fs.Name(), "scanagent "))
	}
	return nil
}

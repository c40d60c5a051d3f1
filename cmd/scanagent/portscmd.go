package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"go.bug.st/serial/enumerator"
)

// portInfo is one line of "scanagent ports".
type portInfo struct {
	Port         string `json:"port"`
	ByID         string `json:"by_id,omitempty"` // stable /dev/serial/by-id alias, for the config
	USB          bool   `json:"usb"`
	VID          string `json:"vid,omitempty"`
	PID          string `json:"pid,omitempty"`
	SerialNumber string `json:"serial_number,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Product      string `json:"product,omitempty"`
}

const byIDDir = "/dev/serial/by-id"

func cmdPorts(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ports", help{
		usage:   "scanagent ports [--json]",
		summary: "List serial ports: USB VID:PID, serial number, product, /dev/serial/by-id alias.",
		more: `Use the by-id alias (or a udev name) as the port in the config: it stays
the same when the adapter is plugged into another USB socket.
`,
		example: "scanagent ports",
	}, stdout, stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	list, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return fmt.Errorf("list serial ports: %w", err)
	}
	ports := listPorts(list, byIDDir)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if ports == nil {
			ports = []portInfo{}
		}
		return enc.Encode(ports)
	}
	if len(ports) == 0 {
		fmt.Fprintln(stdout, "no serial ports found")
		if runtime.GOOS == "linux" {
			fmt.Fprintln(stdout, "hint: plug the device in and check `dmesg | tail` for its driver (ftdi_sio, cp210x, cdc_acm, pl2303)")
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tVID:PID\tSERIAL\tMANUFACTURER\tPRODUCT\tBY-ID")
	for _, p := range ports {
		vidpid := "-"
		if p.VID != "" || p.PID != "" {
			vidpid = strings.ToLower(p.VID + ":" + p.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Port, vidpid, dash(p.SerialNumber), dash(p.Manufacturer), dash(p.Product), dash(p.ByID))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if slices.ContainsFunc(ports, func(p portInfo) bool { return p.ByID != "" }) {
		fmt.Fprintln(stdout, "\nUse the BY-ID path in the config: it stays the same when the device is plugged into another USB socket.")
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// listPorts joins the enumerated ports with their aliases in dir (the
// /dev/serial/by-id links udev makes); an alias to a device the enumerator
// did not list is listed too. Sorted by port name.
func listPorts(list []*enumerator.PortDetails, dir string) []portInfo {
	var out []portInfo
	index := map[string]int{}
	for _, d := range list {
		index[d.Name] = len(out)
		out = append(out, portInfo{Port: d.Name, USB: d.IsUSB, VID: d.VID, PID: d.PID,
			SerialNumber: d.SerialNumber, Manufacturer: d.Manufacturer, Product: d.Product})
	}
	entries, _ := os.ReadDir(dir) // absent when no USB serial device is plugged in
	for _, e := range entries {
		alias := filepath.Join(dir, e.Name())
		target, err := filepath.EvalSymlinks(alias)
		if err != nil {
			continue
		}
		if i, ok := index[target]; ok {
			out[i].ByID = alias
			continue
		}
		index[target] = len(out)
		out = append(out, portInfo{Port: target, ByID: alias, USB: strings.HasPrefix(e.Name(), "usb-")})
	}
	slices.SortFunc(out, func(a, b portInfo) int { return strings.Compare(a.Port, b.Port) })
	return out
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/scanagent/scanagent/agent/config"
	"github.com/scanagent/scanagent/devices"
)

var tapHelp = help{
	usage:   "scanagent tap STATION scanner|scale [-c FILE | --addr ADDRESS] [--follow] [--json]",
	summary: "Print the last frames a running station's scanner or scale sent: raw bytes, and what the agent made of them.",
	more: `The running agent keeps the last 64 frames of each device (the serial
tap); this command reads them over its local HTTP server, so a station can
be diagnosed without stopping it (monitor cannot open a port the agent
holds). Each frame shows its time, its bytes as text (<CR>, <LF>, <STX>,
<hh> for control bytes) and in hex, and the code, weight or reject reason.
--follow keeps printing new frames until Ctrl-C.
`,
	example: "scanagent tap induct-3 scanner -c /etc/scanagent/scanagent.yaml --follow",
}

func cmdTap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tap", tapHelp, stdout, stderr)
	path := fs.String("c", "", "config `FILE` (for http.listen and the token)")
	addr := fs.String("addr", "", "the agent's HTTP `address` (default: from -c, else 127.0.0.1:9180)")
	tokenFile := fs.String("token-file", "", "bearer token `FILE` (default: http.token_file of -c, or $"+config.EnvHTTPToken+")")
	follow := fs.Bool("follow", false, "keep printing new frames until interrupted")
	asJSON := fs.Bool("json", false, "print one JSON object per frame")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for each answer of the agent")
	// Flags may come before or after STATION and DEVICE.
	var pos []string
	rest := args
	for {
		if err := fs.parseArgs(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 2 || (pos[1] != "scanner" && pos[1] != "scale") {
		return usagef("tap takes a station and a device: scanagent tap STATION scanner|scale (see scanagent tap -h)")
	}
	station, device := pos[0], pos[1]
	target, token, err := agentAddress(*path, *addr, *tokenFile, stderr)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: *timeout}
	var after uint64
	first := true
	for {
		frames, last, err := fetchTap(ctx, client, target, token, station, device, after)
		if err != nil {
			if ctx.Err() != nil && !first {
				return nil
			}
			return err
		}
		if first && len(frames) == 0 && !*asJSON {
			fmt.Fprintf(stdout, "%s %s: no frame yet\n", station, device)
		}
		for _, f := range frames {
			printFrame(stdout, f, *asJSON)
		}
		after, first = last, false
		if !*follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// agentAddress finds the running agent's HTTP address and token: from
// the config file, then --addr and --token-file, else loopback and
// $SCANAGENT_HTTP_TOKEN.
func agentAddress(path, addr, tokenFile string, stderr io.Writer) (target, token string, err error) {
	target, token = "127.0.0.1:9180", os.Getenv(config.EnvHTTPToken)
	if path != "" {
		cfg, err := loadConfig(path, stderr)
		if err != nil {
			return "", "", err
		}
		if cfg.HTTP.Listen == "" {
			return "", "", usagef("%s: http.listen is empty: the agent serves no HTTP", path)
		}
		target, token = cfg.HTTP.Listen, cfg.HTTP.Token
	}
	if addr != "" {
		target = addr
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return "", "", usagef("read token: %v", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return dialable(target), token, nil
}

// tapAnswer is /api/tap's answer.
type tapAnswer struct {
	Last   uint64             `json:"last"`
	Frames []devices.TapFrame `json:"frames"`
}

func fetchTap(ctx context.Context, client *http.Client, target, token, station, device string, after uint64) ([]devices.TapFrame, uint64, error) {
	u := fmt.Sprintf("http://%s/api/tap/%s/%s?after=%d", target, url.PathEscape(station), device, after)
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return nil, 0, usagef("address %q: %v", target, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("agent not reachable at %s: %v (is it running? see systemctl status scanagent)", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("read tap from %s: %w", target, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return nil, 0, fmt.Errorf("agent at %s wants a bearer token: give -c FILE, --token-file or $%s", target, config.EnvHTTPToken)
	case http.StatusNotFound:
		return nil, 0, fmt.Errorf("agent at %s: %s (scanagent status lists its stations)", target, strings.TrimSpace(string(body)))
	default:
		return nil, 0, fmt.Errorf("agent at %s answered %s: %s", target, resp.Status, strings.TrimSpace(string(body)))
	}
	var a tapAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, 0, fmt.Errorf("agent at %s sent a tap this version cannot read: %w", target, err)
	}
	return a.Frames, a.Last, nil
}

func printFrame(w io.Writer, f devices.TapFrame, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(f)
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	var what string
	switch {
	case f.Reject != "":
		what = "REJECTED " + f.Reject
	case f.Code != "" && f.AIM != "":
		what = "code " + f.Code + " (" + f.AIM + ")"
	case f.Code != "":
		what = "code " + f.Code
	case f.Weight != "":
		what = "weight " + f.Weight
		if f.Stable != nil && !*f.Stable {
			what += " (in motion)"
		}
	}
	text := f.Text
	if f.Truncated {
		text += fmt.Sprintf("… (%d bytes)", f.Len)
	}
	fmt.Fprintf(w, "%s  #%-5d %-40s -> %s\n%22s%s\n", f.At.Local().Format("15:04:05.000"), f.Seq, text, what, "", f.Hex)
}

//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clkTck is USER_HZ, the unit of utime/stime in /proc/<pid>/stat (100 on
// every Linux architecture Go supports).
const clkTck = 100

// cpuTicks returns utime+stime of pid (0 = this process).
func cpuTicks(pid int) (int64, error) {
	p := "/proc/self/stat"
	if pid != 0 {
		p = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: unexpected format", p)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: unexpected format", p)
	}
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return ut + st, nil
}

// systemBusy returns the busy and total jiffies of all CPUs (/proc/stat).
func systemBusy() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, s := range f[1:] {
		v, _ := strconv.ParseInt(s, 10, 64)
		if i >= 8 { // guest, guest_nice are included in user/nice
			break
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// cpuMeter measures the CPU use of a process over an interval.
type cpuMeter struct {
	pid   int
	ticks int64
	t     time.Time
}

func startCPU(pid int) cpuMeter {
	t, _ := cpuTicks(pid)
	return cpuMeter{pid: pid, ticks: t, t: time.Now()}
}

// percent is the CPU used since start as % of one core.
func (m cpuMeter) percent() float64 {
	t, err := cpuTicks(m.pid)
	el := time.Since(m.t).Seconds()
	if err != nil || el <= 0 {
		return -1
	}
	return float64(t-m.ticks) / clkTck / el * 100
}

// seconds is the CPU time used since start.
func (m cpuMeter) seconds() float64 {
	t, err := cpuTicks(m.pid)
	if err != nil {
		return -1
	}
	return float64(t-m.ticks) / clkTck
}

// memStatus returns the byte values of /proc/<pid>/status memory lines
// (VmRSS, VmHWM, RssAnon, RssFile, RssShmem).
func memStatus(pid int) map[string]int64 {
	m := map[string]int64{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !(strings.HasPrefix(k, "Vm") || strings.HasPrefix(k, "Rss")) {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 2 && fs[1] == "kB" {
			n, _ := strconv.ParseInt(fs[0], 10, 64)
			m[k] = n << 10
		}
	}
	return m
}

// diskUsage is the allocated size (st_blocks × 512) of everything under dir.
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitPort(ctx context.Context, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port %d not accepting after %s: %w", port, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// child is a started process that is waited for in the background.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startChild(name, logPath string, args ...string) (*child, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		lf.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to timeout, then kills. It returns how
// long the process took to exit.
func (c *child) stop(timeout time.Duration) (time.Duration, error) {
	if c == nil {
		return 0, nil
	}
	start := time.Now()
	if c.exited() {
		return 0, nil
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return time.Since(start), nil
	case <-time.After(timeout):
		c.cmd.Process.Kill()
		<-c.done
		return time.Since(start), fmt.Errorf("%s did not stop within %s after SIGTERM; killed", c.name, timeout)
	}
}

// broker is a mosquitto on a loopback port.
type broker struct {
	port int
	*child
}

func startBroker(ctx context.Context, dir string, port int, extra string) (*broker, error) {
	conf := filepath.Join(dir, "mosquitto.conf")
	text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nlog_dest none\n", port) + extra
	if os.Geteuid() == 0 {
		text += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	c, err := startChild("mosquitto", filepath.Join(dir, "mosquitto.log"), mosquittoPath, "-c", conf)
	if err != nil {
		return nil, err
	}
	if err := waitPort(ctx, port, 10*time.Second); err != nil {
		c.stop(5 * time.Second)
		return nil, fmt.Errorf("mosquitto: %w", err)
	}
	return &broker{port: port, child: c}, nil
}

func (b *broker) url() string { return fmt.Sprintf("tcp://127.0.0.1:%d", b.port) }

// agentStatus is the part of status.Status the benchmark reads.
type agentStatus struct {
	Process struct {
		RSSBytes     int64 `json:"rss_bytes"`
		PeakRSSBytes int64 `json:"peak_rss_bytes"`
		HeapBytes    int64 `json:"heap_bytes"`
	} `json:"process"`
	Buffer struct {
		Depth    int64  `json:"depth"`
		Bytes    int64  `json:"bytes"`
		Appended uint64 `json:"appended"`
		Acked    uint64 `json:"acked"`
	} `json:"buffer"`
	MQTT struct {
		State     string `json:"state"`
		Connected bool   `json:"connected"`
	} `json:"mqtt"`
	Stations []struct {
		ID       string `json:"id"`
		Counters struct {
			Scans       uint64            `json:"scans"`
			Invalid     uint64            `json:"invalid"`
			NotAccepted map[string]uint64 `json:"not_accepted"`
			Rejected    map[string]uint64 `json:"rejected"`
		} `json:"counters"`
		Scanner struct {
			State string `json:"state"`
		} `json:"scanner"`
	} `json:"stations"`
}

var httpc = &http.Client{Timeout: 5 * time.Second}

func getStatus(addr string) (*agentStatus, error) {
	resp, err := httpc.Get("http://" + addr + "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("/status: %s", resp.Status)
	}
	var st agentStatus
	return &st, json.NewDecoder(resp.Body).Decode(&st)
}

func ready(addr string) bool {
	resp, err := httpc.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// waitFor polls cond every interval until it is true, the timeout passes
// or the agent exits.
func waitFor(ctx context.Context, what string, ag *child, timeout, interval time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if ag != nil && ag.exited() {
			return fmt.Errorf("%s: the agent exited (%v)", what, ag.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not reached within %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
	return nil
}

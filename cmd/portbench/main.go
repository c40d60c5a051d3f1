//go:build linux

// Command portbench measures the CPU the device layer uses to read many
// serial ports at full line rate: a child process runs the agent's port
// supervisors (devices.RunScanner, devices.RunScale) on simulated devices
// behind pseudo-terminals, while this process writes to every device at the
// byte rate of the baud rate (10 bits a byte, 8N1). The child's CPU is read
// from /proc, so the writers' cost is not counted.
//
//	go run ./cmd/portbench -ports 16 -baud 115200 -duration 10s
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scanagent/scanagent/devices"
	"github.com/scanagent/scanagent/devices/sim"
)

const childEnv = "PORTBENCH_CHILD"

// result is one kind's figures.
type result struct {
	Kind        string  `json:"kind"`
	Ports       int     `json:"ports"`
	Baud        int     `json:"baud"`
	Seconds     float64 `json:"seconds"`
	BytesPerSec float64 `json:"bytes_per_sec"` // all ports together
	FramesSent  int64   `json:"frames_sent"`
	FramesRead  int64   `json:"frames_read"`
	CPUPercent  float64 `json:"cpu_percent_of_one_core"`
}

func main() {
	if kind := os.Getenv(childEnv); kind != "" {
		child(kind, os.Args[1:])
		return
	}
	ports := flag.Int("ports", 16, "simulated devices")
	baud := flag.Int("baud", 115200, "line rate to write at (bytes/s = baud/10)")
	duration := flag.Duration("duration", 10*time.Second, "measured time per kind")
	kinds := flag.String("kinds", "scanner,toledo,mt-sics,cas", "device kinds to measure, one after the other")
	jsonOut := flag.Bool("json", false, "print JSON")
	flag.Parse()
	var results []result
	for _, kind := range strings.Split(*kinds, ",") {
		r, err := measure(kind, *ports, *baud, *duration)
		if err != nil {
			fmt.Fprintln(os.Stderr, "portbench:", err)
			os.Exit(1)
		}
		results = append(results, r)
		if !*jsonOut {
			fmt.Printf("%-8s %2d ports at %d baud: %6.0f B/s, frames read %d of %d sent, CPU %.2f%% of one core\n",
				r.Kind, r.Ports, r.Baud, r.BytesPerSec, r.FramesRead, r.FramesSent, r.CPUPercent)
		}
	}
	if *jsonOut {
		json.NewEncoder(os.Stdout).Encode(results)
	}
}

// stream returns one cycle of what a device of kind sends, and where its
// frames end.
func stream(kind string) ([]byte, []bool) {
	var b []byte
	var ends []int
	codes := sim.NewCodes(1, 0)
	for i := 0; i < 500; i++ {
		switch kind {
		case "scanner":
			code, aim := codes.Next()
			b = append(b, aim+code+"\r\n"...)
		default:
			w := sim.Weight{Value: fmt.Sprintf("%d.%03d", i%30, i%1000), Unit: "kg", Stable: i%4 != 0}
			b = append(b, sim.Encode(kind, w)...)
		}
		ends = append(ends, len(b)-1)
	}
	end := make([]bool, len(b))
	for _, e := range ends {
		end[e] = true
	}
	return b, end
}

func measure(kind string, ports, baud int, d time.Duration) (result, error) {
	r := result{Kind: kind, Ports: ports, Baud: baud}
	if kind != "scanner" && devices.LookupProtocol(kind) == nil {
		return r, fmt.Errorf("unknown kind %q", kind)
	}
	data, frameEnd := stream(kind)
	devs := make([]*sim.Device, ports)
	var paths []string
	for i := range devs {
		dev, err := sim.NewDevice(sim.Line{}, nil)
		if err != nil {
			return r, err
		}
		defer dev.Close()
		devs[i] = dev
		paths = append(paths, dev.Path())
	}
	exe, err := os.Executable()
	if err != nil {
		return r, err
	}
	cmd := exec.Command(exe, paths...)
	cmd.Env = append(os.Environ(), childEnv+"="+kind)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		cmd.Process.Kill()
		return r, fmt.Errorf("child did not start: %q", lines.Text())
	}

	// Write at line rate: every 10ms, a hundredth of a second's bytes.
	perTick := baud / 10 / 100
	ctx, cancel := context.WithCancel(context.Background())
	var sent, sentFrames atomic.Int64
	var wg sync.WaitGroup
	for _, dev := range devs {
		wg.Go(func() {
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			off := 0
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				chunk := make([]byte, 0, perTick)
				for len(chunk) < perTick {
					k := min(perTick-len(chunk), len(data)-off)
					chunk = append(chunk, data[off:off+k]...)
					off = (off + k) % len(data)
				}
				frames := 0
				for i := range chunk {
					if frameEnd[(off-len(chunk)+i+len(data))%len(data)] {
						frames++
					}
				}
				if dev.Write(chunk) == nil {
					sent.Add(int64(len(chunk)))
					sentFrames.Add(int64(frames))
				}
			}
		})
	}
	time.Sleep(time.Second) // warm up
	cpu0, t0, sent0 := cpuTicks(cmd.Process.Pid), time.Now(), sent.Load()
	time.Sleep(d)
	cpu1, t1, sent1 := cpuTicks(cmd.Process.Pid), time.Now(), sent.Load()
	cancel()
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // let the child read what is in flight
	stdin.Close()
	var counts struct{ Frames, Rejects int64 }
	if lines.Scan() {
		json.Unmarshal(lines.Bytes(), &counts)
	}
	io.Copy(io.Discard, stdout)
	cmd.Wait()

	secs := t1.Sub(t0).Seconds()
	r.Seconds = secs
	r.BytesPerSec = float64(sent1-sent0) / secs
	r.FramesSent = sentFrames.Load()
	r.FramesRead = counts.Frames
	r.CPUPercent = float64(cpu1-cpu0) / 100 / secs * 100 // 100 clock ticks a second
	return r, nil
}

// cpuTicks returns the user and system clock ticks of a process.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// child reads every port with the agent's supervisors until stdin closes,
// then prints the counts.
func child(kind string, paths []string) {
	if f := os.Getenv("PORTBENCH_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err == nil {
			pprof.StartCPUProfile(out)
			defer pprof.StopCPUProfile()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var frames, rejects atomic.Int64
	var wg sync.WaitGroup
	for _, p := range paths {
		port := devices.PortConfig{Path: p, Baud: 115200}
		wg.Go(func() {
			if kind == "scanner" {
				devices.RunScanner(ctx, devices.ScannerOptions{Port: port, Framer: devices.FramerConfig{Terminator: []byte("\r\n")},
					Frame: func(devices.Frame) { frames.Add(1) }, Reject: func(string) { rejects.Add(1) }})
				return
			}
			devices.RunScale(ctx, devices.ScaleOptions{Port: port, Protocol: devices.LookupProtocol(kind),
				Reading: func(devices.Reading) { frames.Add(1) }, Result: func(r string) {
					if r != devices.ResultOK {
						rejects.Add(1)
					}
				}})
		})
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	cancel()
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(map[string]int64{"frames": frames.Load(), "rejects": rejects.Load()})
}

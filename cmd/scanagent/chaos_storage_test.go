//go:build chaos && unix

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scanagent/scanagent/agent/testmqtt"
)

// Storage faults against the real binary: each file of the buffer
// damaged, a small filesystem filled, an event the broker refuses. Run
// with the chaos suite:
//
//	go test -tags chaos -run 'Chaos/storage' -count=1 -v ./cmd/scanagent

// damageFile overwrites bytes of a file at off (negative: from its end).
func damageFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		fi, _ := f.Stat()
		off += fi.Size()
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func largest(t *testing.T, pattern string) string {
	t.Helper()
	files, _ := filepath.Glob(pattern)
	if len(files) == 0 {
		t.Fatalf("no %s", pattern)
	}
	slices.SortFunc(files, func(a, b string) int {
		fa, _ := os.Stat(a)
		fb, _ := os.Stat(b)
		return int(fb.Size() - fa.Size())
	})
	return files[0]
}

// TestChaosStorage runs the storage-fault scenarios.
func TestChaosStorage(t *testing.T) {
	bin := buildAgent(t)

	// Each file kind damaged while the agent is stopped, after journal
	// segments were retired (delivered scans) and with a backlog of
	// undelivered scans in the store's tables and in the journal.
	for _, tc := range []struct {
		name string
		harm func(t *testing.T, buf string)
	}{
		{"table truncated", func(t *testing.T, buf string) {
			p := largest(t, filepath.Join(buf, "store", "*.sst"))
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()/2)
		}},
		{"table footer overwritten", func(t *testing.T, buf string) {
			damageFile(t, largest(t, filepath.Join(buf, "store", "*.sst")), -6, []byte{0xff, 0xff, 0x7f, 0xff})
		}},
		{"table data block: 2 bytes", func(t *testing.T, buf string) {
			damageFile(t, largest(t, filepath.Join(buf, "store", "*.sst")), 70000, []byte{0x00, 0xff})
		}},
		{"MANIFEST: 1 byte", func(t *testing.T, buf string) {
			p := filepath.Join(buf, "store", "MANIFEST")
			fi, _ := os.Stat(p)
			damageFile(t, p, fi.Size()/2, []byte{0x5a})
		}},
		{"value log header", func(t *testing.T, buf string) {
			damageFile(t, largest(t, filepath.Join(buf, "store", "*.vlog")), 0, []byte("garbage garbage garbage"))
		}},
		{"journal segment header: 1 byte", func(t *testing.T, buf string) {
			segs, _ := filepath.Glob(filepath.Join(buf, "journal", "*.wal"))
			damageFile(t, segs[0], 10, []byte{0x07})
		}},
		{"journal segment body", func(t *testing.T, buf string) {
			segs, _ := filepath.Glob(filepath.Join(buf, "journal", "*.wal"))
			damageFile(t, segs[0], 200000, bytes.Repeat([]byte{0xee}, 4000))
		}},
	} {
		t.Run("storage: "+tc.name, func(t *testing.T) {
			r := newChaos(t, bin, nil, "")
			buf := filepath.Join(r.dir, "data", "buffer")
			r.start()
			r.feed()
			r.burst(30000) // delivered: about 10 MB, journal segments retired once acknowledged
			r.waitAccepted(30000, 60*time.Second)
			waitFile(t, filepath.Join(buf, "journal", fmt.Sprintf("%016x.wal", 1)), false, 60*time.Second)
			r.broker.Stop()
			r.burst(30000) // the backlog: in the store's tables and in the journal
			r.waitAccepted(60000, 60*time.Second)
			// Badger flushes its full memtables to tables in the
			// background; each one's .mem file goes when it is flushed.
			waitFor(t, 30*time.Second, "the backlog's memtables to be flushed", func() bool {
				mems, _ := filepath.Glob(filepath.Join(buf, "store", "*.mem"))
				return len(mems) <= 1
			})
			r.alive()
			r.stop(syscall.SIGKILL)
			tc.harm(t, buf)
			r.broker.Restart()
			n := r.acceptedCount()
			r.start()
			// Opened on the damaged files, the agent accepts the feed again.
			r.waitAccepted(n+1, 120*time.Second)
			r.alive()
			r.finish("storage: " + tc.name + " (after retirement, 30,000-scan backlog)")
		})
	}

	// A small filesystem filled by the agent itself (broker down) up to a
	// small guard, then by another program; a restart on the full disk;
	// then the broker returns and everything accepted is delivered.
	t.Run("storage: small disk filled", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to mount a small tmpfs")
		}
		mnt := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a tmpfs here (%v: %s)", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
		r := newChaos(t, bin, nil, filepath.Join(mnt, "data"))
		cfg, _ := os.ReadFile(r.cfg)
		os.WriteFile(r.cfg, bytes.Replace(cfg, []byte("min_free_disk: 24MiB"), []byte("min_free_disk: 8MiB"), 1), 0o644)
		r.broker.Stop()
		r.start()
		r.feed()
		const guard = "buffer: disk nearly full, refusing new scans until space is freed; the backlog keeps draining"
		for i := 0; !r.log.seen(guard); i++ {
			if i == 200 {
				t.Fatal("the guard never refused")
			}
			r.burst(2000)
			last := r.lastFed()
			waitFor(t, 60*time.Second, "the burst to be accepted, or the guard to refuse", func() bool {
				_, ok := r.accepted.Load(last)
				return ok || r.log.seen(guard)
			})
			r.alive()
		}
		r.burst(5000) // refused
		refused := func() int64 {
			r.log.mu.Lock()
			defer r.log.mu.Unlock()
			return r.log.refused["disk_full"]
		}
		if !poll(15*time.Second, func() bool { return refused() > 0 }) {
			t.Fatal("no scan refused with disk_full")
		}
		r.alive()
		r.stop(syscall.SIGKILL)
		// Another program takes what is left.
		f, _ := os.Create(filepath.Join(mnt, "filler"))
		for {
			if _, err := f.Write(make([]byte, 256<<10)); err != nil {
				break
			}
		}
		f.Close()
		r.broker.Restart()
		opened := r.log.count("buffer open")
		r.refusing = true
		r.start() // on the full disk: the reserve is released, the backlog drains
		waitFor(t, 60*time.Second, "the buffer to open on the full disk", func() bool { return r.log.count("buffer open") > opened })
		r.alive()
		r.finish("storage: 64 MB disk filled by the agent (min_free_disk 8MiB), then by another program; restart, drain")
	})

	// An event the broker refuses: larger than its max_packet_size (and
	// below mqtt.max_event_bytes). The broker ends each session that
	// carries it; it is parked after three, and the scans behind it flow.
	t.Run("storage: event over the broker's packet limit", func(t *testing.T) {
		r := newChaos(t, bin, nil, "", testmqtt.WithConfig("max_packet_size 8192"))
		cfg, _ := os.ReadFile(r.cfg)
		os.WriteFile(r.cfg, bytes.Replace(cfg, []byte("baud: 115200}"), []byte("baud: 115200, max_length: 65536}"), 1), 0o644)
		poison := strings.Repeat("P", 10000)
		r.poison = map[string]bool{poison: true}
		r.start()
		r.feed()
		r.waitMoreAccepted("before the long code", 0)
		r.send(poison)
		waitFor(t, 60*time.Second, "the long code to be parked", func() bool { return r.log.count("scan parked") > 0 })
		r.alive()
		r.finish("storage: a 10,000-character code behind a broker's 8 KiB packet limit (parked)")
		if _, ok := r.accepted.Load(poison); !ok {
			t.Fatal("the long code was not accepted")
		}
	})
}

// waitFile waits until path exists (or, with exists false, is gone).
func waitFile(t *testing.T, path string, exists bool, d time.Duration) {
	t.Helper()
	if !poll(d, func() bool { _, err := os.Stat(path); return (err == nil) == exists }) {
		t.Fatalf("%s: exists=%v not reached in %v", path, exists, d)
	}
}

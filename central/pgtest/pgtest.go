// Package pgtest runs a real PostgreSQL server for the central packages'
// tests and benchmarks: one cluster per test package, started from
// TestMain in a temporary directory on a free loopback port, and a fresh
// database per test. It uses Debian's postgresql package
// (/usr/lib/postgresql/<version>/bin); as root it runs initdb and pg_ctl
// as the postgres user, since PostgreSQL refuses to run as root. It is
// imported only by tests.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is one PostgreSQL server.
type Cluster struct {
	Port  int
	dir   string // owned by the server's user: data/, the socket, the log
	bin   string // directory of initdb, pg_ctl, postgres
	runAs string // "" or the user the server runs as (when we are root)
	next  atomic.Int64
}

// Options tune the server.
type Options struct {
	// Durable keeps fsync and synchronous_commit on, as in production
	// (benchmarks). Tests turn them off: they do not crash the server.
	Durable bool
}

// Main starts a cluster for a test package, runs its tests and stops it:
//
//	var pg *pgtest.Cluster
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg, pgtest.Options{})) }
//
// If PostgreSQL cannot be started every test of the package fails with
// the reason and how to install it: nothing is skipped.
func Main(m *testing.M, c **Cluster, opts Options) int {
	cl, err := Start(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: PostgreSQL for the tests: %v\n", err)
		return 1
	}
	*c = cl
	code := m.Run()
	cl.Stop()
	return code
}

// Start runs initdb and pg_ctl start in a new temporary directory.
func Start(opts Options) (*Cluster, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin}
	if os.Geteuid() == 0 {
		c.runAs = "postgres"
	}
	c.dir, err = os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	if c.runAs != "" {
		u, err := user.Lookup(c.runAs)
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("running as root, PostgreSQL needs an unprivileged user %q (created by Debian's postgresql package): %w", c.runAs, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			c.Stop()
			return nil, err
		}
	}
	data := filepath.Join(c.dir, "data")
	if out, err := c.command("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions").CombinedOutput(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	settings := []string{
		"listen_addresses=127.0.0.1", "unix_socket_directories=" + c.dir,
		"max_connections=200", "shared_buffers=128MB", "log_min_messages=warning",
	}
	if !opts.Durable {
		settings = append(settings, "fsync=off", "synchronous_commit=off", "full_page_writes=off")
	}
	for try := 0; ; try++ {
		c.Port, err = freePort()
		if err != nil {
			c.Stop()
			return nil, err
		}
		o := "-p " + strconv.Itoa(c.Port)
		for _, s := range settings {
			o += " -c " + s
		}
		out, err := c.command("pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", filepath.Join(c.dir, "server.log"), "-o", o).CombinedOutput()
		if err == nil {
			return c, nil
		}
		if try == 2 { // a port taken between freePort and the server's bind
			log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
			c.Stop()
			return nil, fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
		}
	}
}

// findBin finds the directory of initdb and pg_ctl: Debian's newest
// /usr/lib/postgresql/<version>/bin, else the PATH.
func findBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl, no pg_ctl on the PATH): " +
		"install it with `apt-get install -y postgresql`, or run scripts/test.sh, which does")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// command runs a PostgreSQL program, as the unprivileged user when we are root.
func (c *Cluster) command(prog string, args ...string) *exec.Cmd {
	path := filepath.Join(c.bin, prog)
	if c.runAs == "" {
		return exec.Command(path, args...)
	}
	return exec.Command("runuser", append([]string{"-u", c.runAs, "--", path}, args...)...)
}

// Stop stops the server at once and removes its directory.
func (c *Cluster) Stop() {
	if c.Port != 0 {
		c.command("pg_ctl", "stop", "-m", "immediate", "-D", filepath.Join(c.dir, "data")).Run()
	}
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

// URL is the connection URL of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

// NewDB creates an empty database for one test, dropped when it ends, and
// returns its URL.
func (c *Cluster) NewDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", c.next.Add(1), strings.ToLower(strings.NewReplacer("/", "_", " ", "_", "-", "_").Replace(t.Name())))
	if len(name) > 60 {
		name = name[:60]
	}
	if err := c.Exec(fmt.Sprintf("CREATE DATABASE %s", pgx.Identifier{name}.Sanitize())); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Exec(fmt.Sprintf("DROP DATABASE %s WITH (FORCE)", pgx.Identifier{name}.Sanitize())); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	return c.URL(name)
}

// Exec runs one statement in the postgres database.
func (c *Cluster) Exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

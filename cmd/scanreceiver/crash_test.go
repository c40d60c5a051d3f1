package main

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/scanagent/scanagent/agent/testmqtt"
)

// brokerConfig lets mosquitto have a batch's worth of messages in flight
// to each receiver (its default is 20; docs/CENTRAL.md).
const brokerConfig = "max_inflight_messages 1000"

// TestKill9MidBatch: a receiver killed while a batch is inside its
// transaction loses nothing: the transaction is rolled back, the messages
// were not acknowledged, and mosquitto sends them again when it restarts
// with the same client id. The agent sends nothing twice.
func TestKill9MidBatch(t *testing.T) {
	b := testmqtt.Start(t, testmqtt.WithConfig(brokerConfig))
	url := pg.NewDB(t)
	file, health := writeConfig(t, b, url, "central-1")
	p := startProc(t, file, health)
	db, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	release := lockScans(t, db)
	a := newAgent(t, b, "hub-1")
	a.publish(all(1000))
	waitFor(t, 20*time.Second, "a batch waiting inside its transaction", func() bool { return waitingBatches(t, db, "central-1") > 0 })
	p.kill9(t)
	release()
	if n := count(t, db, "SELECT count(*) FROM scans"); n != 0 {
		t.Fatalf("%d rows stored by the killed receiver's transaction", n)
	}
	if got := len(a.unreceipted(1000)); got != 1000 {
		t.Fatalf("%d seqs receipted before the crash", 1000-got)
	}

	startProc(t, file, health)
	waitFor(t, 60*time.Second, "every seq receipted after the restart", func() bool { return len(a.unreceipted(1000)) == 0 })
	if n := count(t, db, "SELECT count(*) FROM scans"); n != 1000 {
		t.Fatalf("%d rows, want 1000", n)
	}
}

// TestSharedGroupMemberKilled: two receivers share the stream; one is
// killed with kill -9 in the middle of a batch and never comes back.
// mosquitto keeps what it had sent that one (and queued for it) under its
// client id and gives it to no other member (mosquitto #2662): those
// scans are stored only when the agent sends them again after its receipt
// timeout, simulated here. In the end every scan is stored once.
func TestSharedGroupMemberKilled(t *testing.T) {
	b := testmqtt.Start(t, testmqtt.WithConfig(brokerConfig))
	url := pg.NewDB(t)
	fileA, healthA := writeConfig(t, b, url, "central-a")
	fileB, healthB := writeConfig(t, b, url, "central-b")
	pa := startProc(t, fileA, healthA)
	startProc(t, fileB, healthB)
	db, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	release := lockScans(t, db)
	a := newAgent(t, b, "hub-1")
	a.publish(all(1000))
	waitFor(t, 20*time.Second, "both receivers with a batch inside its transaction", func() bool {
		return waitingBatches(t, db, "central-a") > 0 && waitingBatches(t, db, "central-b") > 0
	})
	pa.kill9(t)
	release()

	// The agent's receipt timeout: republish what has had no receipt for
	// a while, until everything has one.
	const receiptTimeout = 2 * time.Second
	rounds := 0
	waitFor(t, 90*time.Second, "every seq receipted", func() bool {
		missing := a.unreceipted(1000)
		if len(missing) == 0 {
			return true
		}
		if a.sinceProgress() > receiptTimeout {
			stored := count(t, db, "SELECT count(*) FROM scans")
			if rounds == 0 {
				t.Logf("before the first republish: %d stored, %d without a receipt", stored, len(missing))
				if stored == 1000 {
					t.Fatal("every scan stored without a republish: the killed member's messages went to the other")
				}
			}
			rounds++
			a.publish(missing)
			a.mu.Lock()
			a.last = time.Now()
			a.mu.Unlock()
		}
		return false
	})
	if rounds == 0 {
		t.Fatal("no republish was needed: the killed receiver held nothing")
	}
	if n := count(t, db, "SELECT count(*) FROM scans"); n != 1000 {
		t.Fatalf("%d rows, want 1000", n)
	}
	if n := count(t, db, "SELECT count(DISTINCT seq) FROM scans"); n != 1000 {
		t.Fatalf("%d distinct seqs, want 1000", n)
	}
	t.Logf("republish rounds: %d", rounds)
}

//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/scanagent/scanagent/agent/testmqtt"
)

// publishRetained publishes retained messages as hubs would.
func publishRetained(t *testing.T, b *testmqtt.Broker, msgs map[string]string) {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("hubs"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	for topic, payload := range msgs {
		if tok := c.Publish(topic, 1, true, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
}

// TestFleetCommand: --once --json lists each hub with the fixed fields;
// --check exits 3 for a hub offline too long or backed up, 0 when the
// limits allow; an unreachable broker exits 1; -c takes a strict file.
func TestFleetCommand(t *testing.T) {
	b := testmqtt.Start(t)
	now := time.Now().UTC()
	ts := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339Nano) }
	publishRetained(t, b, map[string]string{
		"scanagent/MSK/hub-1/status":             fmt.Sprintf(`{"state":"online","agent":"hub-1","site":"MSK","version":"1.4","since":%q,"session":5}`, ts(time.Hour)),
		"scanagent/MSK/hub-1/health":             fmt.Sprintf(`{"agent":"hub-1","site":"MSK","time":%q,"clock":"synced","buffer":{"depth":40,"oldest_age":900},"mqtt":{"state":"connected","session":5}}`, ts(0)),
		"scanagent/MSK/hub-1/devices/s1/scanner": fmt.Sprintf(`{"port":"COM3","state":"error","since":%q}`, ts(time.Minute)),
		"scanagent/SPB/hub-2/status":             fmt.Sprintf(`{"state":"offline","agent":"hub-2","site":"SPB","since":%q,"session":9}`, ts(20*time.Minute)),
	})

	code, out, errs := runCmd(t, "fleet", "--broker", b.URL(), "--once", "--json", "--wait", "3s")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var hubs []map[string]any
	if err := json.Unmarshal([]byte(out), &hubs); err != nil || len(hubs) != 2 {
		t.Fatalf("--once --json: %v\n%s", err, out)
	}
	for _, k := range []string{"agent", "site", "state", "since", "version", "backlog", "devices_in_error"} {
		if _, ok := hubs[0][k]; !ok {
			t.Errorf("hub without %q: %v", k, hubs[0])
		}
	}
	if hubs[0]["agent"] != "hub-1" || hubs[0]["state"] != "online" || hubs[0]["backlog"] != float64(40) || hubs[0]["devices_in_error"] != float64(1) ||
		hubs[1]["agent"] != "hub-2" || hubs[1]["state"] != "offline" {
		t.Errorf("rows: %s", out)
	}

	code, out, _ = runCmd(t, "fleet", "--broker", b.URL(), "--once", "--wait", "3s")
	if code != 0 || !strings.Contains(out, "hub-1") || !strings.Contains(out, "2 hubs, 1 online, 1 offline") {
		t.Errorf("table: exit %d\n%s", code, out)
	}

	code, out, _ = runCmd(t, "fleet", "--broker", b.URL(), "--check", "--wait", "3s")
	if code != 3 || !strings.Contains(out, "SPB hub-2: offline for") || !strings.Contains(out, "MSK hub-1: backlog of 40") {
		t.Errorf("--check: exit %d, want 3\n%s", code, out)
	}
	code, out, _ = runCmd(t, "fleet", "--broker", b.URL(), "--check", "--wait", "3s", "--max-offline", "1h", "--max-backlog-age", "1h")
	if code != 0 || !strings.Contains(out, "ok: 2 hubs") {
		t.Errorf("--check within limits: exit %d, want 0\n%s", code, out)
	}

	// The same from a file; an error in it is reported with its place.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fleet.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, "mqtt: {brokers: [%q]}\nfleet: {max_offline: 1h, max_backlog_age: 1h}\n", b.URL()), 0o644)
	if code, out, errs := runCmd(t, "fleet", "-c", cfg, "--check", "--wait", "3s"); code != 0 {
		t.Errorf("-c: exit %d\n%s%s", code, out, errs)
	}
	os.WriteFile(cfg, []byte("mqtt: {brokers: [tcp://127.0.0.1:1]}\nfleet: {max_ofline: 1h}\n"), 0o644)
	if code, _, errs := runCmd(t, "fleet", "-c", cfg, "--check"); code != 2 || !strings.Contains(errs, "fleet.yaml:2:9: unknown key \"max_ofline\"") {
		t.Errorf("bad file: exit %d\n%s", code, errs)
	}

	if code, _, errs := runCmd(t, "fleet", "--broker", "tcp://127.0.0.1:1", "--check"); code != 1 || !strings.Contains(errs, "broker unreachable") {
		t.Errorf("unreachable: exit %d, want 1\n%s", code, errs)
	}
	if code, _, _ := runCmd(t, "fleet", "--json"); code != 2 {
		t.Errorf("--json alone: exit %d, want 2", code)
	}
}

// TestFleetMetrics: --listen serves a series per hub labelled site and
// agent.
func TestFleetMetrics(t *testing.T) {
	b := testmqtt.Start(t)
	publishRetained(t, b, map[string]string{
		"scanagent/MSK/hub-1/status": fmt.Sprintf(`{"state":"online","agent":"hub-1","site":"MSK","since":%q,"session":5}`, time.Now().UTC().Format(time.RFC3339)),
	})
	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- exitCode(run(ctx, []string{"fleet", "--broker", b.URL(), "--listen", addr}, io.Discard, io.Discard), io.Discard)
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), `scanagent_fleet_hub_online{agent="hub-1",site="MSK"} 1`) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("metrics without hub-1 online:\n%s", body)
			}
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFleetTLSAndPassword: the view reaches a broker that wants TLS with
// a client certificate and a password, from flags and from a file; the
// wrong CA or password exits 1.
func TestFleetTLSAndPassword(t *testing.T) {
	pki := testmqtt.NewPKI(t)
	b := testmqtt.Start(t, testmqtt.WithTLS(testmqtt.TLSFiles{CAFile: pki.CA, CertFile: pki.ServerCert, KeyFile: pki.ServerKey, RequireClientCert: true}),
		testmqtt.WithPasswords(t, "fleet", "s3cret", "hubs", "hubs-pw"))
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("hubs").SetUsername("hubs").SetPassword("hubs-pw"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	tok := c.Publish("scanagent/MSK/hub-1/status", 1, true, fmt.Sprintf(`{"state":"online","agent":"hub-1","site":"MSK","since":%q,"session":3}`, time.Now().UTC().Format(time.RFC3339)))
	tok.WaitTimeout(5 * time.Second)
	c.Disconnect(100)

	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	tlsFlags := []string{"--broker", b.TLSURL(), "--ca-file", pki.CA, "--cert-file", pki.ClientCert, "--key-file", pki.ClientKey, "--username", "fleet", "--wait", "3s"}
	code, out, errs := runCmd(t, append([]string{"fleet", "--once", "--json", "--password-file", pw}, tlsFlags...)...)
	if code != 0 || !strings.Contains(out, `"agent": "hub-1"`) {
		t.Fatalf("TLS + password: exit %d\n%s%s", code, out, errs)
	}
	cfg := filepath.Join(dir, "fleet.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, "mqtt:\n  brokers: [%q]\n  username: fleet\n  password_file: pw\n  tls: {ca_file: %q, cert_file: %q, key_file: %q}\n",
		b.TLSURL(), pki.CA, pki.ClientCert, pki.ClientKey), 0o600)
	if code, out, errs := runCmd(t, "fleet", "-c", cfg, "--once", "--wait", "3s"); code != 0 || !strings.Contains(out, "hub-1") {
		t.Fatalf("-c with TLS: exit %d\n%s%s", code, out, errs)
	}
	os.WriteFile(pw, []byte("wrong\n"), 0o600)
	if code, _, errs := runCmd(t, append([]string{"fleet", "--check", "--password-file", pw}, tlsFlags...)...); code != 1 {
		t.Errorf("wrong password: exit %d, want 1\n%s", code, errs)
	}
	if code, _, errs := runCmd(t, "fleet", "--check", "--broker", b.TLSURL(), "--ca-file", pki.OtherCA, "--username", "fleet", "--password-file", pw); code != 1 {
		t.Errorf("wrong CA: exit %d, want 1\n%s", code, errs)
	}
}

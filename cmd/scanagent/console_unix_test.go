//go:build unix

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/scanagent/scanagent/agent/testmqtt"
	"github.com/scanagent/scanagent/devices/sim"
)

// chromiumPath finds Debian's chromium (scripts/test.sh installs it).
// The browser tests fail without it rather than skip, unless
// SCANAGENT_NO_BROWSER=1 asks for a skip, which the test log says.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if os.Getenv("SCANAGENT_NO_BROWSER") == "1" {
		t.Skip("SCANAGENT_NO_BROWSER=1: the console's browser tests are skipped")
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium to drive: apt-get install -y chromium (scripts/test.sh does), or set SCANAGENT_NO_BROWSER=1 to skip")
	return ""
}

// browserLog collects what the page logs as an error: exceptions,
// console.error, and the browser's own error entries (failed loads, CSP
// violations).
type browserLog struct {
	mu   sync.Mutex
	errs []string
}

func (l *browserLog) add(s string) {
	l.mu.Lock()
	l.errs = append(l.errs, s)
	l.mu.Unlock()
}

func (l *browserLog) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

func (l *browserLog) listen(ev any) {
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		l.add(fmt.Sprintf("exception: %s at %s:%d", msg, d.URL, d.LineNumber))
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range e.Args {
				args = append(args, a.Description+fmt.Sprint(a.Value))
			}
			l.add("console." + string(e.Type) + ": " + strings.Join(args, " "))
		}
	case *cdplog.EventEntryAdded:
		if e.Entry.Level == cdplog.EntryLevelError {
			l.add(string(e.Entry.Source) + ": " + e.Entry.Text + " " + e.Entry.URL)
		}
	}
}

// consoleRig is the real agent, run in-process, with a simulated scanner
// and a streaming scale on pseudo-terminals and a real mosquitto.
type consoleRig struct {
	addr, cfg, token       string
	scannerLink, scaleLink string
	scanner                *sim.Scanner
	scale                  *sim.Scale
}

func startConsoleRig(t *testing.T) *consoleRig {
	t.Helper()
	broker := testmqtt.Start(t)
	dir := t.TempDir()
	sc, err := sim.NewScanner("\r\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	scale, err := sim.NewScale("toledo", sim.Line{Baud: 9600}, sim.Weight{Value: "1.234", Unit: "kg", Stable: true}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scale.Close() })
	// The agent opens the devices by links, as by /dev/serial/by-id: once
	// unplugged, a pty's number may go to another process's pty.
	r := &consoleRig{addr: freePort(t), cfg: filepath.Join(dir, "scanagent.yaml"), token: "console-test-token", scanner: sc, scale: scale,
		scannerLink: filepath.Join(dir, "scanner"), scaleLink: filepath.Join(dir, "scale")}
	if err := sc.Link(r.scannerLink); err != nil {
		t.Fatal(err)
	}
	if err := scale.Link(r.scaleLink); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(r.token+"\n"), 0o600)
	os.WriteFile(r.cfg, fmt.Appendf(nil, `agent: {id: hub-msk-01, site: MSK-VNUKOVO, data_dir: %q}
mqtt: {brokers: [%q], reconnect_min: 50ms, reconnect_max: 200ms, connect_spread: 0s}
http: {listen: %q, token_file: %q}
stations:
  - id: induct-1
    event: EDD
    workflow: open_receptacles
    operator_pattern: "^OP[0-9]{4}$"
    scanner: {port: %q, terminator: crlf}
    scale: {port: %q, baud: 9600, protocol: toledo, wait_stable: 500ms}
  - id: sort-2
    scanner: {port: %q, terminator: crlf}
`, filepath.Join(dir, "data"), broker.URL(), r.addr, tokenFile, r.scannerLink, r.scaleLink, filepath.Join(dir, "no-such-port")), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "-c", r.cfg}, io.Discard, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	if !poll(15*time.Second, func() bool {
		resp, err := http.Get("http://" + r.addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}) {
		t.Fatal("the agent's HTTP server never came up")
	}
	return r
}

// screenshot saves the browser's view as docs/console-NAME.png when
// SCANAGENT_SCREENSHOTS=1 (so that ordinary runs leave the tree alone).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("SCANAGENT_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "console-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleInBrowser drives the console in a real Chromium against the
// real agent: the login refuses a wrong token; a scan written to the
// scanner's pty shows within a second with its weight, then as published;
// the serial tap shows its bytes; the language switch works; an
// unplugged scanner turns its tile to disconnected; and the page logs no
// error on the way.
func TestConsoleInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	r := startConsoleRig(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1366, 1000), chromedp.Flag("lang", "en-US"), chromedp.Flag("accept-lang", "en-US"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	var blog browserLog
	// The first use starts the browser: on a context without a timeout.
	if err := chromedp.Listen(bctx, blog.listen); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if _, err := chromedp.Call(bctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	url := "http://" + r.addr + "/"
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v\nbrowser errors: %q", what, err, blog.errors())
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	eval := func(expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr)); err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
	}
	wait := func(what, expr string, timeout time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(timeout))); err != nil {
			t.Fatalf("%s: %v\nbrowser errors: %q", what, err, blog.errors())
		}
	}

	// The page asks for the token; a wrong one is refused.
	do("load the page", chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	do("log in with a wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"), chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)))
	wait("the refusal", `document.querySelector("#login-error").textContent !== ""`, 5*time.Second)
	if e := text("#login-error"); !strings.Contains(e, "Wrong token") {
		t.Fatalf("wrong token: %q", e)
	}
	if hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector("#main").hidden`)); err != nil || !hidden {
		t.Fatalf("the console opened with a wrong token (%v)", err)
	}
	// The refusal itself is a 401 the browser logs; nothing else may be.
	refused := len(blog.errors())
	for _, e := range blog.errors() {
		if !strings.Contains(e, "401") {
			t.Errorf("browser error before login: %s", e)
		}
	}

	eval(`document.querySelector("#token").value = ""`)
	do("log in", chromedp.SendKeys(chromedp.CSS("#token"), r.token),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#main")),
		chromedp.WaitVisible(chromedp.CSS(`article[data-station="induct-1"] .dev.scanner.connected`)),
		chromedp.WaitVisible(chromedp.CSS(`article[data-station="induct-1"] .dev.scale.connected`)),
		chromedp.WaitVisible(chromedp.CSS(`article[data-station="sort-2"] .dev.scanner.disconnected`)))

	// The first load: the page, its assets and the first answers, as the
	// browser transferred them (headers included).
	loaded, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`(() => {
		let t = performance.getEntriesByType("navigation")[0].transferSize;
		for (const r of performance.getEntriesByType("resource")) t += r.transferSize;
		return t; })()`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first load transferred %.1f KB", loaded/1000)
	if loaded <= 0 || loaded > 200_000 {
		t.Errorf("first load transferred %.0f bytes; want at most 200 KB", loaded)
	}

	// A scan shows within a second, with its weight, then as published.
	code := "RR473124829GB"
	if err := r.scanner.Send("]C0", code); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	row := fmt.Sprintf(`#scans tr[data-barcode="%s"]`, code)
	wait("the scan with its weight", fmt.Sprintf(`(() => { const r = document.querySelector('%s'); return r !== null && r.querySelector("td.weight").textContent.includes("1.234 kg"); })()`, row), 5*time.Second)
	if took := time.Since(sent); took > time.Second {
		t.Errorf("the scan took %v to show with its weight; want within 1s", took)
	} else {
		t.Logf("the scan showed with its weight %v after it was written to the pty", took.Round(time.Millisecond))
	}
	do("the scan is published", chromedp.WaitVisible(chromedp.CSS(row+` td.state .b-published`)))
	for _, c := range []string{"RR287043775IN", "10100024010003", "RR473124828GB"} { // the last one: wrong check digit
		r.scanner.Send("]C0", c)
		time.Sleep(30 * time.Millisecond)
	}
	do("more scans", chromedp.WaitVisible(chromedp.CSS(`#scans tr[data-barcode="RR473124828GB"] .b-bad`)))

	// The serial tap shows the raw bytes and what they became.
	tapSel := `.tap[data-station="induct-1"][data-device="scanner"]`
	// The page redraws the tap as frames come: read it in one go.
	wait("the tap", fmt.Sprintf(`(() => { const e = document.querySelector('%s'); return e !== null &&
		e.innerText.includes("]C0RR473124829GB<CR><LF>") && e.innerText.includes("5d 43 30 52 52"); })()`, tapSel), 5*time.Second)
	if c, out, errs := runCmd(t, "tap", "induct-1", "scanner", "-c", r.cfg); c != 0 || !strings.Contains(out, "code RR473124829GB (]C0)") {
		t.Errorf("scanagent tap: exit %d\n%s%s", c, out, errs)
	}
	if c, out, errs := runCmd(t, "tap", "-c", r.cfg, "--json", "induct-1", "scale"); c != 0 || !strings.Contains(out, `"weight":"1.234 kg"`) {
		t.Errorf("scanagent tap --json scale: exit %d\n%.300s%s", c, out, errs)
	}
	// An operator signs in and opens a receptacle: the station's tile
	// shows both.
	r.scanner.Send("", "OP0042") // frames are read in order: no wait between them
	r.scanner.Send("]C0", "BEBRUABOLPBBAEN60073003000227")
	r.scanner.Send("]C0", "LA123456785RU")
	wait("the operator and the open receptacle", `(() => { const e = document.querySelector('article[data-station="induct-1"] .workflow');
		return e !== null && e.innerText.includes("OP0042") && e.innerText.includes("BEBRUABOLPBBAEN60073003000227") && e.innerText.includes("(1 "); })()`, 10*time.Second)
	do("settle", chromedp.Sleep(1200*time.Millisecond))
	screenshot(t, ctx, "overview")

	// The language switch.
	setLang := func(l string) {
		t.Helper()
		eval(fmt.Sprintf(`(() => { const s = document.querySelector("#lang"); s.value = %q; s.dispatchEvent(new Event("change")); })()`, l))
	}
	setLang("ru")
	if h := text(`h2[data-i18n="stations"]`); h != "Станции" {
		t.Errorf("in Russian the stations are %q", h)
	}
	screenshot(t, ctx, "ru")
	setLang("zh")
	if h := text(`h2[data-i18n="stations"]`); h != "工位" {
		t.Errorf("in Chinese the stations are %q", h)
	}
	setLang("en")

	// Unplug the scanner: its tile turns to disconnected.
	r.scanner.Unplug()
	os.Remove(r.scannerLink) // unplugged: its link goes too
	do("unplugged", chromedp.WaitVisible(chromedp.CSS(`article[data-station="induct-1"] .dev.scanner.disconnected`)))
	screenshot(t, ctx, "unplugged")

	// A tablet.
	do("tablet", chromedp.EmulateViewport(820, 1180), chromedp.Sleep(300*time.Millisecond))
	screenshot(t, ctx, "tablet")

	if errs := blog.errors(); len(errs) > refused {
		t.Errorf("the page logged errors: %q", errs[refused:])
	}
}

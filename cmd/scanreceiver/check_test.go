package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("receiver:\n  name: c\n  batch_sise: 10\npostgres: {url: \"postgres://u:pw@db/x\"}\n"), 0o644)
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"check", "-c", bad}, &out, &errOut)
	if code := exitCode(err, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	want := bad + `:3:3: unknown key "batch_sise" in receiver (did you mean "batch_size"?)` + "\n" +
		bad + ":4:17: postgres.url: must not contain the password; use postgres.password_file or SCANRECEIVER_POSTGRES_PASSWORD\n"
	if errOut.String() != want {
		t.Fatalf("stderr:\n%s\nwant:\n%s", errOut.String(), want)
	}

	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("receiver: {name: c}\npostgres: {url: \"host=db dbname=scans\"}\n"), 0o644)
	out.Reset()
	if err := run(t.Context(), []string{"check", "-c", good}, &out, &errOut); err != nil || !strings.HasSuffix(out.String(), ": ok\n") {
		t.Fatalf("good config: %v %q", err, out.String())
	}
}

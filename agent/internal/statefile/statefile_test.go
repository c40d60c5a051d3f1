package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func records(t *testing.T, path string) ([]string, string) {
	t.Helper()
	f, recs, problem, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	for _, r := range recs {
		out = append(out, string(r))
	}
	return out, problem
}

func TestAppendRewriteReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "st.state")
	f, recs, problem, err := Open(path)
	if err != nil || len(recs) != 0 || problem != "" {
		t.Fatalf("new: %v %q %v", recs, problem, err)
	}
	for _, r := range []string{"a", "bb", "ccc"} {
		if err := f.Append([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	// Not synced, not closed: a killed process leaves what it wrote.
	if got, problem := records(t, path); strings.Join(got, ",") != "a,bb,ccc" || problem != "" {
		t.Fatalf("after appends: %v %q", got, problem)
	}
	if err := f.Rewrite([]byte("snap")); err != nil {
		t.Fatal(err)
	}
	if err := f.Append([]byte("d")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := records(t, path); strings.Join(got, ",") != "snap,d" {
		t.Fatalf("after rewrite: %v", got)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
}

// TestDamage: a torn or damaged tail is cut off and appends go on after
// the last good record; a file whose first record is damaged, or that is
// not a state file, is moved aside, never deleted.
func TestDamage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "st.state")
	f, _, _, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Append([]byte("one"))
	f.Append([]byte("two"))
	f.Close()
	data, _ := os.ReadFile(path)

	torn := append(append([]byte{}, data...), 9, 0, 0, 0, 1, 2) // a header, half a body
	os.WriteFile(path, torn, 0o640)
	f, recs, problem, err := Open(path)
	if err != nil || len(recs) != 2 || !strings.Contains(problem, "cut off") {
		t.Fatalf("torn: %d records, %q, %v", len(recs), problem, err)
	}
	f.Append([]byte("three"))
	f.Close()
	if got, problem := records(t, path); strings.Join(got, ",") != "one,two,three" || problem != "" {
		t.Fatalf("after the cut: %v %q", got, problem)
	}

	flipped := append([]byte{}, data...)
	flipped[len(magic)+recHeader] ^= 0xff // the first record's body
	os.WriteFile(path, flipped, 0o640)
	if got, problem := records(t, path); len(got) != 0 || !strings.Contains(problem, "moved aside") {
		t.Fatalf("first record damaged: %v %q", got, problem)
	}
	os.WriteFile(path, []byte("garbage, not a state file"), 0o640)
	if got, problem := records(t, path); len(got) != 0 || !strings.Contains(problem, "not a state file") {
		t.Fatalf("garbage: %v %q", got, problem)
	}
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) != 2 {
		t.Fatalf("moved aside: %v", aside)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add([]byte(magic + "\x03\x00\x00\x00\x00\x00\x00\x00abc"))
	f.Add([]byte(magic))
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "st.state")
		os.WriteFile(path, data, 0o640)
		fh, _, _, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := fh.Append([]byte("x")); err != nil {
			t.Fatal(err)
		}
		fh.Close()
		if got, problem := records(t, path); len(got) == 0 || got[len(got)-1] != "x" || problem != "" {
			t.Fatalf("append after open: %v %q", got, problem)
		}
	})
}

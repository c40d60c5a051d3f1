package receiver

import (
	"fmt"
	"testing"
)

func TestRanges(t *testing.T) {
	for _, tc := range []struct {
		in   []int64
		want string
	}{
		{nil, "[]"},
		{[]int64{5}, "[[5 5]]"},
		{[]int64{3, 1, 2, 2, 5, 8, 7, 1}, "[[1 3] [5 5] [7 8]]"},
		{[]int64{10, 11, 12, 14}, "[[10 12] [14 14]]"},
	} {
		got := fmt.Sprint(Ranges(tc.in))
		if tc.in == nil {
			got = fmt.Sprint(append([][2]int64{}, Ranges(tc.in)...))
		}
		if got != tc.want {
			t.Errorf("Ranges(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestTopicOf(t *testing.T) {
	for _, tc := range []struct {
		topic  string
		prefix string
		k      kind
	}{
		{"scanagent/MSK/hub-1/scans/induct-3", "scanagent/MSK/hub-1", kindScan},
		{"scanagent/MSK/hub-1/status", "scanagent/MSK/hub-1", kindStatus},
		{"scanagent/MSK/hub-1/health", "scanagent/MSK/hub-1", kindHealth},
		{"scanagent/MSK/hub-1/devices/scans/scanner", "scanagent/MSK/hub-1", kindDevice},
		{"scanagent/MSK/hub-1/scans/a/b", "scanagent/MSK/hub-1", kindUnknown},
		{"scanagent/MSK/hub-1/scans/", "scanagent/MSK/hub-1", kindUnknown},
		{"scanagent/MSK", "", kindUnknown},
	} {
		prefix, k, _ := topicOf(tc.topic, 3)
		if prefix != tc.prefix || k != tc.k {
			t.Errorf("topicOf(%q) = %q %d, want %q %d", tc.topic, prefix, k, tc.prefix, tc.k)
		}
	}
}

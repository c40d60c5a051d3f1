package exitcode

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{Silent{3}, 3, ""},
		{fmt.Errorf("wrapped: %w", Usagef("bad flag %q", "-x")), 2, `prog: wrapped: bad flag "-x"`},
		{errors.New("disk gone"), 1, "prog: disk gone"},
	} {
		var b strings.Builder
		if code := Of(tc.err, "prog", &b); code != tc.code || strings.TrimSpace(b.String()) != tc.out {
			t.Errorf("%v: exit %d, printed %q; want %d, %q", tc.err, code, b.String(), tc.code, tc.out)
		}
	}
}

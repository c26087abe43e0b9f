package wire

import (
	"math"
	"testing"
	"time"
)

// A number of seconds is refused past the longest duration instead of
// wrapping around to a negative one; the message says the bound.
func TestSecondsNeverWrap(t *testing.T) {
	for _, c := range []struct {
		secs float64
		want string // "" for accepted
	}{
		{5, ""},
		{9223372036, ""},
		{9223372036.85, `"expires_in" may be at most 9223372036 seconds`},
		{1e19, `"expires_in" may be at most 9223372036 seconds`},
		{1e308, `"expires_in" may be at most 9223372036 seconds`},
		{-1, `"expires_in" must be a non-negative number of seconds`},
	} {
		d, err := Seconds("expires_in", c.secs, math.MaxInt64)
		switch {
		case c.want == "" && (err != nil || d != time.Duration(c.secs*float64(time.Second))):
			t.Errorf("%v: %v, %v", c.secs, d, err)
		case c.want != "" && (err == nil || err.Error() != c.want):
			t.Errorf("%v: %v, %v; want %q", c.secs, d, err, c.want)
		}
	}
}

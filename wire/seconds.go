package wire

import (
	"fmt"
	"math"
	"net/http"
	"time"
)

// MaxSeconds is the longest duration a number of seconds may give: about
// 292 years.
const MaxSeconds = math.MaxInt64 / int64(time.Second)

// Seconds is secs seconds as a duration: the one reading of a number of
// seconds in the API and the admin API. It refuses negative numbers and
// numbers past limit (at most MaxSeconds) instead of letting them wrap
// around; name is the member, for the message.
func Seconds(name string, secs float64, limit time.Duration) (time.Duration, error) {
	if secs < 0 || math.IsNaN(secs) {
		return 0, Fail(http.StatusBadRequest, `"`+name+`" must be a non-negative number of seconds`)
	}
	// Whole seconds in the message and the comparison, where a float64
	// near the limit cannot round past it.
	if whole := int64(limit / time.Second); secs > float64(whole) {
		return 0, Fail(http.StatusBadRequest, fmt.Sprintf(`"%s" may be at most %d seconds`, name, whole))
	}
	return time.Duration(secs * float64(time.Second)), nil
}

package wire

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Epoch is a time written as float seconds since the Unix epoch, always
// with a fractional part, as Python's time.time() prints it.
type Epoch time.Time

// MarshalJSON writes the seconds, with microseconds.
func (t Epoch) MarshalJSON() ([]byte, error) {
	b := strconv.AppendFloat(nil, float64(time.Time(t).UnixMicro())/1e6, 'f', -1, 64)
	if bytes.IndexByte(b, '.') < 0 {
		b = append(b, ".0"...)
	}
	return b, nil
}

// UnmarshalJSON reads float seconds, for clients of the admin API.
func (t *Epoch) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("epoch seconds: %w", err)
	}
	*t = Epoch(time.UnixMicro(int64(math.Round(f * 1e6))))
	return nil
}

// Time is t as a time.Time.
func (t Epoch) Time() time.Time { return time.Time(t) }

// OptionalEpoch is an Epoch that is null when t is zero.
func OptionalEpoch(t time.Time) *Epoch {
	if t.IsZero() {
		return nil
	}
	e := Epoch(t)
	return &e
}

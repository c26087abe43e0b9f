package caddymodule

import (
	"errors"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
)

// duplicateMember reports the first member name that appears twice in one
// object, at any depth, of valid JSON data, where names that differ only
// in letter case count as the same.
func duplicateMember(data []byte) (string, bool) {
	var se *strictjson.Error
	if errors.As(strictjson.Check(data), &se) && se.Reason == strictjson.Duplicate {
		return se.Member, true
	}
	return "", false
}

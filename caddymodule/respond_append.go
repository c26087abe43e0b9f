package caddymodule

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// A jsonAppender writes its own JSON: byte for byte what writeJSON's
// encoder (compact, without HTML escaping) writes for it, without
// reflection. The answer sent at rate (a minted key) implements it; a
// fuzz test holds the two encodings equal. ok is false for a value it
// leaves to the encoder.
type jsonAppender interface {
	appendJSON(dst []byte) (out []byte, ok bool)
}

func (c createdKey) appendJSON(dst []byte) ([]byte, bool) {
	if len(c.Limits) > 0 || c.Credits != nil {
		return dst, false // listings' extensions, not in a minted key's answer
	}
	dst = append(dst, `{"api_key":`...)
	dst = appendJSONString(dst, c.APIKey)
	dst = c.keyView.appendMembers(append(dst, ','))
	return append(dst, '}'), true
}

// appendMembers writes v's members, in its struct's order, without the
// braces; v has no Limits or Credits.
func (v *keyView) appendMembers(dst []byte) []byte {
	dst = append(dst, `"id":`...)
	dst = appendJSONString(dst, v.ID)
	dst = append(dst, `,"title":`...)
	dst = appendJSONString(dst, v.Title)
	dst = append(dst, `,"created":`...)
	dst = appendEpoch(dst, time.Time(v.Created))
	dst = append(dst, `,"last_used":`...)
	dst = appendOptionalEpoch(dst, v.LastUsed)
	dst = append(dst, `,"key_preview":`...)
	dst = appendJSONString(dst, v.KeyPreview)
	if v.Expires != nil {
		dst = appendEpoch(append(dst, `,"expires":`...), time.Time(*v.Expires))
	}
	if len(v.Scopes) > 0 {
		dst = append(dst, `,"scopes":[`...)
		for i, s := range v.Scopes {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, s)
		}
		dst = append(dst, ']')
	}
	for _, flag := range []struct {
		member string
		set    bool
	}{{`,"disabled":true`, v.Disabled}, {`,"rotated":true`, v.Rotated}, {`,"orphaned":true`, v.Orphaned}, {`,"leaked":true`, v.Leaked}} {
		if flag.set {
			dst = append(dst, flag.member...)
		}
	}
	if v.Plan != "" {
		dst = appendJSONString(append(dst, `,"plan":`...), v.Plan)
	}
	return dst
}

// appendEpoch writes t as epochSeconds.MarshalJSON does.
func appendEpoch(dst []byte, t time.Time) []byte {
	start := len(dst)
	dst = strconv.AppendFloat(dst, float64(t.UnixMicro())/1e6, 'f', -1, 64)
	if bytes.IndexByte(dst[start:], '.') < 0 {
		dst = append(dst, ".0"...)
	}
	return dst
}

func appendOptionalEpoch(dst []byte, t *epochSeconds) []byte {
	if t == nil {
		return append(dst, "null"...)
	}
	return appendEpoch(dst, time.Time(*t))
}

// appendJSONString quotes s. Printable ASCII other than '"' and '\' is
// written as it is, as encoding/json does; anything else (escapes,
// control characters, invalid UTF-8, U+2028) goes through the encoder,
// so that every string comes out as writeJSON writes it.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			buf := bytes.NewBuffer(dst)
			enc := json.NewEncoder(buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(s) // a string always encodes
			return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

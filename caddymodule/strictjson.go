package caddymodule

import (
	"bytes"
	"encoding/json"
	"unicode"
	"unicode/utf8"
)

// duplicateMember reports the first member name that appears twice in one
// object, at any depth, of valid JSON data, where names that differ only
// in letter case count as the same: encoding/json matches them to one
// field (the last wins), while other decoders keep them apart. Decoders
// disagree on which duplicate wins, so such a body is refused rather than
// guessed at.
func duplicateMember(data []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	name, _ := findDuplicate(dec)
	return name, name != ""
}

func findDuplicate(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return "", nil
	}
	switch delim {
	case '{':
		seen := make(map[string]struct{})
		for dec.More() {
			keyTok, err := dec.Token()
			if err != nil {
				return "", err
			}
			key, _ := keyTok.(string)
			folded := foldName(key)
			if _, dup := seen[folded]; dup {
				return key, nil
			}
			seen[folded] = struct{}{}
			if name, err := findDuplicate(dec); name != "" || err != nil {
				return name, err
			}
		}
	case '[':
		for dec.More() {
			if name, err := findDuplicate(dec); name != "" || err != nil {
				return name, err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return "", err
}

// foldName maps names that encoding/json matches to one field (as
// bytes.EqualFold does, e.g. "auth", "AUTH" and "\u212aey" for "key") to
// one string.
func foldName(name string) string {
	var b []byte
	for _, r := range name {
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			b = append(b, byte(r))
			continue
		}
		// The smallest rune of r's fold set, as encoding/json does.
		for {
			r2 := unicode.SimpleFold(r)
			if r2 <= r {
				r = r2
				break
			}
			r = r2
		}
		b = utf8.AppendRune(b, r)
	}
	return string(b)
}

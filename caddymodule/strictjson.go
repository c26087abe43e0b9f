package caddymodule

import (
	"bytes"
	"encoding/json"
)

// duplicateMember reports the first member name that appears twice in one
// object, at any depth, of valid JSON data. Decoders disagree on which
// duplicate wins, so such a body is refused rather than guessed at.
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
			if _, dup := seen[key]; dup {
				return key, nil
			}
			seen[key] = struct{}{}
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

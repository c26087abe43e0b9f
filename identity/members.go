package identity

import "unicode/utf8"

// eachMember hands each member of the JSON object data to fn, in order:
// its name decoded as json.Unmarshal decodes a map's keys (in place when
// it has no escapes), and its value's bytes as a json.RawMessage would
// hold them. data must be valid JSON (as json.Valid reports) beginning
// with '{'. Decoding into a map[string]json.RawMessage instead costs a
// map, a copy of every member and reflection on each sign-in.
func eachMember(data []byte, fn func(name, value []byte)) {
	i := skipSpace(data, 1)
	for i < len(data) && data[i] == '"' {
		end := skipString(data, i)
		name := data[i+1 : end-1]
		if !plainString(name) {
			s, _ := UnquoteJSON(data[i:end]) // valid JSON: cannot fail
			name = []byte(s)
		}
		i = skipSpace(data, skipSpace(data, end)+1) // past ':'
		start := i
		i = skipValue(data, i)
		fn(name, data[start:i])
		if i = skipSpace(data, i); i < len(data) && data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string that begins at i.
func skipString(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(data)
}

// skipValue returns the index just past the value that begins at i.
func skipValue(data []byte, i int) int {
	depth := 0
	for i < len(data) {
		switch data[i] {
		case '"':
			if i = skipString(data, i); depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 { // the end of the object holding a number or literal
				return i
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	return i
}

// plainString reports whether a JSON string's contents decode to
// themselves: no escapes, and valid UTF-8 (json.Unmarshal replaces
// invalid bytes).
func plainString(body []byte) bool {
	ascii := true
	for _, c := range body {
		if c == '\\' {
			return false
		}
		ascii = ascii && c < utf8.RuneSelf
	}
	return ascii || utf8.Valid(body)
}

// Package strictjson is the one reader of JSON that comes from outside the
// gateway: request bodies of the API and the admin API, the "auth" object,
// a token's header and payload, JWK Sets and discovery documents, a secret
// scanner's alerts and key lists.
//
// It accepts a document only if every reader would read it the same way:
// one JSON value, valid UTF-8 throughout (also in escapes: no lone
// surrogate), and no object with a member name twice, also not in another
// letter case. encoding/json keeps the last of two such members (and
// matches struct fields in any case), other decoders keep the first or
// both: a rule applied to one reading could then be escaped through the
// other. Every decision about a document is then taken from the one
// reading that follows Check.
package strictjson

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Reason says why a document was refused.
type Reason int

// The reasons Check refuses a document.
const (
	// NotJSON: the document is not one JSON value.
	NotJSON Reason = iota + 1
	// NotUTF8: the document has bytes that are not UTF-8, or escapes a
	// lone surrogate (which decoders replace, or keep, or refuse).
	NotUTF8
	// Duplicate: an object has the member Error.Member twice, in the
	// same or another letter case.
	Duplicate
)

// Error is why a document is not strict JSON. Its message names at most a
// member, never a value, so it is safe to show to the caller.
type Error struct {
	Reason Reason
	// Member is the name given twice, for Duplicate.
	Member string
}

// Describe is the error as a sentence about subject, e.g. "request body".
func (e *Error) Describe(subject string) string {
	switch e.Reason {
	case NotUTF8:
		return subject + " is not valid UTF-8"
	case Duplicate:
		return subject + " has the member " + strconv.Quote(e.Member) + " more than once (names match in any letter case)"
	}
	return subject + " is not valid JSON"
}

func (e *Error) Error() string { return e.Describe("JSON document") }

// Check returns nil if data is strict JSON, else an *Error.
func Check(data []byte) error {
	return scan(data, nil)
}

// A Member of the top-level object, as Object hands it over.
type Member struct {
	// Name is the member's name, decoded (a view of the document when it
	// has no escapes).
	Name []byte
	// Value is the bytes of the member's value.
	Value []byte
}

// Object checks data as Check does, requires it to be an object, and
// hands each of its members to fn, in order, in the same pass. When it
// fails, fn may have seen members before the fault: the caller discards
// what it kept.
func Object(data []byte, fn func(Member)) error {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return &Error{Reason: NotJSON}
	}
	return scan(data, fn)
}

// scan checks data, handing the top-level members to fn if not nil.
func scan(data []byte, fn func(Member)) error {
	if !utf8.Valid(data) {
		return &Error{Reason: NotUTF8}
	}
	if !json.Valid(data) {
		return &Error{Reason: NotJSON}
	}
	s := scanner{data: data}
	if fn == nil {
		s.value()
	} else {
		s.i = skipSpace(data, 0)
		s.members(fn)
	}
	return s.err
}

// Unmarshal checks data and decodes it into v with encoding/json, whose
// reading of a strict document is the only one there is.
func Unmarshal(data []byte, v any) error {
	if err := Check(data); err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// scanner walks valid JSON for duplicate names and bad escapes.
type scanner struct {
	data []byte
	i    int
	err  error
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func (s *scanner) skipSpace() { s.i = skipSpace(s.data, s.i) }

// value scans one value, stopping at the first fault.
func (s *scanner) value() {
	s.skipSpace()
	if s.i >= len(s.data) {
		return
	}
	switch s.data[s.i] {
	case '{':
		s.members(nil)
	case '[':
		s.i++
		for s.err == nil {
			s.skipSpace()
			if s.i >= len(s.data) {
				return
			}
			switch s.data[s.i] {
			case ']':
				s.i++
				return
			case ',':
				s.i++
				continue
			}
			before := s.i
			if s.value(); s.i == before {
				return
			}
		}
	case '"':
		s.str()
	default: // a number, true, false or null
		for s.i < len(s.data) && !isDelimiter(s.data[s.i]) {
			s.i++
		}
	}
}

func isDelimiter(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// members scans an object's members, from its '{', handing each to top
// if not nil.
func (s *scanner) members(top func(Member)) {
	s.i++
	var first [16][]byte         // names compared in place, on the stack,
	names := first[:0]           // then a map of folded names (so that
	var many map[string]struct{} // huge objects stay linear)
	for s.err == nil {
		s.skipSpace()
		if s.i >= len(s.data) {
			return
		}
		switch s.data[s.i] {
		case '}':
			s.i++
			return
		case ',':
			s.i++
			continue
		case '"':
		default:
			return // not valid JSON: cannot happen after json.Valid
		}
		raw, plain := s.str()
		if s.err != nil {
			return
		}
		name := raw[1 : len(raw)-1]
		if !plain {
			u, _ := Unquote(raw) // a name in valid JSON always decodes
			name = []byte(u)
		}
		var dup bool
		if names, many, dup = seen(names, many, name); dup {
			s.err = &Error{Reason: Duplicate, Member: string(name)}
			return
		}
		s.skipSpace()
		if s.i >= len(s.data) || s.data[s.i] != ':' {
			return
		}
		s.i++
		s.skipSpace()
		before := s.i
		if s.value(); s.err != nil || s.i == before {
			return
		}
		if top != nil {
			top(Member{Name: name, Value: s.data[before:s.i]})
		}
	}
}

// str scans a string from its opening quote and returns it quoted, and
// whether it is plain: only ASCII, no escapes. An escaped lone surrogate
// is a fault.
func (s *scanner) str() (raw []byte, plain bool) {
	start := s.i
	s.i++
	plain = true
	for s.i < len(s.data) {
		switch c := s.data[s.i]; {
		case c == '\\':
			plain = false
			if s.i+1 < len(s.data) && s.data[s.i+1] == 'u' {
				if !s.unicodeEscape() {
					s.err = &Error{Reason: NotUTF8}
					return nil, false
				}
				continue
			}
			s.i += 2
			continue
		case c == '"':
			s.i++
			return s.data[start:s.i], plain
		case c >= utf8.RuneSelf:
			plain = false
		}
		s.i++
	}
	s.err = &Error{Reason: NotJSON}
	return nil, false
}

// unicodeEscape steps over a \uXXXX escape at s.i (and the low half that
// must follow a high surrogate), reporting whether it names a character.
func (s *scanner) unicodeEscape() bool {
	r := s.hex4(s.i + 2)
	s.i += 6
	switch {
	case r < 0:
		return false
	case utf16.IsSurrogate(rune(r)) && r >= 0xDC00: // a low half alone
		return false
	case utf16.IsSurrogate(rune(r)):
		if s.i+1 >= len(s.data) || s.data[s.i] != '\\' || s.data[s.i+1] != 'u' {
			return false
		}
		low := s.hex4(s.i + 2)
		s.i += 6
		return low >= 0xDC00 && low <= 0xDFFF
	}
	return true
}

// hex4 is the value of the four hex digits at i, or -1.
func (s *scanner) hex4(i int) int {
	if i+4 > len(s.data) {
		return -1
	}
	v := 0
	for _, c := range s.data[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | int(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | int(c-'a'+10)
		case 'A' <= c && c <= 'F':
			v = v<<4 | int(c-'A'+10)
		default:
			return -1
		}
	}
	return v
}

// seen reports whether an object that has the names (or, once there are
// many, the folded names in many) has name already, as bytes.EqualFold,
// and so encoding/json, matches names, and adds it.
func seen(names [][]byte, many map[string]struct{}, name []byte) ([][]byte, map[string]struct{}, bool) {
	if many != nil {
		folded := Fold(string(name))
		if _, dup := many[folded]; dup {
			return names, many, true
		}
		many[folded] = struct{}{}
		return names, many, false
	}
	for _, n := range names {
		if bytes.EqualFold(n, name) {
			return names, many, true
		}
	}
	if len(names) == cap(names) {
		many = make(map[string]struct{}, 2*len(names)+1)
		for _, n := range append(names, name) {
			many[Fold(string(n))] = struct{}{}
		}
		return names, many, false
	}
	return append(names, name), many, false
}

// Fold maps names that encoding/json matches to one struct field (as
// bytes.EqualFold does: "auth", "AUTH", and "\u212aey" for "key") to one
// string: ASCII letters upper-cased, other runes the smallest of their
// fold set. Readers that match member names to fields compare with
// bytes.EqualFold, which agrees with it.
func Fold(name string) string {
	var b []byte
	for _, r := range name {
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			b = append(b, byte(r))
			continue
		}
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

// Unquote decodes a JSON string as json.Unmarshal does into a string
// (invalid UTF-8 becomes U+FFFD), and fails for any other JSON value. A
// string without escapes or control characters in valid UTF-8, as tokens,
// names and titles are, is taken as it stands; others go through the
// decoder.
func Unquote(raw []byte) (string, error) {
	if n := len(raw); n >= 2 && raw[0] == '"' && raw[n-1] == '"' {
		body := raw[1 : n-1]
		plain := true
		for _, c := range body {
			if c < 0x20 || c == '"' || c == '\\' {
				plain = false
				break
			}
		}
		if plain && utf8.Valid(body) {
			return string(body), nil
		}
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

package caddymodule

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/caddy-apikeys/caddy-apikeys/identity"
)

// bodyFault is why a request body is not a JSON object read strictly.
type bodyFault int

// The faults readObject finds.
const (
	bodyOK        bodyFault = iota
	bodyNotObject           // something other than a JSON object
	bodyNotUTF8             // not valid UTF-8
	bodyNotJSON             // not valid JSON
	bodyRepeats             // a member name twice in one object, in any letter case
)

// readObject reads a request body strictly: nothing (only white space) or
// a JSON object, in valid UTF-8, where no object repeats a member name
// (duplicateMember). It is stricter than encoding/json, which would keep
// the last of duplicate members (matching names in any letter case) and
// replace invalid UTF-8. It hands the object's members to top, matched
// to names as json.Unmarshal matches fields (FuzzDecodeRequestBody holds
// the two equal), without its reflection, and returns what is wrong and,
// for bodyRepeats, the repeated name.
func readObject(data []byte, top memberSetter) (bodyFault, string) {
	data = bytes.TrimSpace(data)
	switch {
	case len(data) == 0:
		return bodyOK, ""
	case data[0] != '{':
		return bodyNotObject, ""
	case !utf8.Valid(data):
		return bodyNotUTF8, ""
	case !json.Valid(data):
		return bodyNotJSON, ""
	}
	if name, dup := scanMembers(data, top); dup {
		return bodyRepeats, name
	}
	return bodyOK, ""
}

// duplicateMember reports the first member name that appears twice in one
// object, at any depth, of valid JSON data, where names that differ only
// in letter case count as the same: encoding/json matches them to one
// field (the last wins), while other decoders keep them apart. Decoders
// disagree on which duplicate wins, so such a body is refused rather than
// guessed at. It scans the bytes itself (a json.Decoder's tokens cost an
// allocation each, on every request with a body); on data that is not
// valid JSON it stops early and reports nothing.
func duplicateMember(data []byte) (string, bool) {
	return scanMembers(data, nil)
}

// scanMembers is duplicateMember that also hands each member of the
// top-level object to top, with its name folded as encoding/json folds
// names to match fields (foldName) and its value's bytes.
func scanMembers(data []byte, top memberSetter) (string, bool) {
	s := memberScanner{data: data, top: top}
	name := s.value()
	return name, s.dup
}

// A memberSetter keeps the members scanMembers hands it. (An interface,
// not a func: a method value costs an allocation per request.)
type memberSetter interface {
	set(folded string, value []byte)
}

// memberScanner walks valid JSON for duplicateMember.
type memberScanner struct {
	data  []byte
	i     int
	depth int  // of objects
	dup   bool // found: the name value returned is the duplicate (maybe "")
	top   memberSetter
}

func (s *memberScanner) skipSpace() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value scans one value; at the first duplicate name in it, it sets dup
// and returns the name.
func (s *memberScanner) value() string {
	s.skipSpace()
	if s.i >= len(s.data) {
		return ""
	}
	switch s.data[s.i] {
	case '{':
		return s.object()
	case '[':
		s.i++
		for {
			s.skipSpace()
			if s.i >= len(s.data) {
				return ""
			}
			switch s.data[s.i] {
			case ']':
				s.i++
				return ""
			case ',':
				s.i++
				continue
			}
			before := s.i
			if name := s.value(); s.dup || s.i == before {
				return name
			}
		}
	case '"':
		s.str()
	default: // a number, true, false or null
		for s.i < len(s.data) && !isDelimiter(s.data[s.i]) {
			s.i++
		}
	}
	return ""
}

func isDelimiter(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// object scans an object from its '{'.
func (s *memberScanner) object() string {
	s.depth++
	name := s.members()
	s.depth--
	return name
}

// members scans an object's members, after its '{'.
func (s *memberScanner) members() string {
	s.i++
	var names []string           // folded; a map once there are many
	var many map[string]struct{} // (so that huge objects stay linear)
	for {
		s.skipSpace()
		if s.i >= len(s.data) {
			return ""
		}
		switch s.data[s.i] {
		case '}':
			s.i++
			return ""
		case ',':
			s.i++
			continue
		case '"':
		default:
			return "" // not valid JSON
		}
		raw, plain, ok := s.str()
		if !ok {
			return ""
		}
		var folded, name string
		if plain {
			folded = upperASCII(raw)
		} else {
			name, _ = identity.UnquoteJSON(raw) // a name in valid JSON always decodes
			folded = foldName(name)
		}
		dupName := func() string {
			s.dup = true
			if plain {
				return string(raw[1 : len(raw)-1])
			}
			return name
		}
		if many != nil {
			if _, dup := many[folded]; dup {
				return dupName()
			}
			many[folded] = struct{}{}
		} else {
			for _, n := range names {
				if n == folded {
					return dupName()
				}
			}
			if names = append(names, folded); len(names) > 16 {
				many = make(map[string]struct{}, 2*len(names))
				for _, n := range names {
					many[n] = struct{}{}
				}
			}
		}
		s.skipSpace()
		if s.i >= len(s.data) || s.data[s.i] != ':' {
			return ""
		}
		s.i++
		s.skipSpace()
		before := s.i
		if name := s.value(); s.dup || s.i == before {
			return name
		}
		if s.depth == 1 && s.top != nil {
			s.top.set(folded, s.data[before:s.i])
		}
	}
}

// str scans a string from its opening quote and returns it quoted, and
// whether it is plain: only ASCII, no escapes.
func (s *memberScanner) str() (raw []byte, plain, ok bool) {
	start := s.i
	s.i++
	plain = true
	for s.i < len(s.data) {
		switch c := s.data[s.i]; {
		case c == '\\':
			plain = false
			s.i += 2
			continue
		case c == '"':
			s.i++
			return s.data[start:s.i], plain, true
		case c >= utf8.RuneSelf:
			plain = false
		}
		s.i++
	}
	return nil, false, false
}

// upperASCII folds a plain quoted string: its letters in upper case.
func upperASCII(raw []byte) string {
	var b strings.Builder
	b.Grow(len(raw) - 2)
	for _, c := range raw[1 : len(raw)-1] {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		b.WriteByte(c)
	}
	return b.String()
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

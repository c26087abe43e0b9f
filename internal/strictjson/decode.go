package strictjson

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"strconv"
	"strings"
)

// FieldError says which member of a decoded object is wrong, in the terms
// of the JSON, not of the Go type it was decoded into. Its message is
// safe to show to the caller.
type FieldError struct {
	// Member is the member's path, e.g. "hashes" or "owner.user".
	Member string
	// Want is what the member must be, e.g. "a list of strings"; empty
	// for a member the object does not have.
	Want string
}

func (e *FieldError) Error() string {
	if e.Want == "" {
		return "unknown member " + strconv.Quote(e.Member)
	}
	return strconv.Quote(e.Member) + " must be " + e.Want
}

// DecodeObject reads data, a strict JSON object, into the struct v points
// to, refusing members that v's fields (matched as encoding/json matches
// them) do not name, at any depth. Errors are *Error for a document that is not strict
// JSON or not an object, and *FieldError for a member that is unknown or
// of the wrong type.
func DecodeObject(data []byte, v any) error {
	t := reflect.TypeOf(v).Elem()
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return &Error{Reason: NotJSON}
	}
	if err := Check(data); err != nil {
		return err
	}
	if err := checkKnown(data, t, ""); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return &FieldError{Member: memberPath(t, te.Field), Want: describe(te.Type)}
		}
		return &Error{Reason: NotJSON}
	}
	return nil
}

// checkKnown refuses a member of the strict JSON value data, at any
// depth, that the fields of t (a struct, or a pointer, slice, array or map
// of one) do not name; path is where data is, for the message. Values of
// other shapes are left to encoding/json, which names their type errors.
func checkKnown(data []byte, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	data = data[skipSpace(data, 0):]
	if len(data) == 0 {
		return nil
	}
	switch {
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && data[0] == '[':
		return eachElement(data, func(elem []byte) error { return checkKnown(elem, t.Elem(), path) })
	case t.Kind() == reflect.Map && data[0] == '{':
		var fault error
		err := Object(data, func(m Member) {
			if fault == nil {
				fault = checkKnown(m.Value, t.Elem(), join(path, string(m.Name)))
			}
		})
		return cmp.Or(err, fault)
	case t.Kind() != reflect.Struct || data[0] != '{' || reflect.PointerTo(t).Implements(unmarshaler):
		return nil
	}
	fields := knownFields(t)
	var fault error
	err := Object(data, func(m Member) {
		if fault != nil {
			return
		}
		name := string(m.Name)
		for fname, ft := range fields {
			if bytes.EqualFold(m.Name, []byte(fname)) {
				fault = checkKnown(m.Value, ft, join(path, fname))
				return
			}
		}
		fault = &FieldError{Member: join(path, name)}
	})
	if err != nil {
		return err
	}
	return fault
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// eachElement hands each element of the strict JSON array data to fn,
// stopping at its first error.
func eachElement(data []byte, fn func([]byte) error) error {
	s := scanner{data: data, i: 1}
	for {
		s.skipSpace()
		if s.i >= len(s.data) || s.data[s.i] == ']' {
			return nil
		}
		if s.data[s.i] == ',' {
			s.i++
			continue
		}
		start := s.i
		s.value()
		if s.i == start {
			return nil
		}
		if err := fn(s.data[start:s.i]); err != nil {
			return err
		}
	}
}

// knownFields maps the member names of struct type t's fields, those of
// embedded structs included, as encoding/json names them, to their types.
func knownFields(t reflect.Type) map[string]reflect.Type {
	names := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case tag == "-":
		case f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct:
			maps.Copy(names, knownFields(f.Type))
		case tag != "":
			names[tag] = f.Type
		default:
			names[f.Name] = f.Type
		}
	}
	return names
}

// memberPath is encoding/json's path of a field in struct type t as the
// JSON names it: without the segments of embedded structs, which have no
// member of their own.
func memberPath(t reflect.Type, path string) string {
	var out []string
	for seg := range strings.SplitSeq(path, ".") {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			out = append(out, seg)
			continue
		}
		f, ok := t.FieldByName(seg)
		if ok && f.Anonymous {
			t = f.Type
			continue
		}
		out = append(out, seg)
		for f := range t.Fields() {
			if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == seg || (tag == "" && f.Name == seg) {
				t = f.Type
				break
			}
		}
	}
	return strings.Join(out, ".")
}

// describe names what a value of type t is in JSON.
func describe(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer from " + strconv.FormatInt(minInt(t.Bits()), 10) + " to " + strconv.FormatInt(maxInt(t.Bits()), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list of " + plural(describe(t.Elem()))
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a JSON value of another type"
}

func minInt(bits int) int64 { return -1 << (bits - 1) }
func maxInt(bits int) int64 { return 1<<(bits-1) - 1 }

// plural turns "a string" into "strings", "an object" into "objects".
func plural(what string) string {
	switch {
	case strings.HasPrefix(what, "a list of "):
		return "lists of " + strings.TrimPrefix(what, "a list of ")
	case what == "true or false":
		return "booleans"
	}
	noun := strings.TrimPrefix(strings.TrimPrefix(what, "an "), "a ")
	word, rest, _ := strings.Cut(noun, " ")
	if rest != "" {
		return word + "s " + rest
	}
	return word + "s"
}

package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
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
// them) do not name. Errors are *Error for a document that is not strict
// JSON or not an object, and *FieldError for a member that is unknown or
// of the wrong type.
func DecodeObject(data []byte, v any) error {
	fields := knownMembers(reflect.TypeOf(v).Elem())
	var unknown *string // (a name may be "")
	err := Object(data, func(m Member) {
		if unknown != nil {
			return
		}
		for _, f := range fields {
			if bytes.EqualFold(m.Name, []byte(f)) {
				return
			}
		}
		name := string(m.Name)
		unknown = &name
	})
	if err != nil {
		return err
	}
	if unknown != nil {
		return &FieldError{Member: *unknown}
	}
	if err := json.Unmarshal(data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return &FieldError{Member: memberPath(reflect.TypeOf(v).Elem(), te.Field), Want: describe(te.Type)}
		}
		return &Error{Reason: NotJSON}
	}
	return nil
}

// knownMembers lists the member names of struct type t's fields, those of
// embedded structs included, as encoding/json names them.
func knownMembers(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case tag == "-":
		case f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct:
			names = append(names, knownMembers(f.Type)...)
		case tag != "":
			names = append(names, tag)
		default:
			names = append(names, f.Name)
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

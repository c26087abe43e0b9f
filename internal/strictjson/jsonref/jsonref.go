// Package jsonref is the reference that the strict JSON reader and its
// callers are fuzzed against: the same rules, decided by another decoder.
// jsontext (the JSON v2 tokenizer) refuses invalid UTF-8 and lone
// surrogates itself; member names are compared per object by their
// strictjson.Fold. It is for tests.
package jsonref

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/caddy-apikeys/caddy-apikeys/internal/strictjson"
)

// Check decides what strictjson.Check must decide of data.
func Check(data []byte) error {
	if !utf8.Valid(data) {
		return &strictjson.Error{Reason: strictjson.NotUTF8}
	}
	if !json.Valid(data) { // what counts as JSON at all is encoding/json's
		return &strictjson.Error{Reason: strictjson.NotJSON}
	}
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true))
	var objects []map[string]bool
	for {
		tok, err := dec.ReadToken()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &strictjson.Error{Reason: strictjson.NotUTF8}
		}
		switch tok.Kind() {
		case '{':
			objects = append(objects, map[string]bool{})
			continue
		case '}':
			objects = objects[:len(objects)-1]
			continue
		}
		// A name is a string that makes its object's count of tokens odd.
		if kind, length := dec.StackIndex(dec.StackDepth()); kind == '{' && length%2 == 1 && tok.Kind() == '"' {
			name := tok.String()
			seen := objects[len(objects)-1]
			if seen[strictjson.Fold(name)] {
				return &strictjson.Error{Reason: strictjson.Duplicate, Member: name}
			}
			seen[strictjson.Fold(name)] = true
		}
	}
}

// Same reports whether two verdicts of Check agree: both nil, or the same
// reason and member.
func Same(a, b error) bool {
	var ea, eb *strictjson.Error
	if errors.As(a, &ea) != errors.As(b, &eb) {
		return false
	}
	return ea == nil || *ea == *eb
}

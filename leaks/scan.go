package leaks

import (
	"bytes"
	"errors"
	"io"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// Found is a key that ScanKeys found: where, and the key itself, which
// callers must not print (keystore.Preview it).
type Found struct {
	// Line and Column (in bytes) of the key's first character, from 1.
	Line, Column int
	Key          string
}

// scanChunk is how much ScanKeys reads at a time.
const scanChunk = 64 << 10

// ScanKeys reports every key of this format in r: the prefix, exactly
// keystore.BodyLen base62 characters with a valid checksum, and no
// base62 character right before or after, so that random strings of the
// same shape and longer tokens are not reported. It reads r in chunks of
// bounded size, whatever the length of its lines. found's error stops
// the scan and is returned.
func ScanKeys(r io.Reader, prefix string, found func(Found) error) error {
	if prefix == "" {
		return errors.New("scanning for keys needs their prefix")
	}
	pfx := []byte(prefix)
	need := len(prefix) + keystore.BodyLen
	buf := make([]byte, 0, scanChunk+need)
	var (
		start     int64     // offset in r of buf[0]
		counted   int64     // offset up to which lines are counted
		lineStart int64     // offset of the current line's first byte
		line            = 1 // the current line
		before    byte  = 0 // the byte before buf[0]
	)
	// countLines advances the line count to offset to (within buf).
	countLines := func(to int64) {
		seg := buf[counted-start : to-start]
		if n := bytes.Count(seg, []byte{'\n'}); n > 0 {
			line += n
			lineStart = counted + int64(bytes.LastIndexByte(seg, '\n')) + 1
		}
		counted = to
	}
	for eof := false; !eof; {
		n, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			eof = true
		case err != nil:
			return err
		}
		// A key starting at or after keep may continue in the next chunk.
		keep := len(buf)
		if !eof {
			keep = len(buf) - need
		}
		for i := 0; ; {
			j := bytes.Index(buf[i:], pfx)
			if j < 0 || i+j >= keep {
				break
			}
			j += i
			i = j + 1
			end := j + need
			if end > len(buf) {
				continue
			}
			prev := before
			if j > 0 {
				prev = buf[j-1]
			}
			if isBase62(prev) || end < len(buf) && isBase62(buf[end]) {
				continue
			}
			key := string(buf[j:end])
			if keystore.ParseKey(key, prefix) != nil {
				continue
			}
			countLines(start + int64(j))
			if err := found(Found{Line: line, Column: int(start + int64(j) - lineStart + 1), Key: key}); err != nil {
				return err
			}
		}
		if eof {
			break
		}
		countLines(start + int64(keep))
		if keep > 0 {
			before = buf[keep-1]
		}
		buf = buf[:copy(buf, buf[keep:])]
		start += int64(keep)
	}
	return nil
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

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
// base62 character right before (unless it ends an escape: %3D, \n,
// \u0022) or after, so that random strings of the same shape and longer
// tokens are not reported. It reads r in chunks of bounded size,
// whatever the length of its lines. found's error stops the scan and is
// returned.
func ScanKeys(r io.Reader, prefix string, found func(Found) error) error {
	if prefix == "" {
		return errors.New("scanning for keys needs their prefix")
	}
	pfx := []byte(prefix)
	need := len(prefix) + keystore.BodyLen
	buf := make([]byte, 0, scanChunk+need)
	var (
		start     int64  // offset in r of buf[0]
		counted   int64  // offset up to which lines are counted
		lineStart int64  // offset of the current line's first byte
		line      = 1    // the current line
		history   []byte // up to maxEscape bytes before buf[0]
	)
	// glued reports whether a base62 character that is not the end of
	// an escape comes right before buf[j].
	glued := func(j int) bool {
		back := append(history[:len(history):len(history)], buf[max(0, j-maxEscape):j]...)
		return len(back) > 0 && isBase62(back[len(back)-1]) && !endsWithEscape(back)
	}
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
			if glued(j) || end < len(buf) && isBase62(buf[end]) {
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
		history = append(history, buf[:keep]...)
		history = history[max(0, len(history)-maxEscape):]
		buf = buf[:copy(buf, buf[keep:])]
		start += int64(keep)
	}
	return nil
}

func isBase62(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// maxEscape is the longest escape ScanKeys looks back for (\uXXXX).
const maxEscape = 6

// endsWithEscape reports whether b ends with an escape sequence that
// may come right before a key in encoded text: %XX (URLs), \n, \r,
// \t, \b, \f (JSON and C strings) or \uXXXX (JSON).
func endsWithEscape(b []byte) bool {
	n := len(b)
	switch {
	case n >= 3 && b[n-3] == '%' && isHex(b[n-2]) && isHex(b[n-1]):
		return true
	case n >= 2 && b[n-2] == '\\' && bytes.IndexByte([]byte("nrtbf"), b[n-1]) >= 0:
		return true
	case n >= 6 && b[n-6] == '\\' && b[n-5] == 'u' && isHex(b[n-4]) && isHex(b[n-3]) && isHex(b[n-2]) && isHex(b[n-1]):
		return true
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

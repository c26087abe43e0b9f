package leaks

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

func newKey(t testing.TB, prefix string) string {
	t.Helper()
	k, _, err := keystore.NewKeyAndID(prefix, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func scanAll(t testing.TB, r io.Reader, prefix string) []Found {
	t.Helper()
	var got []Found
	if err := ScanKeys(r, prefix, func(f Found) error { got = append(got, f); return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

// escapeBefore matches the escapes that may end right before a key.
var escapeBefore = regexp.MustCompile(`(?:%[0-9A-Fa-f]{2}|\\[nrtbf]|\\u[0-9A-Fa-f]{4})$`)

// naiveScan is what ScanKeys must find, the obvious way: the whole input
// in memory, a regular expression, the checksum, lines counted from the
// start.
func naiveScan(data []byte, prefix string) []Found {
	re := regexp.MustCompile(regexp.QuoteMeta(prefix) + `[0-9A-Za-z]{48}`)
	var out []Found
	for i := 0; i <= len(data); {
		loc := re.FindIndex(data[i:])
		if loc == nil {
			break
		}
		s, e := i+loc[0], i+loc[1]
		i = s + 1
		if s > 0 && isBase62(data[s-1]) && !escapeBefore.Match(data[max(0, s-6):s]) || e < len(data) && isBase62(data[e]) {
			continue
		}
		if keystore.ParseKey(string(data[s:e]), prefix) != nil {
			continue
		}
		line := 1 + bytes.Count(data[:s], []byte{'\n'})
		col := s - (bytes.LastIndexByte(data[:s], '\n') + 1) + 1
		out = append(out, Found{Line: line, Column: col, Key: string(data[s:e])})
	}
	return out
}

func TestScanKeys(t *testing.T) {
	key := newKey(t, "sk-")
	other := newKey(t, "sk-")
	last := "a"
	if key[len(key)-1] == 'a' {
		last = "b"
	}
	badSum := key[:len(key)-1] + last
	for _, c := range []struct {
		name, text string
		want       []Found
	}{
		{"a key alone", key, []Found{{1, 1, key}}},
		{"in an env file", "A=1\nAPI_KEY=" + key + "\n", []Found{{2, 9, key}}},
		{"quoted in JSON", `{"auth": {"api_key": "` + key + `"}}`, []Found{{1, 23, key}}},
		{"two on a line", key + " " + other, []Found{{1, 1, key}, {1, 53, other}}},
		{"in a URL", "https://x.example/?key=" + key + "&a=b", []Found{{1, 24, key}}},
		{"CRLF lines", "a\r\nb\r\n  " + key, []Found{{3, 3, key}}},
		{"wrong checksum", badSum, nil},
		{"one character more", key + "x", nil},
		{"one character less", key[:len(key)-1], nil},
		{"glued after a letter", "x" + key, nil},
		{"URL-encoded, after %3D", "?q=api_key%3D" + key, []Found{{1, 14, key}}},
		{"after a JSON \\n", `"token:\n` + key + `"`, []Found{{1, 10, key}}},
		{"after a JSON \\u0022", `\u0022` + key, []Found{{1, 7, key}}},
		{"after a percent sign and one hex digit", "%3" + key, nil},
		{"after an escaped x", `\x` + key, nil},
		{"another prefix", "pk-" + key[3:], nil},
		{"the seed's example key (no checksum)", "sk-6kwHVPIcgnRtz3LE2WixpqXkvbPEyDRt4QEukkK4vZF4JfaN", nil},
		{"prefix only", "sk-", nil},
		{"empty", "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := scanAll(t, strings.NewReader(c.text), "sk-")
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("found %v, want %v", got, c.want)
			}
		})
	}
	t.Run("a custom prefix", func(t *testing.T) {
		k := newKey(t, "acme_live_")
		text := "sk-" + k[len("acme_live_"):] + "\n" + k
		if got := scanAll(t, strings.NewReader(text), "acme_live_"); len(got) != 1 || got[0].Key != k || got[0].Line != 2 {
			t.Fatalf("found %v", got)
		}
	})
}

// Keys across every chunk boundary, in lines longer than a chunk, read
// one byte at a time or all at once, are found where they are.
func TestScanKeysAcrossChunks(t *testing.T) {
	inputs := map[string][]byte{}
	var b bytes.Buffer
	for i := 0; b.Len() < 3*scanChunk; i++ {
		b.WriteString(strings.Repeat("-", i%97))
		if i%5 == 0 {
			b.WriteByte('\n')
		}
		b.WriteString(newKey(t, "sk-"))
	}
	inputs["many keys"] = b.Bytes()
	inputs["a long line"] = []byte(strings.Repeat("x ", scanChunk) + newKey(t, "sk-"))
	// The first read ends after scanChunk+need bytes, the next ones every
	// scanChunk after that: a key starts at every offset around both.
	need := len("sk-") + keystore.BodyLen
	for _, boundary := range []int{scanChunk + need, 2*scanChunk + need} {
		for off := -2; off <= need+2; off++ {
			inputs[fmt.Sprintf("a key %d bytes before byte %d", off, boundary)] =
				[]byte(strings.Repeat(".", boundary-off) + newKey(t, "sk-") + "\n" + strings.Repeat(".", 100))
			// An escape before the key, split by the boundary too.
			inputs[fmt.Sprintf("an escaped key %d bytes before byte %d", off, boundary)] =
				[]byte(strings.Repeat(".", boundary-off-6) + `\u0041` + newKey(t, "sk-") + "\n" + strings.Repeat(".", 100))
		}
	}
	for name, input := range inputs {
		want := naiveScan(input, "sk-")
		for reader, r := range map[string]io.Reader{
			"at once":  bytes.NewReader(input),
			"bytewise": iotest.OneByteReader(bytes.NewReader(input)),
			"halves":   iotest.HalfReader(bytes.NewReader(input)),
		} {
			t.Run(name+" "+reader, func(t *testing.T) {
				got := scanAll(t, r, "sk-")
				if len(want) == 0 || fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("found %d keys, want %d (first difference at %s)", len(got), len(want), firstDiff(got, want))
				}
			})
		}
	}
}

func firstDiff(a, b []Found) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("%d: %+v vs %+v", i, a[i], b[i])
		}
	}
	return "the end"
}

func TestScanKeysStopsOnError(t *testing.T) {
	stop := fmt.Errorf("stop")
	text := newKey(t, "sk-") + " " + newKey(t, "sk-")
	n := 0
	err := ScanKeys(strings.NewReader(text), "sk-", func(Found) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("ScanKeys = %v after %d keys", err, n)
	}
	if err := ScanKeys(iotest.ErrReader(io.ErrClosedPipe), "sk-", func(Found) error { return nil }); err != io.ErrClosedPipe {
		t.Fatalf("a read error: %v", err)
	}
}

// ScanKeys finds exactly what the naive scan finds, however its input is
// cut into reads.
func FuzzScanKeys(f *testing.F) {
	k := newKey(f, "sk-")
	f.Add([]byte("API_KEY="+k+"\n"), uint8(7))
	f.Add([]byte(k+k), uint8(1))
	f.Add([]byte("x"+k), uint8(0))
	f.Add([]byte("%3D"+k), uint8(1))
	f.Add([]byte(`\u0041`+k), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		var r io.Reader = bytes.NewReader(data)
		if split%2 == 1 {
			r = iotest.OneByteReader(r)
		}
		got := scanAll(t, r, "sk-")
		if want := naiveScan(data, "sk-"); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("found %v, want %v", got, want)
		}
	})
}

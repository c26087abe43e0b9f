package keystore

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestShareTableRecord(t *testing.T) {
	in := ShareTable{Account: "k1", Rate: Rate{Name: "per-10s", Limit: 100, Window: 10 * time.Second},
		Entries: []ShareEntry{{Member: "a", Grant: 60, Wants: true}, {Member: "b", Grant: 40}}}
	b, err := MarshalShareTable(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := UnmarshalShareTable(b)
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	for name, rec := range map[string]string{
		"not JSON":             `{`,
		"no limit":             `{"account":"k","name":"r","limit":0,"window_ns":1,"entries":[]}`,
		"negative grant":       `{"account":"k","name":"r","limit":10,"window_ns":1,"entries":[{"member":"a","grant":-1}]}`,
		"grants over limit":    `{"account":"k","name":"r","limit":10,"window_ns":1,"entries":[{"member":"a","grant":6},{"member":"b","grant":5}]}`,
		"members out of order": `{"account":"k","name":"r","limit":10,"window_ns":1,"entries":[{"member":"b","grant":1},{"member":"a","grant":1}]}`,
		"a member twice":       `{"account":"k","name":"r","limit":10,"window_ns":1,"entries":[{"member":"a","grant":1},{"member":"a","grant":1}]}`,
	} {
		if _, err := UnmarshalShareTable([]byte(rec)); err == nil || !strings.HasPrefix(err.Error(), "share table") {
			t.Errorf("%s: %v, want a share table error", name, err)
		}
	}
}

func TestShareTableIDsAreOnePathSegmentEach(t *testing.T) {
	id := ShareTableID("o/../x", Rate{Name: "per 10s/%", Limit: 100, Window: 10 * time.Second})
	if got := strings.Count(id, "/"); got != 3 {
		t.Fatalf("%q has %d slashes, want 3 (account, name, limit, window)", id, got)
	}
	if id == ShareTableID("o/../x", Rate{Name: "per 10s/%", Limit: 101, Window: 10 * time.Second}) {
		t.Fatal("a changed limit must be another table")
	}
}

// FuzzUnmarshalShareTable: any record decodes or is refused, and what
// decodes is a division a gateway could have written, which encodes
// back to the same table.
func FuzzUnmarshalShareTable(f *testing.F) {
	f.Add([]byte(`{"account":"k","name":"r","limit":10,"window_ns":1000,"entries":[{"member":"a","grant":4,"wants":true},{"member":"b","grant":6}]}`))
	f.Add([]byte(`{"account":"k","name":"r","limit":10,"window_ns":1000,"entries":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tbl, err := UnmarshalShareTable(b)
		if err != nil {
			return
		}
		var sum int64
		for i, e := range tbl.Entries {
			if e.Grant < 0 || i > 0 && e.Member <= tbl.Entries[i-1].Member {
				t.Fatalf("decoded an impossible entry %d: %+v", i, tbl)
			}
			sum += e.Grant
		}
		if sum > tbl.Rate.Limit || tbl.Rate.Limit <= 0 || tbl.Rate.Window <= 0 {
			t.Fatalf("decoded an impossible division: %+v", tbl)
		}
		again, err := MarshalShareTable(tbl)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := UnmarshalShareTable(again); err != nil || !reflect.DeepEqual(back, tbl) {
			t.Fatalf("re-encoded %+v as %s: %+v, %v", tbl, again, back, err)
		}
	})
}

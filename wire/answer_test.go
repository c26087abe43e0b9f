package wire

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestEpochSecondsAlwaysHasFraction(t *testing.T) {
	cases := []struct {
		name string
		in   time.Time
		want string
	}{
		{"microseconds", time.UnixMicro(1728425378066576), "1728425378.066576"},
		{"whole second", time.Unix(1728425378, 0), "1728425378.0"},
		{"half second", time.UnixMicro(1728425378500000), "1728425378.5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.Marshal(Epoch(c.in))
			if err != nil || string(got) != c.want {
				t.Errorf("Epoch(%v) = %s, %v; want %s", c.in, got, err, c.want)
			}
		})
	}
}

func TestCreatedKeyShapeAndOrder(t *testing.T) {
	rec := httptest.NewRecorder()
	err := WriteJSON(rec, 200, Success{Success: true, Result: CreatedKey{APIKey: "sk-x", KeyView: KeyView{
		ID: "id", Title: "<A & B>", Created: Epoch(time.UnixMicro(1728425378066576)), KeyPreview: "sk-...x",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"success":true,"result":{"api_key":"sk-x","id":"id","title":"<A & B>","created":1728425378.066576,"last_used":null,"key_preview":"sk-...x"}}`
	if got := rec.Body.String(); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
}

// Listings' extensions follow the key's fields.
func TestKeyViewWithCredits(t *testing.T) {
	rec := httptest.NewRecorder()
	answer := Success{Success: true, Result: CreatedKey{APIKey: "sk-x", KeyView: KeyView{Credits: &CreditsView{Remaining: 1}}}}
	if err := WriteJSON(rec, 200, answer); err != nil || !strings.Contains(rec.Body.String(), `"credits":{"remaining":1,"amount":0}`) {
		t.Fatalf("body %s, %v", rec.Body.String(), err)
	}
}

package notify

import (
	"strings"
	"testing"
	"time"
)

// The Standard Webhooks specification's own test vector.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignMatchesTheStandard(t *testing.T) {
	secret, err := ParseSecret(vectorSecret)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(vectorTimestamp, 0)
	if got := Sign(secret, vectorID, at, []byte(vectorBody)); got != vectorSignature {
		t.Fatalf("Sign = %s, want %s", got, vectorSignature)
	}
	ts := "1614265330"
	for _, c := range []struct {
		name              string
		id, ts, body, sig string
		now               time.Time
		ok                bool
	}{
		{"the vector", vectorID, ts, vectorBody, vectorSignature, at, true},
		{"among other signatures", vectorID, ts, vectorBody, "v1,bm90IGl0 " + vectorSignature + " v2,x", at, true},
		{"another body", vectorID, ts, `{"test": 2432232315}`, vectorSignature, at, false},
		{"another id", "msg_other", ts, vectorBody, vectorSignature, at, false},
		{"another timestamp", vectorID, "1614265331", vectorBody, vectorSignature, at, false},
		{"too old", vectorID, ts, vectorBody, vectorSignature, at.Add(6 * time.Minute), false},
		{"from the future", vectorID, ts, vectorBody, vectorSignature, at.Add(-6 * time.Minute), false},
		{"another version", vectorID, ts, vectorBody, "v2," + strings.TrimPrefix(vectorSignature, "v1,"), at, false},
		{"no signature", vectorID, ts, vectorBody, "", at, false},
		{"not a timestamp", vectorID, "soon", vectorBody, vectorSignature, at, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Verify(secret, c.id, c.ts, []byte(c.body), c.sig, c.now, 5*time.Minute); got != c.ok {
				t.Fatalf("Verify = %v, want %v", got, c.ok)
			}
		})
	}
}

func TestParseSecret(t *testing.T) {
	for _, bad := range []string{"", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_!!!", "whsec_c2hvcnQ="} {
		if _, err := ParseSecret(bad); err == nil {
			t.Errorf("ParseSecret(%q) accepted", bad)
		}
	}
}

// Receivers' input: Verify never panics and accepts only the signature.
func FuzzVerify(f *testing.F) {
	secret, _ := ParseSecret(vectorSecret)
	f.Add(vectorID, "1614265330", []byte(vectorBody), vectorSignature)
	f.Add("", "", []byte{}, "v1,")
	f.Fuzz(func(t *testing.T, id, ts string, body []byte, sig string) {
		ok := Verify(secret, id, ts, body, sig, time.Unix(vectorTimestamp, 0), 5*time.Minute)
		if ok && (id != vectorID || string(body) != vectorBody) {
			t.Fatalf("Verify accepted id %q body %q", id, body)
		}
	})
}

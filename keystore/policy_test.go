package keystore

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPolicyLifetimes(t *testing.T) {
	now := time.Now()
	day := 24 * time.Hour
	for _, tc := range []struct {
		name    string
		policy  Policy
		actor   Actor
		ask     time.Duration
		want    time.Duration // 0: never expires
		refused bool
	}{
		{name: "no policy", want: 0},
		{name: "asked", ask: time.Hour, want: time.Hour},
		{name: "default", policy: Policy{DefaultLifetime: day}, want: day},
		{name: "cap without default", policy: Policy{MaxLifetime: 7 * day}, want: 7 * day},
		{name: "default under cap", policy: Policy{DefaultLifetime: day, MaxLifetime: 7 * day}, want: day},
		{name: "default over cap", policy: Policy{DefaultLifetime: 30 * day, MaxLifetime: 7 * day}, want: 7 * day},
		{name: "asked over cap", policy: Policy{MaxLifetime: day}, ask: 2 * day, refused: true},
		{name: "issuer cap", actor: Actor{MaxLifetime: 30 * day}, want: 30 * day},
		{name: "issuer cap over policy cap", policy: Policy{MaxLifetime: day}, actor: Actor{MaxLifetime: 30 * day}, want: day},
		{name: "asked over issuer cap", actor: Actor{MaxLifetime: day}, ask: 2 * day, refused: true},
		{name: "negative", ask: -time.Second, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.actor.Operator = true
			m, err := tc.policy.newKey(now, tc.actor, nil, KeyRequest{Lifetime: tc.ask})
			var re *RequestError
			switch {
			case tc.refused:
				if !errors.As(err, &re) {
					t.Fatalf("err = %v, want a RequestError", err)
				}
			case err != nil:
				t.Fatal(err)
			case tc.want == 0 && !m.expires.IsZero():
				t.Fatalf("expires %v, want never", m.expires)
			case tc.want != 0 && !m.expires.Equal(now.Add(tc.want)):
				t.Fatalf("expires in %v, want %v", m.expires.Sub(now), tc.want)
			}
		})
	}
}

func TestPolicyTitlesAndScopes(t *testing.T) {
	p := Policy{}
	op := Actor{Operator: true}
	for _, tc := range []struct {
		name string
		req  KeyRequest
		ok   bool
	}{
		{"default title", KeyRequest{}, true},
		{"long title", KeyRequest{Title: strings.Repeat("é", maxTitleLen)}, true},
		{"too long title", KeyRequest{Title: strings.Repeat("é", maxTitleLen+1)}, false},
		{"control character", KeyRequest{Title: "a\nb"}, false},
		{"invalid UTF-8", KeyRequest{Title: "\xff"}, false},
		{"scope with space", KeyRequest{Scopes: []string{"a b"}}, false},
		{"too many scopes", KeyRequest{Scopes: make([]string, maxScopes+1)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.newKey(time.Now(), op, nil, tc.req)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	m, err := p.newKey(time.Now(), op, nil, KeyRequest{Scopes: []string{"a", "b", "a"}})
	if err != nil || len(m.scopes) != 2 || m.title != DefaultTitle {
		t.Fatalf("repeated scopes: %+v, %v", m, err)
	}
}

func TestOwnersInRecords(t *testing.T) {
	for _, o := range []Owner{
		PasswordUser("alice"), Service("alice"), {Source: "jwt:https://idp.example/realms/a", Name: "alice@example.com"},
		PasswordUser("name with spaces/and:colons"),
		PasswordUser("service\x1fdeploy"), // as a release without a name rule may have stored it
	} {
		k := Key{ID: "id", Owner: o, Created: time.Now()}
		got, err := decodeKey("id", encodeKey(k))
		if err != nil || got.Owner != o {
			t.Errorf("owner %+v came back as %+v (%v)", o, got.Owner, err)
		}
	}
	if b := encodeKey(Key{Owner: PasswordUser("alice")}); b[0] != recordVersion {
		t.Fatal("a password user's key record changed version")
	}
	if PasswordUser("alice").Encode() != "alice" {
		t.Fatal("a password user's index form changed")
	}
	// Names are quoted for people, so that none passes for another source.
	if s := PasswordUser("deploy (service)").String(); s != `"deploy (service)"` {
		t.Fatalf("String = %s", s)
	}
	if s := Service("deploy").String(); s != `"deploy" (service)` {
		t.Fatalf("String = %s", s)
	}
}

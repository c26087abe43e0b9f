// Package scannertest is a fake secret scanner for tests: it signs
// alerts with its own ECDSA P-256 keys, as GitHub's secret scanning
// does, and publishes the keys in GitHub's format on loopback.
package scannertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// Scanner is a fake secret scanner: it signs alerts with its own keys and
// publishes them in GitHub's format on loopback.
type Scanner struct {
	*httptest.Server
	mu      sync.Mutex
	keys    map[string]*ecdsa.PrivateKey
	Fetches atomic.Int64 // key list requests served
	// Broken, if set, is served instead of the key list (a faulty
	// source: "{}", "null", HTML…).
	Broken atomic.Pointer[string]
}

// NewScanner starts a scanner publishing one key, "k1".
func NewScanner(t testing.TB) *Scanner {
	s := &Scanner{keys: map[string]*ecdsa.PrivateKey{}}
	s.AddKey(t, "k1")
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Fetches.Add(1)
		if b := s.Broken.Load(); b != nil {
			_, _ = w.Write([]byte(*b))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		var list struct {
			PublicKeys []map[string]any `json:"public_keys"`
		}
		for id, k := range s.keys {
			der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
			list.PublicKeys = append(list.PublicKeys, map[string]any{"key_identifier": id,
				"key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "is_current": true})
		}
		_ = json.NewEncoder(w).Encode(list)
	}))
	t.Cleanup(s.Close)
	return s
}

// AddKey makes and publishes a key named id.
func (s *Scanner) AddKey(t testing.TB, id string) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.keys[id] = k
	s.mu.Unlock()
}

// Sign returns the signature header of body by key id.
func (s *Scanner) Sign(t testing.TB, id string, body []byte) string {
	s.mu.Lock()
	k := s.keys[id]
	s.mu.Unlock()
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

package keystore

import (
	"context"
	"sync/atomic"
	"testing"
)

var (
	memoBuilds atomic.Int64
	testMemo   = NewMemo(func(k *Key) *string {
		memoBuilds.Add(1)
		title := k.Title + "!"
		return &title
	})
)

// A Memo's value is built once, when a verified key is cached, and shared
// by every verification of it; a key read from the store gets its own.
func TestMemoBuiltOncePerCachedKey(t *testing.T) {
	kr, _ := newTestKeyring(t, Options{})
	ctx := context.Background()
	m, err := kr.Mint(ctx, operatorFor("svc"), KeyRequest{Title: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	before := memoBuilds.Load()
	k, err := kr.VerifyWithin(ctx, m.Secret, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	first := testMemo.Of(k)
	if *first != "ci!" {
		t.Fatalf("memo of a key titled ci = %q", *first)
	}
	again, _ := kr.VerifyWithin(ctx, m.Secret, nil, "")
	if testMemo.Of(again) != first {
		t.Error("memo rebuilt for a cached key")
	}
	if n := memoBuilds.Load() - before; n != 1 {
		t.Errorf("built %d times for one cached key", n)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = testMemo.Of(k) }); allocs != 0 {
		t.Errorf("Of allocates %v times", allocs)
	}
	stored, err := kr.Store().KeyByID(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if v := testMemo.Of(&stored); v == first || *v != "ci!" {
		t.Errorf("a stored key's memo = %p %q, want its own", v, *v)
	}
}

// BenchmarkMemoOf reads a memo of a cached key, as a gateway does per
// request.
func BenchmarkMemoOf(b *testing.B) {
	kr, _ := newTestKeyring(b, Options{})
	ctx := context.Background()
	m, err := kr.Mint(ctx, operatorFor("svc"), KeyRequest{Title: "ci"})
	if err != nil {
		b.Fatal(err)
	}
	k, err := kr.VerifyWithin(ctx, m.Secret, nil, "")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = testMemo.Of(k)
	}
}

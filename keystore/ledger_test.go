package keystore

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestLedgerKeepsHeldBlocks(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("boot ids are read from /proc")
	}
	path := filepath.Join(t.TempDir(), "ledger")
	l, left, err := openLedger(path, 8)
	if err != nil || len(left) != 0 {
		t.Fatalf("new ledger: %v, %v", left, err)
	}
	if _, _, err := openLedger(path, 8); !errors.Is(err, errLedgerLocked) {
		t.Fatalf("a second process on the ledger: %v", err)
	}
	held, _ := l.take("acct-held", 7)
	held.state, held.gen, held.period, held.reserved, held.spent = slotHeld, 2, 3, 100, 40
	pending, _ := l.take("acct-pending", 8)
	_ = pending // a reservation whose outcome is unknown
	returning, _ := l.take("acct-returning", 9)
	returning.state, returning.reserved = slotReturning, 50
	if n := l.inUse(); n != 3 {
		t.Fatalf("%d slots in use, want 3", n)
	}
	if err := l.close(); err != nil { // as a killed process leaves it
		t.Fatal(err)
	}

	l, left, err = openLedger(path, 8)
	if err != nil {
		t.Fatal(err)
	}
	// The returning block is written off; the held one comes back with
	// what was left of it, the pending one for the store to tell.
	slices.SortFunc(left, func(a, b leftover) int { return strings.Compare(a.account, b.account) })
	if len(left) != 2 || left[0].account != "acct-held" || left[0].unspent != 60 || !left[0].trusted ||
		left[0].gen != 2 || left[0].period != 3 || left[0].block != 7 || left[0].reserving {
		t.Fatalf("leftovers: %+v, want the held block, 60 unspent, first", left)
	}
	if left[1].account != "acct-pending" || left[1].block != 8 || !left[1].reserving || !left[1].trusted {
		t.Fatalf("leftovers: %+v, want the pending block second, being reserved", left)
	}
	if n := l.inUse(); n != 2 {
		t.Fatalf("%d slots in use after reopening, want the held and the pending one", n)
	}
	_ = l.close()

	// After a reboot what reached the disk may be stale: not trusted.
	data, _ := os.ReadFile(path)
	copy(data[16:], "another-boot-id-0000000000000000000")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, left, err = openLedger(path, 8)
	if err != nil || len(left) != 1 || left[0].trusted || left[0].reserving {
		t.Fatalf("leftovers after a reboot: %+v, %v; want the held one, untrusted (the pending one written off)", left, err)
	}
	_ = l.close()
}

func TestLedgerOverflowsIntoMemory(t *testing.T) {
	l, _, err := openLedger("", 2)
	if err != nil {
		t.Fatal(err)
	}
	var idx []int
	for range 3 {
		_, i := l.take("a", 1)
		idx = append(idx, i)
	}
	if idx[2] != -1 {
		t.Fatalf("slot indexes %v: the third should be a spare in memory", idx)
	}
}

// Caddy makes its data directory lazily; the ledger may be its first file.
func TestLedgerMakesItsDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not", "yet", "ledger")
	l, _, err := openLedger(path, 2)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.close()
	if info, err := os.Stat(filepath.Dir(path)); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("the ledger's directory: %v %v", info, err)
	}
}

package keystore

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"unsafe"
)

// The ledger keeps the credit blocks a gateway holds in a file mapped
// into its memory. Spending a credit is a store to that memory, which
// the kernel keeps (and writes back) when the process is killed, so a
// gateway restarted after kill -9 knows exactly what it had not spent and
// gives it back. A block whose reservation was under way is given back
// whole if the store shows it was made. After a reboot (another boot id)
// what reached the disk may be stale, so held blocks are then written off:
// credits may be under-spent, never over-spent.
type ledger struct {
	mu       sync.Mutex
	mem      []byte       // the mapping, or plain memory when volatile
	slots    []ledgerSlot // views into mem
	free     []int        // free slot indexes
	close    func() error // unmaps and closes the file
	volatile bool         // no file: a crash writes off every held block
}

// ledgerSlot is one held block as laid out in the file: 96 bytes.
type ledgerSlot struct {
	state    uint64 // slotFree, slotPending, slotHeld, slotReturning
	block    uint64
	gen      uint64
	period   int64
	reserved int64
	spent    int64
	account  [idLen]byte
	_        [24]byte
}

// States of a ledger slot. A pending slot's reservation may or may not
// have been applied: after a crash the store's recent operations tell
// (giveBackReserved). A returning slot's return may or may not have been
// applied either, and an old enough return is forgotten by the store: it
// is written off after a crash, which can only under-spend.
const (
	slotFree = iota
	slotPending
	slotHeld
	slotReturning
)

const (
	ledgerMagic      = "APIKLDG1"
	ledgerHeaderSize = 64
	ledgerSlotSize   = int(unsafe.Sizeof(ledgerSlot{}))
	// defaultLedgerSlots is how many accounts can hold credits at once
	// before further holds lose their crash safety.
	defaultLedgerSlots = 1 << 16
)

// leftover is a block found held when a ledger was opened.
type leftover struct {
	slot    int
	account string
	block   uint64
	gen     uint64
	period  int64
	unspent int64
	trusted bool // written in this boot: unspent is exact
	// reserving: the block's reservation was under way, and unspent is
	// unknown (the whole block if it was made).
	reserving bool
}

func (s *ledgerSlot) accountID() string {
	return string(bytes.TrimRight(s.account[:], "\x00"))
}

// openLedger maps the ledger file at path (creating it with room for n
// slots), or keeps one in memory when path is "". It returns the blocks
// held when the last process using the file stopped.
func openLedger(path string, n int) (*ledger, []leftover, error) {
	if n <= 0 {
		n = defaultLedgerSlots
	}
	size := ledgerHeaderSize + n*ledgerSlotSize
	l := &ledger{}
	if path == "" {
		l.mem, l.volatile, l.close = make([]byte, size), true, func() error { return nil }
	} else {
		mem, closeFn, err := mapFile(path, size)
		if err != nil {
			return nil, nil, fmt.Errorf("credit ledger %s: %w", path, err)
		}
		l.mem, l.close = mem, closeFn
	}
	n = (len(l.mem) - ledgerHeaderSize) / ledgerSlotSize
	l.slots = unsafe.Slice((*ledgerSlot)(unsafe.Pointer(&l.mem[ledgerHeaderSize])), n)
	boot := bootID()
	header := l.mem[:ledgerHeaderSize]
	sameBoot := string(header[:len(ledgerMagic)]) == ledgerMagic && boot != "" &&
		string(bytes.TrimRight(header[16:ledgerHeaderSize], "\x00")) == boot
	if string(header[:len(ledgerMagic)]) != ledgerMagic {
		clear(l.mem)
	}
	var left []leftover
	for i := len(l.slots) - 1; i >= 0; i-- {
		s := &l.slots[i]
		switch s.state {
		case slotFree:
			l.free = append(l.free, i)
			continue
		case slotHeld:
			left = append(left, leftover{slot: i, account: s.accountID(), block: s.block, gen: s.gen,
				period: s.period, unspent: s.reserved - s.spent, trusted: sameBoot})
			continue
		case slotPending:
			if sameBoot && s.block != 0 {
				left = append(left, leftover{slot: i, account: s.accountID(), block: s.block, trusted: true, reserving: true})
				continue
			}
		}
		*s = ledgerSlot{} // returning, or pending from another boot: written off
		l.free = append(l.free, i)
	}
	copy(header, ledgerMagic)
	clear(header[16:])
	copy(header[16:], boot)
	return l, left, nil
}

// take returns a free slot for account, marked pending, or a volatile one
// when the file is full.
func (l *ledger) take(account string, block uint64) (*ledgerSlot, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) == 0 { // full: this block is not protected from a crash
		s := &ledgerSlot{state: slotPending, block: block}
		copy(s.account[:], account)
		return s, -1
	}
	i := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	s := &l.slots[i]
	*s = ledgerSlot{state: slotPending, block: block}
	copy(s.account[:], account)
	return s, i
}

// release frees a slot taken with take.
func (l *ledger) release(s *ledgerSlot, i int) {
	*s = ledgerSlot{}
	if i < 0 {
		return
	}
	l.mu.Lock()
	l.free = append(l.free, i)
	l.mu.Unlock()
}

// inUse counts the slots holding blocks, for tests and metrics.
func (l *ledger) inUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.slots) - len(l.free)
}

// bootID names the running boot of the machine, or "" where unknown.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

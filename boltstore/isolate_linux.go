package boltstore

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// limitMemory caps the checking process's address space at what checking
// a sound file of size bytes needs, with room to spare: what it has mapped
// already, twice the file (bbolt maps it rounded up to a power of two),
// and 1 GiB for the check's own memory (a few MB at 10⁶ keys). A damaged page header that makes
// bbolt allocate without bound then ends the check ("out of memory")
// instead of the host's memory.
func limitMemory(size int64) {
	const headroom = 1 << 30
	limit := uint64(mappedBytes()) + 2*uint64(size) + headroom
	_ = syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: limit, Max: limit})
}

// mappedBytes is the process's address space in use (VmSize), or 0.
func mappedBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmSize:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

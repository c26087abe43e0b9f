package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// walkPages checks, before bbolt reads the file, what bbolt trusts in it:
// every page reachable from the root bucket and the freelist lies within
// the file's pages, is referenced once, is of the kind its parent says,
// and has its elements within its bounds. bbolt reads a page's element
// count and overflow as they are, so a damaged header sends its check
// into a walk of billions of pages or a read past the mapping; here the
// file is read with plain reads, each bounded, so that damage is found in
// milliseconds and named. Layout (bbolt's): a page is a 16-byte header
// (id, flags, count, overflow) then count 16-byte elements; a branch
// element is (pos, ksize, child page), a leaf element (flags, pos, ksize,
// vsize), with its key pos bytes past the element; a bucket's value is
// (root page, sequence), followed by the bucket's page when root is 0.
func walkPages(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	m := newestMeta(f)
	if m == nil {
		return nil // bbolt refuses it, saying so
	}
	w := pageWalk{f: f, meta: m, seen: make([]bool, m.pgid)}
	if m.freelist != ^uint64(0) {
		if err := w.freelist(m.freelist); err != nil {
			return &DamagedError{Path: path, Problem: "its pages do not hold together: " + err.Error()}
		}
	}
	if err := w.bucket(m.root, 0); err != nil {
		return &DamagedError{Path: path, Problem: "its pages do not hold together: " + err.Error()}
	}
	return nil
}

const (
	pageHeaderSize  = 16
	pageElementSize = 16
	flagBranch      = 0x01
	flagLeaf        = 0x02
	flagFreelist    = 0x10
	flagBucketValue = 0x01
	maxTreeDepth    = 64 // far deeper than any tree of 2⁶⁴ pages
)

// pageWalk is one walk of a file's pages.
type pageWalk struct {
	f    *os.File
	meta *boltMeta
	seen []bool // pages reached, below the high-water mark
}

// span is the bytes of one page and its overflow, read as needed: a
// file's page, or a bucket's page kept in its parent's value.
type span struct {
	f    *os.File
	base int64  // the page's offset in f
	n    int64  // its length
	mem  []byte // its first bytes: the first page, or all of a bucket's page kept in a value
}

// at returns n bytes at off, or an error if they lie past the span.
func (s span) at(off, n uint64) ([]byte, error) {
	if off+n < off || off+n > uint64(s.n) {
		return nil, errPastPage
	}
	if off+n <= uint64(len(s.mem)) {
		return s.mem[off : off+n], nil
	}
	b := make([]byte, n)
	_, err := s.f.ReadAt(b, s.base+int64(off))
	return b, err
}

var errPastPage = errors.New("lies past the page")

// read checks that page id and its overflow pages lie below the
// high-water mark, were not reached before and are of a kind in want,
// and returns their span.
func (w *pageWalk) read(id uint64, want uint16) (span, error) {
	le := binary.LittleEndian
	if id < 2 || id >= w.meta.pgid {
		return span{}, fmt.Errorf("a reference to page %d, outside its pages 2–%d", id, w.meta.pgid-1)
	}
	size := int64(w.meta.pageSize)
	head := make([]byte, size) // the header, and the elements it holds
	if _, err := w.f.ReadAt(head, int64(id)*size); err != nil {
		return span{}, fmt.Errorf("page %d: %v", id, err)
	}
	overflow := uint64(le.Uint32(head[12:]))
	switch {
	case le.Uint64(head) != id:
		return span{}, fmt.Errorf("page %d says it is page %d", id, le.Uint64(head))
	case !oneOf(le.Uint16(head[8:]), want):
		return span{}, fmt.Errorf("page %d is of kind %#x where one of %#x belongs", id, le.Uint16(head[8:]), want)
	case id+overflow >= w.meta.pgid:
		return span{}, fmt.Errorf("page %d claims %d more pages, past its last page %d", id, overflow, w.meta.pgid-1)
	}
	for p := id; p <= id+overflow; p++ {
		if w.seen[p] {
			return span{}, fmt.Errorf("page %d is referenced twice", p)
		}
		w.seen[p] = true
	}
	return span{f: w.f, base: int64(id) * size, n: int64(overflow+1) * size, mem: head}, nil
}

// freelist checks the freelist page's bounds.
func (w *pageWalk) freelist(id uint64) error {
	p, err := w.read(id, flagFreelist)
	if err != nil {
		return err
	}
	head, err := p.at(0, pageHeaderSize+8)
	if err != nil {
		return fmt.Errorf("freelist page %d is cut short", id)
	}
	n, at := uint64(binary.LittleEndian.Uint16(head[10:])), uint64(pageHeaderSize)
	if n == 0xFFFF { // the count is in the first element
		n, at = binary.LittleEndian.Uint64(head[pageHeaderSize:]), at+8
	}
	if n > (uint64(p.n)-at)/8 {
		return fmt.Errorf("freelist page %d claims %d free pages, more than it holds", id, n)
	}
	return nil
}

// bucket walks the tree of a bucket whose root is page id.
func (w *pageWalk) bucket(id uint64, depth int) error {
	p, err := w.read(id, flagBranch|flagLeaf)
	if err != nil {
		return err
	}
	return w.page(p, id, depth)
}

// page checks one page's elements and walks what they refer to. id is 0
// for a bucket's page kept in its parent's value.
func (w *pageWalk) page(p span, id uint64, depth int) error {
	le := binary.LittleEndian
	if depth > maxTreeDepth {
		return fmt.Errorf("page %d: a tree deeper than %d", id, maxTreeDepth)
	}
	head, err := p.at(0, pageHeaderSize)
	if err != nil {
		return fmt.Errorf("a bucket of page %d is cut short", id)
	}
	flags, count := le.Uint16(head[8:]), uint64(le.Uint16(head[10:]))
	if !oneOf(flags, flagBranch|flagLeaf) {
		return fmt.Errorf("a bucket's page (in page %d) is of kind %#x", id, flags)
	}
	elements, err := p.at(pageHeaderSize, count*pageElementSize)
	if err != nil {
		return fmt.Errorf("page %d claims %d elements, more than it holds", id, count)
	}
	for i := range count {
		at := pageHeaderSize + i*pageElementSize
		e := elements[i*pageElementSize : (i+1)*pageElementSize]
		if flags&flagBranch != 0 {
			if _, err := p.at(at+uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:]))); err != nil {
				return fmt.Errorf("page %d: the key of element %d %v", id, i, err)
			}
			if err := w.bucket(le.Uint64(e[8:]), depth+1); err != nil {
				return err
			}
			continue
		}
		keyAt := at + uint64(le.Uint32(e[4:]))
		valueAt := keyAt + uint64(le.Uint32(e[8:]))
		vsize := uint64(le.Uint32(e[12:]))
		if le.Uint32(e[0:])&flagBucketValue == 0 {
			if valueAt+vsize > uint64(p.n) {
				return fmt.Errorf("page %d: element %d %v", id, i, errPastPage)
			}
			continue
		}
		v, err := p.at(valueAt, vsize)
		switch {
		case err != nil:
			return fmt.Errorf("page %d: element %d %v", id, i, err)
		case len(v) < 16:
			return fmt.Errorf("page %d: element %d is a bucket too short to be one", id, i)
		}
		if root := le.Uint64(v); root != 0 {
			err = w.bucket(root, depth+1)
		} else {
			err = w.page(span{mem: v[16:], n: int64(len(v) - 16)}, 0, depth+1)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// oneOf says whether a page's flags are exactly one of the kinds in want:
// bbolt gives every page one.
func oneOf(flags, want uint16) bool {
	return flags != 0 && flags&(flags-1) == 0 && flags&want != 0
}

package caddymodule

import (
	"slices"
	"testing"
)

// A membership's listeners hear the last report when they start, then
// every change, and nothing once stopped.
func TestMembersFanOut(t *testing.T) {
	m := &members{listeners: make(map[int]func(int, int))}
	var a, b [][2]int
	stopA := m.listen(func(i, n int) { a = append(a, [2]int{i, n}) })
	if len(a) != 0 {
		t.Fatalf("a listener heard %v before any report", a)
	}
	m.report(0, 2)
	stopB := m.listen(func(i, n int) { b = append(b, [2]int{i, n}) })
	m.report(1, 3)
	stopA()
	m.report(0, 1)
	stopB()
	m.report(2, 4)
	if want := [][2]int{{0, 2}, {1, 3}}; !slices.Equal(a, want) {
		t.Errorf("the first listener heard %v, want %v", a, want)
	}
	if want := [][2]int{{0, 2}, {1, 3}, {0, 1}}; !slices.Equal(b, want) {
		t.Errorf("the second listener heard %v, want %v (the last report first)", b, want)
	}
}

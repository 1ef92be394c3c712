package plugin

import (
	"bytes"
	"testing"
)

// TestMemoryPool_reuseIsZeroed checks that a buffer handed to a new
// instance after another instance used and freed it is all zeros, grown
// or not: no guest ever sees another guest's data.
func TestMemoryPool_reuseIsZeroed(t *testing.T) {
	p := newMemoryPool(2)
	m := p.Allocate(65536, 4*65536)
	buf := m.Reallocate(65536)
	for i := range buf {
		buf[i] = 0xAA
	}
	buf = m.Reallocate(2 * 65536) // memory.grow
	for i := 65536; i < len(buf); i++ {
		if buf[i] != 0 {
			t.Fatalf("grown byte %d = %#x, want 0", i, buf[i])
		}
		buf[i] = 0xBB
	}
	m.Free()
	m.Free() // idempotent

	m2 := p.Allocate(65536, 4*65536)
	got := m2.Reallocate(3 * 65536)
	if !bytes.Equal(got, make([]byte, 3*65536)) {
		t.Fatal("reused memory is not zeroed")
	}
	if m2.Reallocate(5*65536) != nil {
		t.Fatal("Reallocate beyond max succeeded")
	}
}

package plugin

import (
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// memoryPool hands instances linear memories from buffers that earlier
// instances freed. A buffer is zeroed when it is returned, so a new
// instance still starts with all-zero memory, as WebAssembly requires,
// but without asking the Go runtime for fresh pages: this is most of what
// makes an isolated instance cheap. It is safe for concurrent use.
type memoryPool struct {
	mu   sync.Mutex
	free [][]byte
	max  int // buffers kept
}

func newMemoryPool(keep int) *memoryPool { return &memoryPool{max: keep} }

// Allocate implements experimental.MemoryAllocator.
func (p *memoryPool) Allocate(capacity, max uint64) experimental.LinearMemory {
	p.mu.Lock()
	var buf []byte
	for i := len(p.free) - 1; i >= 0; i-- {
		if uint64(cap(p.free[i])) >= capacity {
			buf = p.free[i]
			p.free[i] = p.free[len(p.free)-1]
			p.free = p.free[:len(p.free)-1]
			break
		}
	}
	p.mu.Unlock()
	if buf == nil {
		buf = make([]byte, 0, capacity)
	}
	return &pooledMemory{pool: p, buf: buf[:0], max: max}
}

type pooledMemory struct {
	pool *memoryPool
	buf  []byte
	max  uint64
}

// Reallocate implements experimental.LinearMemory. Bytes beyond the old
// length are zero: pooled buffers are cleared up to their full capacity
// when freed, and fresh ones come zeroed from make.
func (m *pooledMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	nb := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.max))
	copy(nb, m.buf)
	m.buf = nb
	return nb
}

// Free implements experimental.LinearMemory.
func (m *pooledMemory) Free() {
	buf := m.buf
	m.buf = nil
	if buf == nil {
		return
	}
	clear(buf[:len(buf)]) // the rest of cap was never handed out, so is still zero
	p := m.pool
	p.mu.Lock()
	if len(p.free) < p.max {
		p.free = append(p.free, buf[:0])
	}
	p.mu.Unlock()
}

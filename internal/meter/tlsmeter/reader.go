package tlsmeter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Reader reads handshake events from the meter's ring buffer. Use one
// Reader per meter at a time: two would split the events between them.
// Read and ReadRaw must not be called concurrently; Stats and Close may be
// called from any goroutine.
type Reader struct {
	m          *Meter
	rd         *ringbuf.Reader
	stats      *ebpf.Map
	rec        ringbuf.Record
	delivered  atomic.Uint64
	monoToWall int64
	names      *interner
}

// RingStats account for every event the kernel tried to emit.
type RingStats struct {
	// Produced counts events the kernel tried to emit, since the ring
	// buffer was created (for a pinned meter: since it was first pinned).
	Produced uint64
	// Dropped counts events lost because the ring buffer was full.
	Dropped uint64
	// Delivered counts events this Reader decoded.
	Delivered uint64
}

// Events returns a Reader of the meter's handshake events. When it is the
// only Reader since the ring buffer was created, then once it has read all
// pending events, Delivered + Dropped == Produced exactly.
func (m *Meter) Events() (*Reader, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("read tls events: %w", os.ErrClosed)
	}
	rd, err := ringbuf.NewReader(m.maps.Events)
	if err != nil {
		return nil, fmt.Errorf("read tls events: %w", err)
	}
	r := &Reader{m: m, rd: rd, stats: m.maps.Stats, monoToWall: monoToWall(), names: &interner{m: make(map[string]string)}}
	m.readers[r] = struct{}{}
	return r, nil
}

// ReadRaw blocks until the next event and copies it into ev. It fails with
// an error matching ringbuf.ErrClosed once the Reader or its Meter is
// closed.
func (r *Reader) ReadRaw(ev *RawEvent) error {
	for {
		err := r.rd.ReadInto(&r.rec)
		if errors.Is(err, ringbuf.ErrFlushed) {
			// Left over from a Read whose context ended.
			continue
		}
		if err != nil {
			return fmt.Errorf("read tls event: %w", err)
		}
		if err := decodeRaw(r.rec.RawSample, ev); err != nil {
			return err
		}
		r.delivered.Add(1)
		return nil
	}
}

// Read blocks until the next event or until ctx is done. It fails with an
// error matching ringbuf.ErrClosed once the Reader or its Meter is closed,
// and with ctx.Err() when ctx ends first.
func (r *Reader) Read(ctx context.Context) (Event, error) {
	// A Flush wakes the blocked ring buffer read; setting a deadline would
	// wait for the read to finish first.
	stop := context.AfterFunc(ctx, func() { _ = r.rd.Flush() })
	defer stop()
	for {
		if err := ctx.Err(); err != nil {
			return Event{}, err
		}
		err := r.rd.ReadInto(&r.rec)
		if errors.Is(err, ringbuf.ErrFlushed) || errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return Event{}, fmt.Errorf("read tls event: %w", err)
		}
		var raw RawEvent
		if err := decodeRaw(r.rec.RawSample, &raw); err != nil {
			return Event{}, err
		}
		r.delivered.Add(1)
		return newEvent(&raw, r.monoToWall, r.names), nil
	}
}

// Decode turns a raw record into an [Event]. Like ReadRaw it must not be
// called concurrently with the Reader's other reads.
func (r *Reader) Decode(raw *RawEvent) Event {
	return newEvent(raw, r.monoToWall, r.names)
}

// Stats reads the kernel's produced and dropped counters and this
// Reader's delivered count. Delivered + Dropped <= Produced always holds
// (events may still wait in the ring); once the Reader has read every
// pending event, they are equal.
func (r *Reader) Stats() (RingStats, error) {
	delivered := r.delivered.Load()
	var percpu []tlsmeterTlsStats
	if err := r.stats.Lookup(uint32(0), &percpu); err != nil {
		return RingStats{}, fmt.Errorf("read tls ring stats: %w", err)
	}
	s := RingStats{Delivered: delivered}
	for _, v := range percpu {
		s.Produced += v.Produced
		s.Dropped += v.Dropped
	}
	return s, nil
}

// Close stops the Reader; a blocked Read returns an error matching
// ringbuf.ErrClosed. Close is idempotent.
func (r *Reader) Close() error {
	r.m.mu.Lock()
	delete(r.m.readers, r)
	r.m.mu.Unlock()
	if err := r.rd.Close(); err != nil {
		return fmt.Errorf("close tls event reader: %w", err)
	}
	return nil
}

// monoToWall returns the offset from CLOCK_MONOTONIC (bpf_ktime_get_ns)
// to Unix time in nanoseconds.
func monoToWall() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Now().UnixNano() - ts.Nano()
}

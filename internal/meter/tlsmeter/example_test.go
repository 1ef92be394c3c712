package tlsmeter_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/tlsmeter"
)

// Open the pinned meter, print handshakes as they happen, and account for
// every event the kernel produced when the reader stops. Needs root.
func ExampleMeter_Events() {
	m, err := tlsmeter.Open(meter.Config{PinDir: "/sys/fs/bpf/kmeter", CgroupDir: "/sys/fs/cgroup"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	r, err := m.Events()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		e, err := r.Read(ctx)
		if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, context.Canceled) {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(tlsmeter.FormatEvent(e, ""))
	}
	s, err := r.Stats()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("produced %d = delivered %d + dropped %d (+ unread)\n", s.Produced, s.Delivered, s.Dropped)
}

// Read the cumulative per-cgroup handshake counts, as the agent does.
func ExampleMeter_ReadInto() {
	m, err := tlsmeter.Open(meter.Config{PinDir: "/sys/fs/bpf/kmeter", CgroupDir: "/sys/fs/cgroup"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	var counts meter.Counts
	if err := m.ReadInto(&counts); err != nil {
		log.Fatal(err)
	}
	for _, r := range counts.Rows() {
		fmt.Println(r.Cgroup, r.Values[meter.CounterTLSClientHandshakes], r.Values[meter.CounterTLSServerHandshakes])
	}
}

package syscalls_test

import (
	"fmt"
	"log"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/syscalls"
)

// Open the meter, read per-cgroup totals for export and the per-number
// breakdown, and check the maps' health. Closing keeps the program
// counting for the next agent; Unpin would stop it.
func Example() {
	m, err := syscalls.Open(meter.Config{PinDir: "/sys/fs/bpf/kmeter"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	st := m.Status()
	fmt.Println("counting at", st.Hook, "in", st.Storage) // "cgrp_storage", or "percpu_hash" on kernels before 6.2

	// One read gives each cgroup's total and its breakdown by number.
	var counts meter.Counts
	if err := m.ReadInto(&counts); err != nil {
		log.Fatal(err)
	}
	rows := counts.Rows()
	getppid := make([]uint64, len(rows))
	for _, n := range counts.Numbers() {
		if n.Nr == 110 {
			getppid[n.Row] += n.Count
		}
	}
	for i, r := range rows {
		fmt.Println(r.Cgroup, r.Values[meter.CounterSyscalls], "syscalls, of which getppid:", getppid[i])
	}

	stats, err := m.Stats()
	if err != nil {
		log.Fatal(err)
	}
	if stats.Overflow[meter.Syscalls] > 0 {
		fmt.Printf("map full (%d/%d keys): %d syscalls not attributed\n",
			stats.Entries, stats.MaxEntries, stats.Overflow[meter.Syscalls])
	}
}

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

	totals := meter.Counts{}
	if err := m.ReadInto(totals); err != nil {
		log.Fatal(err)
	}
	byNr, err := m.ReadByNumber()
	if err != nil {
		log.Fatal(err)
	}
	for cgroup, calls := range byNr {
		fmt.Println(cgroup, totals[cgroup][meter.Syscalls], "syscalls, of which getppid:", calls[110])
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

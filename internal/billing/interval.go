package billing

import (
	"fmt"
	"time"
)

// WindowInterval is the usage window length for an agent that reads the
// kernel counters every read: bill (from --bill-interval or bill_interval
// in the config) when set, else read. Windows can be longer than reads
// (usage in /metrics stays fresh while the ledger is written less often)
// but not shorter: a window bills what the latest read saw, so a shorter
// one would only commit the same reading again.
func WindowInterval(read, bill time.Duration) (time.Duration, error) {
	switch {
	case read <= 0:
		return 0, fmt.Errorf("--interval %v must be positive", read)
	case bill < 0:
		return 0, fmt.Errorf("--bill-interval %v must be positive (or 0 to bill every --interval)", bill)
	case bill == 0:
		return read, nil
	case bill < read:
		return 0, fmt.Errorf("--bill-interval %v is shorter than --interval %v: a window can only bill what a read saw; use --bill-interval %v or more, or read more often", bill, read, read)
	}
	return bill, nil
}

package licence

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrCallsExhausted: the plugin has made all the calls its licence allows.
var ErrCallsExhausted = errors.New("licensed calls exhausted")

// Counter enforces [Licence.MaxCalls]. The engine makes one Counter per
// loaded module and calls Take before each call into the plugin; a swap
// to a new module starts a new Counter. It is safe for concurrent use.
type Counter struct {
	max  uint64
	used atomic.Uint64
}

// NewCounter returns a counter allowing max calls; 0 allows any number.
func NewCounter(max uint64) *Counter { return &Counter{max: max} }

// Take accounts for one call and returns [ErrCallsExhausted] once more
// than max calls were taken. A refused call is not counted as used.
func (c *Counter) Take() error {
	if c.max == 0 {
		c.used.Add(1)
		return nil
	}
	for {
		u := c.used.Load()
		if u >= c.max {
			return fmt.Errorf("%w: all %d calls allowed by the licence were made; reload a module with a new licence", ErrCallsExhausted, c.max)
		}
		if c.used.CompareAndSwap(u, u+1) {
			return nil
		}
	}
}

// Used returns how many calls were taken.
func (c *Counter) Used() uint64 { return c.used.Load() }

package agent

import (
	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/syscalls"
)

// Meters returns the openers of every kernel meter kmeter ships.
func Meters() []Opener {
	return []Opener{
		{Name: syscalls.Name, Counters: []string{meter.Syscalls}, Open: func(c meter.Config) (meter.Meter, error) { return syscalls.Open(c) }},
	}
}

package agent

import (
	"github.com/kmeter/kmeter/internal/meter"
)

// Meters returns the openers of every kernel meter kmeter ships.
func Meters() []Opener {
	return []Opener{}
}

var _ = meter.Names

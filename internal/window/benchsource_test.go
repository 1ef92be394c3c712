package window_test

import (
	"context"

	"github.com/kmeter/kmeter/internal/window"
)

// benchSource is the Source cmd/kmeter builds from agent snapshots.
func benchSource(read func(context.Context) (map[string]map[string]uint64, error)) window.Source {
	return window.TenantsFunc(read)
}

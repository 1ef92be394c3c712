package tenant

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/kmeter/kmeter/internal/config"
	"github.com/kmeter/kmeter/internal/testutil"
)

// A cgroup made after the last scan is found by its id alone, and one
// removed before the lookup is reported gone; neither needs a rescan.
func TestResolver_LookupIDs(t *testing.T) {
	before := testutil.NewCgroup(t, "before")
	r, err := NewResolver(testutil.Cgroup2Dir(t), []config.Tenant{{Name: "shop", Cgroups: []string{before.Rel}}})
	if err != nil {
		t.Fatal(err)
	}
	after := testutil.NewCgroup(t, "before/after")
	removed := testutil.NewCgroup(t, "removed")
	if err := os.Remove(removed.Path); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Path(after.ID); ok {
		t.Fatalf("cgroup %s known before the lookup", after.Rel)
	}
	gone, err := r.LookupIDs([]uint64{after.ID, removed.ID})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gone, []uint64{removed.ID}) {
		t.Errorf("gone = %v, want [%d] (the removed cgroup)", gone, removed.ID)
	}
	if p, ok := r.Path(after.ID); !ok || p != after.Rel {
		t.Errorf("Path(%d) = %q, %v; want %q", after.ID, p, ok, after.Rel)
	}
	if got := r.Tenant(after.ID); got != "shop" {
		t.Errorf("Tenant of %s = %q, want shop (below the tenant's cgroup)", after.Rel, got)
	}
}

// Outside a cgroup2 mount lookup by handle is refused, so callers walk.
func TestResolver_LookupIDs_notCgroup2(t *testing.T) {
	root, ids := mkTree(t, "/a")
	r, err := NewResolver(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupIDs([]uint64{ids["/a"]}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("err = %v, want errors.ErrUnsupported", err)
	}
}

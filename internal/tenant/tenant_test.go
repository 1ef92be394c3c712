package tenant

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"unsafe"

	"github.com/kmeter/kmeter/internal/config"
)

// mkTree creates directories under a temp root; any directory tree works as
// a stand-in for cgroupfs because ids are inode numbers.
func mkTree(t *testing.T, dirs ...string) (string, map[string]uint64) {
	t.Helper()
	root := t.TempDir()
	ids := map[string]uint64{}
	for _, d := range dirs {
		p := filepath.Join(root, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range append(dirs, "/") {
		for p := cleanRel(d); ; p = filepath.Dir(p) {
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(root, p), &st); err != nil {
				t.Fatal(err)
			}
			ids[p] = st.Ino
			if p == "/" {
				break
			}
		}
	}
	return root, ids
}

func TestResolver_Tenant(t *testing.T) {
	root, ids := mkTree(t, "/shop/web", "/shop/db", "/edge/slice1", "/other")
	r, err := NewResolver(root, []config.Tenant{
		{Name: "shop", Cgroups: []string{"/shop"}, Attributes: map[string]string{"plan": "gold"}},
		{Name: "edge-1", Cgroups: []string{"/edge/slice1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{"/shop", "shop"},
		{"/shop/web", "shop"},
		{"/shop/db", "shop"},
		{"/edge/slice1", "edge-1"},
		{"/edge", "/edge"},
		{"/other", "/other"},
		{"/", "/"},
	} {
		if got := r.Tenant(ids[tc.path]); got != tc.want {
			t.Errorf("Tenant(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
	if got := r.Tenant(1 << 60); got != "cgroup:1152921504606846976" {
		t.Errorf("unknown id: got %q", got)
	}
	if got := r.Attributes("shop")["plan"]; got != "gold" {
		t.Errorf("attributes: got %q", got)
	}
	roots, err := r.Roots("shop")
	if err != nil || len(roots) != 1 || roots[0] != ids["/shop"] {
		t.Errorf("Roots(shop) = %v, %v; want [%d]", roots, err, ids["/shop"])
	}
	roots, err = r.Roots("/other")
	if err != nil || len(roots) != 1 || roots[0] != ids["/other"] {
		t.Errorf("Roots(/other) = %v, %v", roots, err)
	}
	if _, err := r.Roots("nope"); !errors.Is(err, ErrUnknown) {
		t.Errorf("Roots(nope) err = %v, want ErrUnknown", err)
	}
	// A cgroup made after the last scan is found without waiting for one.
	if err := os.Mkdir(filepath.Join(root, "late"), 0o755); err != nil {
		t.Fatal(err)
	}
	if roots, err := r.Roots("/late"); err != nil || len(roots) != 1 {
		t.Errorf("Roots(/late) = %v, %v; want the new cgroup", roots, err)
	}
}

func TestResolver_SaveLoad_keepsRemovedCgroups(t *testing.T) {
	root, ids := mkTree(t, "/a/b")
	r, err := NewResolver(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(t.TempDir(), "paths.json")
	if err := r.Save(cache); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "a", "b")); err != nil {
		t.Fatal(err)
	}
	r2, err := NewResolver(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r2.Tenant(ids["/a/b"]); got == "/a/b" {
		t.Fatalf("a fresh resolver cannot know a removed cgroup, got %q", got)
	}
	if err := r2.Load(cache); err != nil {
		t.Fatal(err)
	}
	if got := r2.Tenant(ids["/a/b"]); got != "/a/b" {
		t.Fatalf("after Load: Tenant = %q, want /a/b", got)
	}
	if err := os.WriteFile(cache, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r2.Load(cache); err == nil {
		t.Fatal("corrupt cache: want error")
	}
}

// The cache file is the JSON object json.Marshal would write, whatever
// bytes the paths hold.
func TestResolver_Save_writesJSON(t *testing.T) {
	paths := map[uint64]string{
		1:                    "/",
		42:                   "/shop/web",
		7:                    `/quote"d/back\slash`,
		99:                   "/new\nline\ttab\x01",
		1 << 40:              "/ünïcödé/日本",
		18446744073709551615: "/html<&>",
	}
	r := &Resolver{paths: paths}
	file := filepath.Join(t.TempDir(), "paths.json")
	if err := r.Save(file); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("cache is not JSON: %v\n%s", err, b)
	}
	if len(got) != len(paths) {
		t.Fatalf("cache holds %d paths, want %d: %s", len(got), len(paths), b)
	}
	for id, p := range paths {
		if g := got[strconv.FormatUint(id, 10)]; g != p {
			t.Errorf("path of %d = %q, want %q", id, g, p)
		}
	}
}

func TestNewResolver_missingRoot(t *testing.T) {
	if _, err := NewResolver(filepath.Join(t.TempDir(), "none"), nil); err == nil {
		t.Fatal("want error for a missing cgroup2 dir")
	}
}

// Tenant names a cgroup by its current path: a cgroup moved to another
// tenant's subtree is that tenant's after the next rescan, though its
// former name was cached, and the cached name is the very same string
// from read to read.
func TestResolver_Tenant_followsRescans(t *testing.T) {
	root, ids := mkTree(t, "/shop/web", "/edge")
	r, err := NewResolver(root, []config.Tenant{{Name: "shop", Cgroups: []string{"/shop"}}})
	if err != nil {
		t.Fatal(err)
	}
	web, edge := ids["/shop/web"], ids["/edge"]
	if got := r.Tenant(web); got != "shop" {
		t.Fatalf("tenant of /shop/web = %q, want shop", got)
	}
	first, second := r.Tenant(edge), r.Tenant(edge)
	if first != "/edge" || second != "/edge" {
		t.Fatalf("tenant of /edge = %q, %q; want /edge", first, second)
	}
	if unsafe.StringData(first) != unsafe.StringData(second) {
		t.Errorf("tenant of /edge made anew on the second call")
	}
	if err := os.Rename(filepath.Join(root, "shop/web"), filepath.Join(root, "edge/web")); err != nil {
		t.Fatal(err)
	}
	if got := r.Tenant(web); got != "shop" {
		t.Errorf("before a rescan: tenant = %q, want the known shop", got)
	}
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	if got := r.Tenant(web); got != "/edge/web" {
		t.Errorf("after a rescan: tenant = %q, want /edge/web", got)
	}
}

// BenchmarkResolver_Save writes the cache of 10,000 cgroups; "json.Marshal"
// is the map encoding Save used before, for comparison.
func BenchmarkResolver_Save(b *testing.B) {
	paths := map[uint64]string{}
	for i := range 10_000 {
		paths[uint64(1000+i)] = fmt.Sprintf("/kubepods.slice/pod-%05d/container", i)
	}
	file := filepath.Join(b.TempDir(), "paths.json")
	b.Run("Save", func(b *testing.B) {
		r := &Resolver{paths: paths}
		for b.Loop() {
			if err := r.Save(file); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		for b.Loop() {
			m := make(map[string]string, len(paths))
			for id, p := range paths {
				m[strconv.FormatUint(id, 10)] = p
			}
			data, err := json.Marshal(m)
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(file, data, 0o600); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Package tenant maps cgroup v2 ids, as the kernel meters see them, to
// tenants. A tenant is a cgroup subtree: by default every cgroup is its own
// tenant, named by its path relative to the cgroup2 mount ("/shop/web");
// the config file may name subtrees instead ("shop" = "/shop" and all
// below it).
//
// A Resolver remembers the paths of cgroups it has seen, and can persist
// them, so usage of a cgroup that was removed is still attributed to the
// right tenant after the agent restarts.
package tenant

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/kmeter/kmeter/internal/config"
)

// ErrUnknown is returned for a tenant name that matches no known cgroup.
var ErrUnknown = errors.New("unknown tenant")

// Resolver maps cgroup ids to paths and tenants. It is safe for
// concurrent use.
type Resolver struct {
	root  string
	rules []rule // longest prefix first
	attrs map[string]map[string]string
	mu    sync.RWMutex
	paths map[uint64]string // cgroup id -> path relative to root
	ids   map[string]uint64 // path -> cgroup id, live cgroups only
	// tenants caches Tenant for ids with a known path; it is dropped
	// whenever paths change. The agent names every cgroup on every read:
	// 10,000 tenant names built anew each time were garbage, and the
	// biller compared them byte by byte with the names it kept.
	tenants map[uint64]string
}

type rule struct {
	prefix string
	tenant string
}

// NewResolver returns a Resolver for the cgroup2 hierarchy mounted at
// root, naming subtrees as tenants (may be nil). It scans the hierarchy once.
func NewResolver(root string, tenants []config.Tenant) (*Resolver, error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("cgroup2 dir: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("cgroup2 dir %s is not a directory", root)
	}
	r := &Resolver{root: root, paths: map[uint64]string{}, ids: map[string]uint64{}, attrs: map[string]map[string]string{}}
	for _, t := range tenants {
		for _, cg := range t.Cgroups {
			r.rules = append(r.rules, rule{prefix: cleanRel(cg), tenant: t.Name})
		}
		r.attrs[t.Name] = t.Attributes
	}
	sort.Slice(r.rules, func(i, j int) bool { return len(r.rules[i].prefix) > len(r.rules[j].prefix) })
	if err := r.Refresh(); err != nil {
		return nil, err
	}
	return r, nil
}

func cleanRel(p string) string {
	p = filepath.Clean("/" + strings.Trim(p, "/"))
	return p
}

// Refresh rescans the cgroup hierarchy. Paths of cgroups that disappeared
// are kept, so their past usage keeps its tenant.
func (r *Resolver) Refresh() error {
	ids := map[string]uint64{}
	err := filepath.WalkDir(r.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, _ := filepath.Rel(r.root, path)
		ids[cleanRel(rel)] = st.Ino
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan cgroups under %s: %w", r.root, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = ids
	for p, id := range ids {
		r.paths[id] = p
	}
	clear(r.tenants)
	return nil
}

// Known is the number of cgroups whose path the resolver knows, live or
// removed. It only grows, so a change means the cache is worth saving.
func (r *Resolver) Known() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.paths)
}

// Path returns the path of cgroup id relative to the cgroup2 mount.
func (r *Resolver) Path(id uint64) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.paths[id]
	return p, ok
}

// Tenant returns the tenant that cgroup id belongs to. An id never seen
// (a cgroup created and removed between two scans) is named "cgroup:<id>".
func (r *Resolver) Tenant(id uint64) string {
	r.mu.RLock()
	t, cached := r.tenants[id]
	p, ok := r.paths[id]
	r.mu.RUnlock()
	switch {
	case cached:
		return t
	case !ok:
		return "cgroup:" + strconv.FormatUint(id, 10)
	}
	t = r.TenantOfPath(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paths[id] == p { // else the paths changed meanwhile
		if r.tenants == nil {
			r.tenants = map[uint64]string{}
		}
		r.tenants[id] = t
	}
	return t
}

// TenantOfPath returns the tenant of the cgroup at path (relative to the
// cgroup2 mount).
func (r *Resolver) TenantOfPath(p string) string {
	p = cleanRel(p)
	for _, ru := range r.rules {
		if p == ru.prefix || strings.HasPrefix(p, ru.prefix+"/") || ru.prefix == "/" {
			return ru.tenant
		}
	}
	return p
}

// Attributes returns the configured attributes of tenant (nil if none).
func (r *Resolver) Attributes(tenant string) map[string]string { return r.attrs[tenant] }

// Roots returns the cgroup ids at the top of tenant's subtrees: for a named
// tenant, the ids of its configured cgroups that exist; for a path tenant,
// that cgroup's id. Limits attach to these ids and cover everything below.
// A tenant not found is looked up again after a rescan, so a cgroup
// created since the last scan is found at once.
func (r *Resolver) Roots(tenant string) ([]uint64, error) {
	if ids := r.roots(tenant); len(ids) > 0 {
		return ids, nil
	}
	if err := r.Refresh(); err != nil {
		return nil, err
	}
	if ids := r.roots(tenant); len(ids) > 0 {
		return ids, nil
	}
	return nil, fmt.Errorf("%w: no configured tenant has that name and no cgroup has that path under %s (a path tenant is a cgroup path such as /shop/web)", ErrUnknown, r.root)
}

func (r *Resolver) roots(tenant string) []uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var ids []uint64
	named := false
	for _, ru := range r.rules {
		if ru.tenant != tenant {
			continue
		}
		named = true
		if id, ok := r.ids[ru.prefix]; ok {
			ids = append(ids, id)
		}
	}
	if !named && strings.HasPrefix(tenant, "/") {
		if id, ok := r.ids[cleanRel(tenant)]; ok {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Save writes the id -> path cache to file atomically, so a restarted
// agent still knows removed cgroups.
//
// The file is a JSON object of id -> path, written by hand in id order:
// the agent saves it whenever a cgroup appears, which on a host where
// containers come and go is most reads, and json.Marshal of a map of
// 10,000 paths (sorting the keys, escaping every byte) cost about 10 ms.
func (r *Resolver) Save(file string) error {
	type entry struct {
		id   uint64
		path string
	}
	r.mu.RLock()
	es := make([]entry, 0, len(r.paths))
	for id, p := range r.paths {
		es = append(es, entry{id, p})
	}
	r.mu.RUnlock()
	slices.SortFunc(es, func(a, b entry) int { return cmp.Compare(a.id, b.id) })
	b := make([]byte, 0, 32*len(es)+2)
	b = append(b, '{')
	for i, e := range es {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = strconv.AppendUint(b, e.id, 10)
		b = append(b, '"', ':')
		b = appendJSONString(b, e.path)
	}
	b = append(b, '}')
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save cgroup paths: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("save cgroup paths: %w", err)
	}
	return nil
}

// appendJSONString appends s as a JSON string: as it is when it has no
// byte JSON must escape (cgroup paths rarely do; '<', '>' and '&' are
// left as they are, which JSON allows), else through json.Marshal.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Load merges a cache written by Save. A missing file is not an error;
// live cgroups found by Refresh win over cached paths.
func (r *Resolver) Load(file string) error {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load cgroup paths: %w", err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("load cgroup paths from %s: %w (delete the file to start afresh)", file, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range m {
		id, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			continue
		}
		if _, live := r.paths[id]; !live {
			r.paths[id] = p
		}
	}
	clear(r.tenants)
	return nil
}

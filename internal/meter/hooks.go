package meter

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Hook is one way to attach a meter's program to the kernel.
type Hook struct {
	// Name is the hook as reported in [Status.Hook], for example
	// "tp_btf/sys_enter".
	Name string
	// Program is the name of the program (its C function) in the
	// meter's object file.
	Program string
	// Probe, when set, tells cheaply whether the hook can work here.
	Probe func() error
	// Attach attaches the loaded program.
	Attach func(*ebpf.Program) (link.Link, error)
}

// Attached is a meter program loaded with its pinned maps and attached
// through a pinned link.
type Attached struct {
	// Maps are the meter's maps, pinned under the meter's dir.
	Maps map[string]*ebpf.Map
	// Link keeps the program attached; it is pinned, so closing it does
	// not detach the program.
	Link link.Link
	// Hook is the name of the hook used.
	Hook string
	// Fallback is true when a hook other than the first one is used.
	Fallback bool
	// Reused is true when an earlier agent's pinned link was kept.
	Reused bool
}

// Close closes the link and maps without unpinning them.
func (a *Attached) Close() error {
	var errs []error
	if a.Link != nil {
		errs = append(errs, a.Link.Close())
	}
	for _, m := range a.Maps {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}

// LoadAttach loads and attaches the first hook of hooks that works, in
// order (the first is the preferred one), with maps pinned under dir and
// the link pinned at dir/linkName. All hooks share one link pin, so a
// restarted agent that picks another hook replaces the old link instead
// of counting every event twice. When the pinned link already runs one of
// the hooks' programs (an earlier agent chose it), that hook is tried
// first, so a restart keeps it without a gap. mode restricts the choice
// to the first or to the other hooks. The error says why each hook tried
// failed.
func LoadAttach(spec *ebpf.CollectionSpec, dir, linkName string, mode HookMode, hooks []Hook) (*Attached, error) {
	linkPath := filepath.Join(dir, linkName)
	order := make([]int, 0, len(hooks))
	for i := range hooks {
		if (mode == HookPreferredOnly && i > 0) || (mode == HookFallbackOnly && i == 0) {
			continue
		}
		order = append(order, i)
	}
	if running := pinnedProgramName(linkPath); running != "" {
		for j, i := range order {
			if progName(spec, hooks[i].Program) == running {
				order[0], order[j] = order[j], order[0]
				break
			}
		}
	}
	var errs []error
	for _, i := range order {
		h := hooks[i]
		if h.Probe != nil {
			if err := h.Probe(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
				continue
			}
		}
		a, err := loadAttach(spec, linkPath, dir, h)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
			continue
		}
		a.Fallback = i > 0
		return a, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("no hook to try")
	}
	return nil, errors.Join(errs...)
}

// pinnedProgramName returns the kernel name of the program run by the
// link pinned at path, or "" when there is none.
func pinnedProgramName(path string) string {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return ""
	}
	defer l.Close()
	li, err := l.Info()
	if err != nil {
		return ""
	}
	p, err := ebpf.NewProgramFromID(li.Program)
	if err != nil {
		return ""
	}
	defer p.Close()
	pi, err := p.Info()
	if err != nil {
		return ""
	}
	return pi.Name
}

// progName is the name the kernel knows program name of spec by: the
// kernel keeps at most 15 bytes.
func progName(spec *ebpf.CollectionSpec, name string) string {
	p := spec.Programs[name]
	if p == nil {
		return ""
	}
	n := p.Name
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

func loadAttach(spec *ebpf.CollectionSpec, linkPath, dir string, h Hook) (*Attached, error) {
	coll, err := LoadPinned(spec, dir, h.Program)
	if err != nil {
		return nil, err
	}
	prog := coll.DetachProgram(h.Program)
	maps := coll.Maps
	coll.Maps = nil
	coll.Close()
	// The link holds its own reference to the program it runs.
	defer prog.Close()
	a := &Attached{Maps: maps, Hook: h.Name}
	l, reused, err := AttachPinned(linkPath, prog, func() (link.Link, error) { return h.Attach(prog) })
	if err != nil {
		_ = a.Close()
		return nil, fmt.Errorf("attach: %w", err)
	}
	a.Link, a.Reused = l, reused
	return a, nil
}

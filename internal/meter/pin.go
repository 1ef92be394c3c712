package meter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// MapsDir returns the directory under pinDir where the maps of meter are
// pinned. It is created when missing.
func MapsDir(pinDir, meter string) (string, error) {
	dir := filepath.Join(pinDir, meter)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create pin dir for %s: %w", meter, err)
	}
	return dir, nil
}

// AttachPinned attaches prog through attach and pins the link at path, so
// that the program keeps counting while no agent runs.
//
// When a link is already pinned at path and runs a program with the same
// tag (the same instructions), that link is kept and reused is true: the
// counts continue without a gap and without a second program counting the
// same events twice. A pinned link running another program is replaced,
// atomically where the link type supports Update.
func AttachPinned(path string, prog *ebpf.Program, attach func() (link.Link, error)) (l link.Link, reused bool, err error) {
	old, err := link.LoadPinnedLink(path, nil)
	if err == nil {
		same, err := runsSameProgram(old, prog)
		if err == nil && same {
			return old, true, nil
		}
		if err := old.Update(prog); err == nil {
			return old, false, nil
		}
		// Replace: the old program is detached first so no event is
		// counted twice; a few events during the swap may be missed.
		_ = old.Unpin()
		_ = old.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		// A stale or foreign pin: remove it and start afresh.
		_ = os.Remove(path)
	}
	l, err = attach()
	if err != nil {
		return nil, false, err
	}
	if err := l.Pin(path); err != nil {
		_ = l.Close()
		return nil, false, fmt.Errorf("pin link %s: %w", path, err)
	}
	return l, false, nil
}

func runsSameProgram(l link.Link, prog *ebpf.Program) (bool, error) {
	li, err := l.Info()
	if err != nil {
		return false, err
	}
	old, err := ebpf.NewProgramFromID(li.Program)
	if err != nil {
		return false, err
	}
	defer old.Close()
	oi, err := old.Info()
	if err != nil {
		return false, err
	}
	ni, err := prog.Info()
	if err != nil {
		return false, err
	}
	return oi.Tag != "" && oi.Tag == ni.Tag && bytes.Equal([]byte(oi.Name), []byte(ni.Name)), nil
}

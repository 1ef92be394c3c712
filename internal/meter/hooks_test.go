package meter_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/testutil"
)

// spec is a one-map, two-program collection: "preferred" and "fallback"
// are both raw tracepoint programs that do nothing.
func spec() *ebpf.CollectionSpec {
	prog := func(name string) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{
			Name:         name,
			Type:         ebpf.RawTracepoint,
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		}
	}
	return &ebpf.CollectionSpec{
		Maps: map[string]*ebpf.MapSpec{
			"counts": {Name: "counts", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Pinning: ebpf.PinByName},
		},
		Programs: map[string]*ebpf.ProgramSpec{"preferred": prog("preferred"), "fallback": prog("fallback")},
	}
}

func attachSysEnter(p *ebpf.Program) (link.Link, error) {
	return link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: p})
}

func TestLoadAttach(t *testing.T) {
	errNoHook := errors.New("hook missing on this kernel")
	broken := func(*ebpf.Program) (link.Link, error) { return nil, errors.New("attach refused") }
	for _, tc := range []struct {
		name         string
		mode         meter.HookMode
		hooks        []meter.Hook
		wantHook     string
		wantFallback bool
		wantErr      []string
	}{
		{
			name: "preferred works",
			hooks: []meter.Hook{
				{Name: "hook/preferred", Program: "preferred", Attach: attachSysEnter},
				{Name: "hook/fallback", Program: "fallback", Attach: attachSysEnter},
			},
			wantHook: "hook/preferred",
		},
		{
			name: "probe fails, fallback used",
			hooks: []meter.Hook{
				{Name: "hook/preferred", Program: "preferred", Probe: func() error { return errNoHook }, Attach: attachSysEnter},
				{Name: "hook/fallback", Program: "fallback", Attach: attachSysEnter},
			},
			wantHook: "hook/fallback", wantFallback: true,
		},
		{
			name: "attach fails, fallback used",
			hooks: []meter.Hook{
				{Name: "hook/preferred", Program: "preferred", Attach: broken},
				{Name: "hook/fallback", Program: "fallback", Attach: attachSysEnter},
			},
			wantHook: "hook/fallback", wantFallback: true,
		},
		{
			name: "forced fallback",
			mode: meter.HookFallbackOnly,
			hooks: []meter.Hook{
				{Name: "hook/preferred", Program: "preferred", Attach: attachSysEnter},
				{Name: "hook/fallback", Program: "fallback", Attach: attachSysEnter},
			},
			wantHook: "hook/fallback", wantFallback: true,
		},
		{
			name: "every hook fails: the error names each and why",
			hooks: []meter.Hook{
				{Name: "hook/preferred", Program: "preferred", Probe: func() error { return errNoHook }, Attach: attachSysEnter},
				{Name: "hook/fallback", Program: "fallback", Attach: broken},
			},
			wantErr: []string{"hook/preferred: hook missing on this kernel", "hook/fallback: attach: attach refused"},
		},
		{
			name: "forced preferred fails without trying the fallback",
			mode: meter.HookPreferredOnly,
			hooks: []meter.Hook{
				{Name: "hook/preferred", Program: "preferred", Attach: broken},
				{Name: "hook/fallback", Program: "fallback", Attach: attachSysEnter},
			},
			wantErr: []string{"hook/preferred: attach: attach refused"},
		},
		{
			name:    "unknown program",
			hooks:   []meter.Hook{{Name: "hook/x", Program: "nope", Attach: attachSysEnter}},
			wantErr: []string{"hook/x: program nope is not in the object file"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testutil.PinDir(t)
			a, err := meter.LoadAttach(spec(), dir, "link", tc.mode, tc.hooks)
			if tc.wantErr != nil {
				if err == nil {
					a.Close()
					t.Fatal("LoadAttach succeeded")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			testutil.CheckLoad(t, err)
			defer a.Close()
			if a.Hook != tc.wantHook || a.Fallback != tc.wantFallback || a.Reused {
				t.Errorf("attached %q fallback %v reused %v, want %q fallback %v, not reused",
					a.Hook, a.Fallback, a.Reused, tc.wantHook, tc.wantFallback)
			}
			if a.Maps["counts"] == nil {
				t.Error("map counts not loaded")
			}

			again, err := meter.LoadAttach(spec(), dir, "link", tc.mode, tc.hooks)
			if err != nil {
				t.Fatal(err)
			}
			defer again.Close()
			if !again.Reused || again.Hook != tc.wantHook {
				t.Errorf("second load: hook %q reused %v, want %q reused", again.Hook, again.Reused, tc.wantHook)
			}
		})
	}
}

func TestCheckConfig(t *testing.T) {
	pinDir := testutil.PinDir(t)
	cgroupDir := testutil.Cgroup2Dir(t)
	for _, tc := range []struct {
		name      string
		cfg       meter.Config
		needCgDir bool
		want      []string // empty: valid
	}{
		{"valid", meter.Config{PinDir: pinDir, CgroupDir: cgroupDir}, true, nil},
		{"cgroup dir not needed", meter.Config{PinDir: pinDir}, false, nil},
		{"all empty", meter.Config{}, true, []string{"pin dir is empty", "cgroup2 dir is empty"}},
		{"pin dir on tmpfs", meter.Config{PinDir: t.TempDir()}, false, []string{"not on a bpffs", "mount -t bpf"}},
		{"pin dir missing", meter.Config{PinDir: pinDir + "/missing"}, false, []string{"file does not exist"}},
		{"cgroup dir is bpffs", meter.Config{PinDir: pinDir, CgroupDir: pinDir}, true, []string{"not on a cgroup2 file system"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := meter.CheckConfig(tc.cfg, tc.needCgDir)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("CheckConfig = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckConfig = nil, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// A restarted agent keeps the hook the running link uses, even when it
// would prefer another: switching would leave a gap in the counts.
func TestLoadAttach_restartKeepsRunningHook(t *testing.T) {
	dir := testutil.PinDir(t)
	hooks := []meter.Hook{
		{Name: "hook/preferred", Program: "preferred", Attach: attachSysEnter},
		{Name: "hook/fallback", Program: "fallback", Attach: attachSysEnter},
	}
	first, err := meter.LoadAttach(spec(), dir, "link", meter.HookFallbackOnly, hooks)
	testutil.CheckLoad(t, err)
	first.Close()

	second, err := meter.LoadAttach(spec(), dir, "link", meter.HookAuto, hooks)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if second.Hook != "hook/fallback" || !second.Fallback || !second.Reused {
		t.Errorf("restart attached %q fallback %v reused %v, want the running hook/fallback, reused",
			second.Hook, second.Fallback, second.Reused)
	}
}

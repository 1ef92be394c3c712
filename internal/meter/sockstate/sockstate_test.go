package sockstate

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/meter"
	"github.com/kmeter/kmeter/internal/meter/metertest"
	"github.com/kmeter/kmeter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.RunHelper(metertest.Helpers())
	os.Exit(m.Run())
}

func openMeter(t *testing.T, pinDir string, hook meter.HookMode) *Meter {
	t.Helper()
	m, err := OpenWith(meter.Config{PinDir: pinDir}, Options{Hook: hook})
	testutil.CheckLoad(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// read returns the meter's counts as cgroup id -> counter name -> value.
func read(t *testing.T, m *Meter) map[uint64]map[string]uint64 {
	t.Helper()
	var c meter.Counts
	if err := m.ReadInto(&c); err != nil {
		t.Fatal(err)
	}
	return c.Map()
}

func TestMeter_countsOpensOnTheSocketsCgroup(t *testing.T) {
	const n = 25
	for _, tc := range []struct {
		name     string
		mode     meter.HookMode
		network  string
		hook     string
		fallback bool
	}{
		{"tp_btf ipv4", meter.HookAuto, "tcp4", HookTPBTF, false},
		{"tp_btf ipv6", meter.HookAuto, "tcp6", HookTPBTF, false},
		{"tracepoint ipv4", meter.HookFallbackOnly, "tcp4", HookTracepoint, true},
		{"tracepoint ipv6", meter.HookFallbackOnly, "tcp6", HookTracepoint, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := openMeter(t, testutil.PinDir(t), tc.mode)
			if st := m.Status(); st.Hook != tc.hook || st.Fallback != tc.fallback {
				t.Fatalf("status = %+v, want hook %s fallback %v", st, tc.hook, tc.fallback)
			}
			client := testutil.NewCgroup(t, "client")
			server := testutil.NewCgroup(t, "server")

			metertest.RunTCP(t, server, client, tc.network, n, 1)

			c := read(t, m)
			for _, want := range []struct {
				cg      testutil.Cgroup
				counter string
				n       uint64
			}{
				{client, meter.TCPConnects, n},
				{client, meter.TCPAccepts, 0},
				{server, meter.TCPAccepts, n},
				{server, meter.TCPConnects, 0},
			} {
				if got := c[want.cg.ID][want.counter]; got != want.n {
					t.Errorf("%s of %s = %d, want exactly %d", want.counter, want.cg.Rel, got, want.n)
				}
			}
			of, err := m.Overflow()
			if err != nil {
				t.Fatal(err)
			}
			if of[meter.TCPConnects] != 0 || of[meter.TCPAccepts] != 0 {
				t.Errorf("overflow = %v, want none", of)
			}
			stats, err := m.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if stats.MaxEntries != MaxEntries || stats.Entries < 2 {
				t.Errorf("stats = %+v, want %d max entries and at least our 2 keys", stats, MaxEntries)
			}
		})
	}
}

// An agent restart must neither lose the opens made while it was down nor
// count any twice.
func TestMeter_restartKeepsCounting(t *testing.T) {
	const k, down, again = 3, 5, 7
	pinDir := testutil.PinDir(t)
	client := testutil.NewCgroup(t, "client")
	server := testutil.NewCgroup(t, "server")
	check := func(m *Meter, want uint64, when string) {
		t.Helper()
		c := read(t, m)
		if got := c[client.ID][meter.TCPConnects]; got != want {
			t.Errorf("%s: connects = %d, want %d", when, got, want)
		}
		if got := c[server.ID][meter.TCPAccepts]; got != want {
			t.Errorf("%s: accepts = %d, want %d", when, got, want)
		}
	}

	first := openMeter(t, pinDir, meter.HookAuto)
	metertest.RunTCP(t, server, client, "tcp4", k, 1)
	check(first, k, "first agent")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	metertest.RunTCP(t, server, client, "tcp4", down, 1) // no Meter open

	second := openMeter(t, pinDir, meter.HookAuto)
	if !second.Status().Reused {
		t.Errorf("second open: status %+v, want Reused", second.Status())
	}
	check(second, k+down, "after restart")

	third := openMeter(t, pinDir, meter.HookAuto)
	if !third.Status().Reused {
		t.Errorf("third open: status %+v, want Reused", third.Status())
	}
	metertest.RunTCP(t, server, client, "tcp4", again, 1)
	check(second, k+down+again, "second agent, third open")
	check(third, k+down+again, "third agent")
}

func TestMeter_Close_idempotent(t *testing.T) {
	m := openMeter(t, testutil.PinDir(t), meter.HookAuto)
	for i := range 2 {
		if err := m.Close(); err != nil {
			t.Fatalf("close %d: %v", i+1, err)
		}
	}
	if err := m.ReadInto(&meter.Counts{}); !errors.Is(err, meter.ErrClosed) {
		t.Errorf("ReadInto after Close = %v, want ErrClosed", err)
	}
	if _, err := m.Stats(); !errors.Is(err, meter.ErrClosed) {
		t.Errorf("Stats after Close = %v, want ErrClosed", err)
	}
}

func TestOpen_badConfig(t *testing.T) {
	testutil.RequireBPF(t)
	for _, tc := range []struct {
		name string
		cfg  meter.Config
		want string
	}{
		{"empty pin dir", meter.Config{}, "pin dir is empty"},
		{"pin dir not on bpffs", meter.Config{PinDir: t.TempDir()}, "not on a bpffs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Open(tc.cfg)
			if err == nil {
				m.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

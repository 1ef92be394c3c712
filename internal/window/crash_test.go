package window_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/testutil"
	"github.com/kmeter/kmeter/internal/window"
)

func TestMain(m *testing.M) {
	testutil.RunHelper(map[string]func([]string) error{"biller": billerHelper})
	os.Exit(m.Run())
}

// fileSource is a cumulative source in a file of "tenant meter count"
// lines, replaced atomically by the test: the stand-in for pinned kernel
// counters that keep counting while the agent is dead.
type fileSource string

func (f fileSource) Read(context.Context) (map[window.Key]uint64, error) {
	file, err := os.Open(string(f))
	if err != nil {
		return nil, err
	}
	defer file.Close()
	counts := map[window.Key]uint64{}
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		var k window.Key
		var v uint64
		if _, err := fmt.Sscan(sc.Text(), &k.Tenant, &k.Meter, &v); err != nil {
			return nil, fmt.Errorf("parse %q: %w", sc.Text(), err)
		}
		counts[k] = v
	}
	return counts, sc.Err()
}

func writeSource(t *testing.T, path string, counts map[window.Key]uint64) {
	t.Helper()
	var b strings.Builder
	for k, v := range counts {
		fmt.Fprintf(&b, "%s %s %d\n", k.Tenant, k.Meter, v)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// billerHelper runs in a child process: args are the ledger (a SQLite
// path or a postgres:// URL), the source file and "run" (tick until
// killed) or "once" (one tick, then exit).
func billerHelper(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("want ledger, source file and mode, got %q", args)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	cfg := ledger.Config{Path: args[0]}
	if strings.HasPrefix(args[0], "postgres") {
		cfg = ledger.Config{PostgresURL: args[0]}
	}
	l, err := ledger.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer l.Close()
	b, err := window.New(ctx, window.Config{NodeID: "node-a", Source: fileSource(args[1]), Ledger: l,
		Pricers: onePricer{&fixedPricer{microPerUnit: 3}}, Interval: 2 * time.Millisecond, Log: quietLog()})
	if err != nil {
		return err
	}
	if args[2] == "once" {
		_, err := b.Tick(ctx)
		return err
	}
	fmt.Println("ready") // the parent may now kill us mid-billing
	return b.Run(ctx)
}

// TestBiller_crashLoop SIGKILLs a biller process at random moments while
// the counters grow, 25 times; after the last restart the ledger has
// billed exactly the source's counts, and verifies.
func TestBiller_crashLoop(t *testing.T) {
	const kills = 25
	forEachBackend(t, func(t *testing.T, be ledgertest.Backend) {
		cfg := be.Config(t)
		spec := cfg.Path
		if cfg.PostgresURL != "" {
			spec = cfg.PostgresURL
		}
		// Create the schema once, so that early kills hit billing, not
		// only the first migration.
		ledgertest.OpenConfig(t, cfg).Close()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		srcPath := filepath.Join(t.TempDir(), "counters")
		counts := map[window.Key]uint64{}
		var keys []window.Key
		for i := range 40 {
			for _, m := range []string{"syscalls", "tcp_connects", "tls_server_handshakes"} {
				k := window.Key{Tenant: fmt.Sprintf("tenant-%02d", i), Meter: m}
				keys = append(keys, k)
				counts[k] = 0
			}
		}
		writeSource(t, srcPath, counts)
		seed := time.Now().UnixNano()
		t.Logf("seed %d", seed)
		rng := rand.New(rand.NewPCG(uint64(seed), 1))
		grow := func() {
			for range 20 {
				counts[keys[rng.IntN(len(keys))]] += uint64(rng.IntN(1000))
			}
			writeSource(t, srcPath, counts)
		}
		helper := func(mode string) *exec.Cmd {
			cmd := exec.Command(exe, "-test.run=^$", spec, srcPath, mode)
			cmd.Env = append(os.Environ(), testutil.HelperEnv+"=biller")
			return cmd
		}
		for i := range kills {
			cmd := helper("run")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			ready, readDone := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(readDone)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					if sc.Text() == "ready" {
						close(ready)
					}
				}
			}()
			// Odd runs die at a random moment from their start (perhaps
			// while opening the ledger); even runs at a random moment
			// after they started billing, so that kills land in commits.
			deadline := time.Now().Add(time.Duration(50+rng.IntN(500)) * time.Millisecond)
			if i%2 == 0 {
				deadline = time.Now().Add(time.Minute)
			}
			for time.Now().Before(deadline) {
				select {
				case <-ready:
					if i%2 == 0 {
						deadline = time.Now().Add(time.Duration(rng.IntN(300)) * time.Millisecond)
						ready = nil
					}
				default:
				}
				grow()
				time.Sleep(time.Duration(rng.IntN(4)) * time.Millisecond)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("kill %d: %v", i, err)
			}
			<-readDone // the pipe ends with the process; Wait must come after
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("run %d ended with %v, not SIGKILL; stderr:\n%s", i, err, stderr.String())
			}
		}
		grow()
		if out, err := helper("once").CombinedOutput(); err != nil {
			t.Fatalf("final biller: %v\n%s", err, out)
		}
		l := ledgertest.OpenConfig(t, cfg)
		q, a := billed(t, l)
		var windows int64
		ts, _ := l.Totals(context.Background())
		for _, x := range ts {
			windows += x.Windows
		}
		bad := 0
		for _, k := range keys {
			name := "node-a/" + k.Tenant + "/" + k.Meter
			if uint64(q[name]) != counts[k] || uint64(a[name]) != 3*counts[k] {
				bad++
				if bad < 10 {
					t.Errorf("%s billed %d for %d micro, source counted %d", name, q[name], a[name], counts[k])
				}
			}
		}
		mustVerify(t, l)
		t.Logf("%d kills, %d windows billed for %d series", kills, windows, len(keys))
		if windows <= int64(len(keys)) {
			t.Errorf("only %d windows were billed: the killed billers never got to commit", windows)
		}
	})
}

package ledger_test

import (
	"context"
	"strings"
	"testing"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
)

func TestWindow_Validate_currency(t *testing.T) {
	tests := []struct {
		currency string
		amount   int64
		ok       bool
	}{
		{"USD", 1, true},
		{"EUR", 0, true},
		{"", 0, true}, // nothing charged, no currency needed
		{"", 1, false},
		{"usd", 1, false},
		{"US", 1, false},
		{"USDD", 1, false},
		{"U$D", 1, false},
		{"USD\n", 1, false},
		{"ÜSD", 1, false},
		{"@SD", 1, false},
		{"US[", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.currency, func(t *testing.T) {
			w := window("n1", "shop", "syscalls", 1, 0, 10, tt.amount, 0)
			w.Charge.Currency = tt.currency
			err := w.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate(currency %q) = %v, want ok=%v", tt.currency, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "ISO 4217") {
				t.Fatalf("err = %v, want it to name ISO 4217", err)
			}
		})
	}
}

// Series whose tenant and meter names concatenate alike are different
// series, in the commit that creates them and in the cached commits after.
func TestLedger_CommitWindows_seriesKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		l := b.Open(t)
		ctx := context.Background()
		for seq := uint64(1); seq <= 3; seq++ {
			ws := []ledger.Window{
				window("n1", "ab", "c", seq, (seq-1)*10, 10, 10, 0),
				window("n1", "a", "bc", seq, (seq-1)*20, 20, 20, 0),
			}
			if err := l.CommitWindows(ctx, ws); err != nil {
				t.Fatalf("commit %d: %v", seq, err)
			}
		}
		cps, err := l.Checkpoints(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]uint64{}
		for _, c := range cps {
			if c.Seq != 3 {
				t.Errorf("checkpoint %s/%s at seq %d, want 3", c.Tenant, c.Meter, c.Seq)
			}
			got[c.Tenant+"|"+c.Meter] = c.Counter
		}
		if len(got) != 2 || got["ab|c"] != 30 || got["a|bc"] != 60 {
			t.Fatalf("checkpoints = %v, want ab|c at 30 and a|bc at 60", got)
		}
		if ab, a := balance(t, l, "ab"), balance(t, l, "a"); ab != -30 || a != -60 {
			t.Fatalf("balances ab=%d a=%d, want -30 and -60", ab, a)
		}
		mustVerify(t, l)
	})
}

// Two windows of one series in one commit fail it, whether they share
// their seq (the usual commit) or not.
func TestLedger_CommitWindows_twoOfOneSeries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		l := b.Open(t)
		ctx := context.Background()
		if err := l.CommitWindows(ctx, []ledger.Window{window("n1", "shop", "syscalls", 1, 0, 10, 10, 0)}); err != nil {
			t.Fatal(err)
		}
		later := window("n1", "shop", "syscalls", 3, 10, 10, 10, 0)
		later.PrevSeq = 2
		for name, ws := range map[string][]ledger.Window{
			"same seq": {
				window("n1", "other", "syscalls", 2, 0, 10, 10, 0),
				window("n1", "shop", "syscalls", 2, 10, 10, 10, 0),
				window("n1", "shop", "syscalls", 2, 10, 10, 10, 0),
			},
			"two seqs": {window("n1", "shop", "syscalls", 2, 10, 10, 10, 0), later},
		} {
			t.Run(name, func(t *testing.T) {
				err := l.CommitWindows(ctx, ws)
				if err == nil || !strings.Contains(err.Error(), "two windows of n1/shop/syscalls") {
					t.Fatalf("err = %v, want two windows of n1/shop/syscalls", err)
				}
			})
		}
		if got := balance(t, l, "shop"); got != -10 {
			t.Fatalf("balance = %d after refused commits, want -10", got)
		}
		mustVerify(t, l)
	})
}

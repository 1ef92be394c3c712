package ledger_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
)

// TestLedger_CommitWindows_mixedWindows commits windows that share
// nothing a commit usually shares - currency, plugin, previous window,
// start and end time, rebase flag, period - next to a commit where they
// share all of it (SQLite binds shared values once per statement, and
// falls back to per-row values otherwise). Every window, entry, line,
// balance and checkpoint must come out exact either way.
func TestLedger_CommitWindows_mixedWindows(t *testing.T) {
	other := strings.Repeat("cd", 32)
	tests := []struct {
		name   string
		modify func(ws []ledger.Window)
		// lines of shop in 2026-11 and 2026-12 after the second commit
		nov, dec []ledger.UsageLine
		eur      int64 // shop's EUR balance, 0 if none
	}{
		{"all shared", func([]ledger.Window) {},
			[]ledger.UsageLine{
				{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Quantity: 10 + 4, AmountMicro: 100 + 40},
				{Meter: "tcp_connects", Currency: "USD", PluginSHA256: plugin, Quantity: 5 + 2, AmountMicro: 50 + 20}},
			nil, 0},
		{"other currency and plugin", func(ws []ledger.Window) {
			ws[1].Charge.Currency, ws[1].PluginSHA256 = "EUR", other
		}, []ledger.UsageLine{
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Quantity: 10 + 4, AmountMicro: 100 + 40},
			{Meter: "tcp_connects", Currency: "EUR", PluginSHA256: other, Quantity: 2, AmountMicro: 20},
			{Meter: "tcp_connects", Currency: "USD", PluginSHA256: plugin, Quantity: 5, AmountMicro: 50}},
			nil, -20},
		{"other end, period and start", func(ws []ledger.Window) {
			ws[1].Start, ws[1].End = t0.Add(time.Hour), t0.Add(time.Hour+5*time.Second) // December
		}, []ledger.UsageLine{
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Quantity: 10 + 4, AmountMicro: 100 + 40},
			{Meter: "tcp_connects", Currency: "USD", PluginSHA256: plugin, Quantity: 5, AmountMicro: 50}},
			[]ledger.UsageLine{{Meter: "tcp_connects", Currency: "USD", PluginSHA256: plugin, Quantity: 2, AmountMicro: 20}}, 0},
		{"rebased", func(ws []ledger.Window) {
			ws[1].Rebased, ws[1].FromCounter, ws[1].ToCounter, ws[1].Quantity = true, 5, 1, 0
			ws[1].Charge = pricing.Charge{Currency: "USD"}
		}, []ledger.UsageLine{
			{Meter: "syscalls", Currency: "USD", PluginSHA256: plugin, Quantity: 10 + 4, AmountMicro: 100 + 40},
			{Meter: "tcp_connects", Currency: "USD", PluginSHA256: plugin, Quantity: 5, AmountMicro: 50}},
			nil, 0},
	}
	forEachBackend(t, func(t *testing.T, b ledgertest.Backend) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				l := b.Open(t)
				if err := l.CommitWindows(ctx, []ledger.Window{
					window("n1", "shop", "syscalls", 1, 0, 10, 100, 0),
					window("n1", "shop", "tcp_connects", 1, 0, 5, 50, 0),
				}); err != nil {
					t.Fatal(err)
				}
				ws := []ledger.Window{
					window("n1", "shop", "syscalls", 2, 10, 4, 40, 0),
					window("n1", "shop", "tcp_connects", 2, 5, 2, 20, 0),
				}
				tt.modify(ws)
				if err := l.CommitWindows(ctx, ws); err != nil {
					t.Fatal(err)
				}
				checkLines(t, l, "shop", "2026-11", tt.nov)
				checkLines(t, l, "shop", "2026-12", tt.dec)
				bs, err := l.Balances(ctx, "shop")
				if err != nil {
					t.Fatal(err)
				}
				var eur, usd int64
				for _, b := range bs {
					switch b.Currency {
					case "EUR":
						eur = b.BalanceMicro
					case "USD":
						usd = b.BalanceMicro
					}
				}
				wantUSD := -(100 + 50 + 40 + ws[1].Charge.AmountMicro)
				if tt.eur != 0 {
					wantUSD = -(100 + 50 + 40)
				}
				if eur != tt.eur || usd != wantUSD {
					t.Errorf("balances = %+v, want USD %d, EUR %d", bs, wantUSD, tt.eur)
				}
				cps, err := l.Checkpoints(ctx, "n1")
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range cps {
					w := ws[0]
					if c.Meter == "tcp_connects" {
						w = ws[1]
					}
					if c.Seq != 2 || c.Counter != w.ToCounter || !c.End.Equal(w.End) {
						t.Errorf("checkpoint %+v, want window 2 at %d, %v", c, w.ToCounter, w.End)
					}
				}
				mustVerify(t, l)
			})
		}
	})
}

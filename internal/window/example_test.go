package window_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/window"
)

// A biller bills the growth of cumulative counters since the last
// checkpoint, once: a second biller started on the same ledger (an agent
// restart) resumes from the checkpoint.
func ExampleBiller_Tick() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "kmeter-example")
	defer os.RemoveAll(dir)
	l, err := ledger.Open(ctx, ledger.Config{Path: filepath.Join(dir, ledger.DBFile)})
	if err != nil {
		panic(err)
	}
	defer l.Close()

	counts := map[window.Key]uint64{{Tenant: "shop", Meter: "tls_server_handshakes"}: 10_000}
	src := window.SourceFunc(func(context.Context) (map[window.Key]uint64, error) { return counts, nil })
	// 1 micro-USD per handshake: 0.01 USD per 10,000.
	pricers := onePricer{&fixedPricer{microPerUnit: 1}}
	cfg := window.Config{NodeID: "node-a", Source: src, Ledger: l, Pricers: pricers, Log: quietLog()}

	b, _ := window.New(ctx, cfg)
	r, _ := b.Tick(ctx)
	fmt.Println("first agent billed", r.Quantity)

	counts[window.Key{Tenant: "shop", Meter: "tls_server_handshakes"}] = 12_500
	restarted, _ := window.New(ctx, cfg)
	r, _ = restarted.Tick(ctx)
	fmt.Println("restarted agent billed", r.Quantity)

	bs, _ := l.Balances(ctx, "shop")
	fmt.Println("shop balance", ledger.FormatAmount(bs[0].BalanceMicro), bs[0].Currency)
	// Output:
	// first agent billed 10000
	// restarted agent billed 2500
	// shop balance -0.012500 USD
}

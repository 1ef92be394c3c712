package ledger_test

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
)

func TestZZHeap(t *testing.T) {
	runtime.MemProfileRate = 512
	names := benchTenants(10000)
	meterNames := []string{"syscalls", "tcp_connects", "tcp_accepts", "net_tx_bytes", "net_rx_bytes", "tls_server_handshakes", "tls_client_handshakes"}
	l := ledgertest.SQLite.Open(t)
	ctx := context.Background()
	ws := make([]ledger.Window, 0, 70000)
	for seq := uint64(1); seq <= 3; seq++ {
		ws = ws[:0]
		end := t0.Add(time.Duration(seq) * 5 * time.Second)
		for _, tn := range names {
			for _, m := range meterNames {
				ws = append(ws, ledger.Window{Node: "n1", Tenant: tn, Meter: m, Seq: seq, PrevSeq: seq - 1,
					FromCounter: (seq - 1) * 1000, ToCounter: seq * 1000, Quantity: 1000,
					Start: end.Add(-5 * time.Second), End: end,
					Charge:       pricing.Charge{AmountMicro: 1000, Currency: "USD", VendorMicro: 700},
					PluginSHA256: plugin})
			}
		}
		if err := l.CommitWindows(ctx, ws); err != nil {
			t.Fatal(err)
		}
	}
	ws = nil
	runtime.GC()
	f, _ := os.Create("/tmp/lm-heap.pprof")
	pprof.Lookup("heap").WriteTo(f, 0)
	f.Close()
	runtime.KeepAlive(l)
}

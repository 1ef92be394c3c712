package plugin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kmeter/kmeter/internal/audit"
	"github.com/kmeter/kmeter/internal/plugin"
	"github.com/kmeter/kmeter/internal/plugin/licence"
	"github.com/kmeter/kmeter/internal/plugin/sign"
	"github.com/kmeter/kmeter/internal/plugin/trust"
	"github.com/kmeter/kmeter/internal/pricing"
)

// An engine in production: the trust verifier and the engine share one
// audit log, and the licence's max_calls caps the calls per load.
func Example_licensedAndAudited() {
	dir, _ := os.MkdirTemp("", "kmeter-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	// The publisher's side: embed a licence for 2 calls, then sign.
	key, _ := sign.NewKeyPairFromSeed(bytes.Repeat([]byte{7}, 32))
	module, _ := plugin.ReadFixture("deep") // prices each record at its quantity in micro-USD
	module, _ = licence.Embed(module, licence.Licence{Publisher: "Acme Pricing", Licensee: "Tenant Bank", NotAfter: time.Now().Add(time.Hour), MaxCalls: 2})
	module, _ = sign.Sign(module, key)

	// The agent's side.
	log, err := audit.Open(filepath.Join(dir, "audit.log"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer log.Close()
	verifier, err := trust.New(trust.Config{Keys: []sign.PublicKey{key.Public()}, HostID: "host-a", Audit: log})
	if err != nil {
		fmt.Println(err)
		return
	}
	e, err := plugin.New(ctx, plugin.Config{Verifier: verifier, Audit: log, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	if _, err := e.Load(ctx, module); err != nil {
		fmt.Println(err)
		return
	}
	t := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	batch := []pricing.Record{{Tenant: "pay", Meter: "calls", Quantity: 3, Start: t, End: t.Add(time.Minute)}}
	for i := 1; i <= 3; i++ {
		res, err := e.Price(ctx, batch)
		switch {
		case errors.Is(err, plugin.ErrLicenceExhausted):
			fmt.Printf("batch %d: licence exhausted, nothing charged\n", i)
		case err != nil:
			fmt.Println(err)
		default:
			fmt.Printf("batch %d: %d micro-%s\n", i, res.Charges[0].AmountMicro, res.Charges[0].Currency)
		}
	}
	fmt.Println("licence refusals:", e.Stats().LicenceRefusals)
	head, err := audit.VerifyFile(filepath.Join(dir, "audit.log"), "")
	fmt.Println("audit entries:", head.Seq, "chain ok:", err == nil)
	// Output:
	// batch 1: 3 micro-USD
	// batch 2: 3 micro-USD
	// batch 3: licence exhausted, nothing charged
	// licence refusals: 1
	// audit entries: 2 chain ok: true
}

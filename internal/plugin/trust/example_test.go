package trust_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kmeter/kmeter/internal/plugin/licence"
	"github.com/kmeter/kmeter/internal/plugin/sign"
	"github.com/kmeter/kmeter/internal/plugin/trust"
)

func ExampleVerifier_Verify() {
	dir, _ := os.MkdirTemp("", "trust-example")
	defer os.RemoveAll(dir)

	// The publisher signs a module licensed to one host until 2027.
	publisher, _ := sign.GenerateKey(nil)
	module, _ := os.ReadFile("testdata/plugin.wasm")
	module, _ = licence.Embed(module, licence.Licence{
		Publisher: "Acme", Licensee: "Bank", NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		Hosts: []string{"host-a"}, MaxCalls: 1000,
	})
	module, _ = sign.Sign(module, publisher)

	// The operator trusts the publisher's key.
	pub, _ := publisher.Public().MarshalBinary()
	os.Mkdir(filepath.Join(dir, "keys"), 0o755)
	os.WriteFile(filepath.Join(dir, "keys", "acme.pub"), pub, 0o644)
	now := func() time.Time { return time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC) }

	for _, host := range []string{"host-a", "host-b"} {
		v, err := trust.New(trust.Config{KeysDir: filepath.Join(dir, "keys"), HostID: host, Now: now})
		if err != nil {
			fmt.Println(err)
			return
		}
		id, err := v.Verify(context.Background(), module)
		switch {
		case errors.Is(err, trust.ErrWrongHost):
			fmt.Println(host, "refused: wrong host")
		case err != nil:
			fmt.Println(host, "refused:", err)
		default:
			fmt.Println(host, "loads, max calls", id.MaxCalls)
		}
	}
	// Output:
	// host-a loads, max calls 1000
	// host-b refused: wrong host
}

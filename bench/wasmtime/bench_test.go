// Package wasmtime benchmarks the C flat-price example plugin under
// wasmtime-go, the same way internal/plugin's benchmarks run it under
// wazero, so the two runtimes can be compared side by side. It is a
// separate Go module so kmeter itself keeps no cgo dependency.
//
//	cd bench/wasmtime && go test -bench . -benchtime=5000x
package wasmtime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bytecodealliance/wasmtime-go/v39"

	"github.com/kmeter/kmeter/sdk/go/abi"
)

// flatModule builds plugins/c/flat with plugins/build.sh.
func flatModule(b *testing.B) []byte {
	b.Helper()
	dir := b.TempDir()
	out, err := exec.Command("bash", "../../plugins/build.sh", dir, "c").CombinedOutput()
	if err != nil {
		b.Fatalf("plugins/build.sh: %v\n%s", err, out)
	}
	mod, err := os.ReadFile(filepath.Join(dir, "c-flat.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	return mod
}

type host struct {
	engine *wasmtime.Engine
	module *wasmtime.Module
	stop   chan struct{}
}

// newHost compiles the module once, with epoch interruption on (the
// wasmtime equivalent of wazero's close-on-context-done deadline checks).
func newHost(b *testing.B) *host {
	cfg := wasmtime.NewConfig()
	cfg.SetEpochInterruption(true)
	engine := wasmtime.NewEngineWithConfig(cfg)
	module, err := wasmtime.NewModule(engine, flatModule(b))
	if err != nil {
		b.Fatal(err)
	}
	h := &host{engine: engine, module: module, stop: make(chan struct{})}
	go func() { // the epoch clock: 1 tick per millisecond
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				engine.IncrementEpoch()
			}
		}
	}()
	b.Cleanup(func() { close(h.stop) })
	return h
}

type instance struct {
	store        *wasmtime.Store
	mem          *wasmtime.Memory
	alloc, price *wasmtime.Func
	inPtr        int32
	inCap        int
}

func (h *host) instantiate(b *testing.B) *instance {
	store := wasmtime.NewStore(h.engine)
	store.Limiter(16<<20, -1, -1, -1, -1)
	store.SetEpochDeadline(250) // 250 ms
	inst, err := wasmtime.NewInstance(store, h.module, nil)
	if err != nil {
		b.Fatal(err)
	}
	return &instance{
		store: store,
		mem:   inst.GetExport(store, "memory").Memory(),
		alloc: inst.GetFunc(store, "kmeter_alloc"),
		price: inst.GetFunc(store, "kmeter_price"),
	}
}

// priceBatch writes the encoded batch into guest memory (allocating only
// when it does not fit the previous input buffer, as internal/plugin
// does), calls kmeter_price once and decodes the charges.
func (in *instance) priceBatch(b *testing.B, batch []byte, n int, dst []abi.Charge) []abi.Charge {
	in.store.SetEpochDeadline(250)
	if len(batch) > in.inCap {
		p, err := in.alloc.Call(in.store, int32(len(batch)))
		if err != nil {
			b.Fatal(err)
		}
		in.inPtr, in.inCap = p.(int32), len(batch)
	}
	copy(in.mem.UnsafeData(in.store)[in.inPtr:], batch)
	r, err := in.price.Call(in.store, in.inPtr, int32(len(batch)))
	if err != nil {
		b.Fatal(err)
	}
	res := r.(int64)
	out := in.mem.UnsafeData(in.store)[uint32(res>>32):][:uint32(res)]
	cs, err := abi.DecodeCharges(out, n, dst, nil)
	if err != nil {
		b.Fatal(err)
	}
	return cs
}

func report(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

func oneRecord(tenant string) []abi.Record {
	return []abi.Record{{Tenant: tenant, Meter: "syscalls", Quantity: 21, StartUnixNano: 0, EndUnixNano: 60e9}}
}

// BenchmarkPluginColdStart: a fresh store and instance (own memory) from
// the compiled module to the first priced batch.
func BenchmarkPluginColdStart(b *testing.B) {
	h := newHost(b)
	lat := make([]time.Duration, 0, b.N)
	var buf []byte
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		in := h.instantiate(b)
		buf, _ = abi.AppendBatch(buf[:0], oneRecord("tenant-0"))
		cs := in.priceBatch(b, buf, 1, nil)
		lat = append(lat, time.Since(start))
		if cs[0].AmountMicro != 42 {
			b.Fatalf("charge %+v", cs[0])
		}
		in.store.Close()
	}
	b.StopTimer()
	report(b, lat)
}

// BenchmarkPluginPooledFirstBatch: a new tenant's first batch on a warm
// instance.
func BenchmarkPluginPooledFirstBatch(b *testing.B) {
	h := newHost(b)
	in := h.instantiate(b)
	tenants := make([]string, b.N)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("tenant-%d", i)
	}
	lat := make([]time.Duration, 0, b.N)
	var buf []byte
	dst := make([]abi.Charge, 0, 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		buf, _ = abi.AppendBatch(buf[:0], oneRecord(tenants[i]))
		cs := in.priceBatch(b, buf, 1, dst[:0])
		lat = append(lat, time.Since(start))
		if cs[0].AmountMicro != 42 {
			b.Fatalf("charge %+v", cs[0])
		}
	}
	b.StopTimer()
	report(b, lat)
}

// BenchmarkPluginPriceBatch: 1024 records (64 tenants x 16 meters) on a
// warm instance; ns/record is the cost per record.
func BenchmarkPluginPriceBatch(b *testing.B) {
	h := newHost(b)
	in := h.instantiate(b)
	recs := make([]abi.Record, 0, 1024)
	var want int64
	for t := 0; t < 64; t++ {
		attrs := []abi.Attr{{Key: "plan", Value: "pro"}, {Key: "region", Value: "eu-west"}}
		for m := 0; m < 16; m++ {
			q := uint64(len(recs))
			recs = append(recs, abi.Record{Tenant: fmt.Sprintf("tenant-%02d", t), Meter: fmt.Sprintf("meter_%02d", m),
				Quantity: q, EndUnixNano: 60e9, Attrs: attrs})
			want += 2 * int64(q)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	var buf []byte
	dst := make([]abi.Charge, 0, len(recs))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		buf, _ = abi.AppendBatch(buf[:0], recs)
		cs := in.priceBatch(b, buf, len(recs), dst[:0])
		lat = append(lat, time.Since(start))
		var got int64
		for _, c := range cs {
			got += c.AmountMicro
		}
		if got != want {
			b.Fatalf("total %d, want %d", got, want)
		}
	}
	b.StopTimer()
	report(b, lat)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}

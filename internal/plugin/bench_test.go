package plugin

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/pricing"
)

// latencies records per-operation durations and reports percentiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.ReportMetric(float64(l[len(l)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(l[len(l)*99/100].Nanoseconds()), "p99-ns")
}

func benchVersion(b *testing.B, e *Engine) *version {
	b.Helper()
	v, err := e.acquire(false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.users.Done)
	return v
}

// BenchmarkPluginColdStart measures a fresh isolated instance of the C
// flat example, from the compiled module to its first priced batch:
// instantiate (own zeroed memory), check kmeter_abi_version, write the
// batch, call kmeter_price, decode. Closing the instance is outside the
// timed sample but inside the loop.
func BenchmarkPluginColdStart(b *testing.B) {
	e := newEngine(b, func(c *Config) { c.PoolSize = 1; c.CallTimeout = 5 * time.Second })
	mustLoad(b, e, examplePlugin(b, "c-flat"))
	v := benchVersion(b, e)
	ctx := context.Background()
	recs := []pricing.Record{rec("tenant-0", "syscalls", 21)}
	dst := make([]pricing.Charge, 0, 1)
	lat := make(latencies, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		in, err := v.newInstance(ctx, false)
		if err != nil {
			b.Fatal(err)
		}
		out, err := in.call(ctx, nil, recs, false, dst[:0])
		lat = append(lat, time.Since(start))
		if err != nil || out[0].AmountMicro != 42 {
			b.Fatalf("%v %+v", err, out)
		}
		in.close(ctx)
	}
	b.StopTimer()
	lat.report(b)
}

// BenchmarkPluginPooledFirstBatch measures Engine.Price for a tenant
// never seen before, served by a warm instance from the pool.
func BenchmarkPluginPooledFirstBatch(b *testing.B) {
	e := newEngine(b, func(c *Config) { c.CallTimeout = 5 * time.Second })
	mustLoad(b, e, examplePlugin(b, "c-flat"))
	ctx := context.Background()
	tenants := make([]string, b.N)
	for i := range tenants {
		tenants[i] = fmt.Sprintf("tenant-%d", i)
	}
	lat := make(latencies, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		recs := []pricing.Record{rec(tenants[i], "syscalls", 21)}
		start := time.Now()
		res, err := e.Price(ctx, recs)
		lat = append(lat, time.Since(start))
		if err != nil || res.Charges[0].AmountMicro != 42 {
			b.Fatalf("%v %+v", err, res)
		}
	}
	b.StopTimer()
	lat.report(b)
}

// batch1024 returns 1024 records, 64 tenants x 16 meters, sorted by
// tenant, with names and attribute maps shared as they are when they come
// from the config, and their total price with the C flat example.
func batch1024() ([]pricing.Record, int64) {
	meters := make([]string, 16)
	for i := range meters {
		meters[i] = fmt.Sprintf("meter_%02d", i)
	}
	recs := make([]pricing.Record, 0, 1024)
	var want int64
	for t := 0; t < 64; t++ {
		tenant := fmt.Sprintf("tenant-%02d", t)
		attrs := map[string]string{"plan": "pro", "region": "eu-west"}
		for _, m := range meters {
			q := uint64(len(recs))
			r := rec(tenant, m, q)
			r.Attrs = attrs
			recs = append(recs, r)
			want += 2 * int64(q)
		}
	}
	return recs, want
}

// BenchmarkPluginPriceBatch measures Engine.PriceAppend on a 1024-record
// batch (64 tenants x 16 meters, tenant attributes shared per tenant) with
// the C flat example, appending into a charges buffer reused from batch to
// batch as a biller does; ns/record is the cost per record.
func BenchmarkPluginPriceBatch(b *testing.B) {
	benchPriceBatch(b, func(e *Engine, ctx context.Context, recs []pricing.Record, dst []pricing.Charge) (pricing.Result, error) {
		return e.PriceAppend(ctx, recs, dst[:0])
	})
}

// BenchmarkPluginPriceBatchAlloc is BenchmarkPluginPriceBatch through
// Engine.Price, which hands out a fresh 32 KiB charges slice per batch.
func BenchmarkPluginPriceBatchAlloc(b *testing.B) {
	benchPriceBatch(b, func(e *Engine, ctx context.Context, recs []pricing.Record, _ []pricing.Charge) (pricing.Result, error) {
		return e.Price(ctx, recs)
	})
}

func benchPriceBatch(b *testing.B, price func(*Engine, context.Context, []pricing.Record, []pricing.Charge) (pricing.Result, error)) {
	e := newEngine(b, func(c *Config) { c.CallTimeout = 5 * time.Second })
	mustLoad(b, e, examplePlugin(b, "c-flat"))
	ctx := context.Background()
	recs, want := batch1024()
	dst := make([]pricing.Charge, 0, len(recs))
	lat := make(latencies, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		res, err := price(e, ctx, recs, dst)
		lat = append(lat, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		if got, _ := sum(res.Charges); got != want || len(res.Charges) != len(recs) {
			b.Fatalf("total %d over %d charges, want %d over %d", got, len(res.Charges), want, len(recs))
		}
		dst = res.Charges
	}
	b.StopTimer()
	lat.report(b)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
}

// BenchmarkPluginCallGuard measures what the call guard (MaxCallDepth
// and the deadline check at every guest function entry) costs per
// 1024-record batch, for a plugin whose per-record code is inlined
// (c-flat) and for ones that make guest calls per record (as-split,
// go-tiered).
func BenchmarkPluginCallGuard(b *testing.B) {
	recs := make([]pricing.Record, 1024)
	for i := range recs {
		recs[i] = rec(fmt.Sprintf("tenant-%02d", i%64), "calls", uint64(i))
	}
	for _, name := range []string{"c-flat", "as-split", "go-tiered"} {
		for _, guard := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/guard=%v", name, guard), func(b *testing.B) {
				e := newEngine(b, func(c *Config) { c.CallTimeout = 5 * time.Second; c.noCallGuard = !guard })
				mustLoad(b, e, examplePlugin(b, name))
				ctx := context.Background()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := e.Price(ctx, recs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
			})
		}
	}
}

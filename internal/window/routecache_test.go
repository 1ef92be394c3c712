package window_test

import (
	"sync"
	"testing"

	"github.com/kmeter/kmeter/internal/ledger/ledgertest"
	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/internal/window"
)

// switchingRoutes routes every series to the pricer named by current,
// counts the questions per series, and refuses the series in refuse.
// With versioned set it implements window.RoutesVersioner through
// versionedRoutes.
type switchingRoutes struct {
	mu      sync.Mutex
	pricers map[string]pricing.Pricer
	current string
	refuse  map[window.Key]bool
	asked   map[window.Key]int
	version uint64
}

func (s *switchingRoutes) PricerFor(tenant, meter string) (window.Route, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := window.Key{Tenant: tenant, Meter: meter}
	s.asked[k]++
	if s.refuse[k] {
		return window.Route{}, window.ErrNoPricer
	}
	return window.Route{Name: s.current, Pricer: s.pricers[s.current]}, nil
}

func (s *switchingRoutes) set(current string, refuse ...window.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current, s.version = current, s.version+1
	s.refuse = map[window.Key]bool{}
	for _, k := range refuse {
		s.refuse[k] = true
	}
}

func (s *switchingRoutes) questions(k window.Key) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked[k]
}

type versionedRoutes struct{ *switchingRoutes }

func (v versionedRoutes) RoutesVersion() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.version
}

// The biller asks for a series' route once and keeps it, asks again
// for a series that was refused, and asks for every route again when
// a RoutesVersioner's version moves; without one the first answer
// stays.
func TestBiller_keepsRoutesUntilTheirVersionMoves(t *testing.T) {
	shop, blog := window.Key{Tenant: "shop", Meter: "syscalls"}, window.Key{Tenant: "blog", Meter: "syscalls"}
	for _, tt := range []struct {
		name      string
		versioned bool
		// wantB is the amount billed for shop's 10 units after the
		// routes switched from a (1 per unit) to b (5 per unit).
		wantB int64
		// wantAsked is how often shop's route was asked for in all.
		wantAsked int
	}{
		{name: "versioned", versioned: true, wantB: 50, wantAsked: 2},
		{name: "unversioned", versioned: false, wantB: 10, wantAsked: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := ledgertest.SQLite.Open(t)
			src := newSource()
			sw := &switchingRoutes{pricers: map[string]pricing.Pricer{
				"a.wasm": &fixedPricer{microPerUnit: 1}, "b.wasm": &fixedPricer{microPerUnit: 5}}, asked: map[window.Key]int{}}
			sw.set("a.wasm", blog)
			var p window.Pricers = sw
			if tt.versioned {
				p = versionedRoutes{sw}
			}
			b := newBiller(t, "n1", src, l, p, nil)
			for range 3 {
				src.add(shop.Tenant, shop.Meter, 10)
				src.add(blog.Tenant, blog.Meter, 10)
				if r := mustTick(t, b); r.Windows != 1 || r.Held != 1 {
					t.Fatalf("tick = %+v, want shop billed and blog held", r)
				}
			}
			if n := sw.questions(shop); n != 1 {
				t.Errorf("shop's route asked for %d times in 3 ticks, want once", n)
			}
			if n := sw.questions(blog); n != 3 {
				t.Errorf("blog's refused route asked for %d times in 3 ticks, want 3", n)
			}
			_, amounts := billed(t, l)
			if got := amounts["n1/shop/syscalls"]; got != 30 {
				t.Fatalf("shop billed %d micro for 30 units at 1, want 30", got)
			}
			sw.set("b.wasm")
			src.add(shop.Tenant, shop.Meter, 10)
			if r := mustTick(t, b); r.Windows != 2 || r.Held != 0 {
				t.Fatalf("tick = %+v, want shop and blog billed", r)
			}
			q, amounts := billed(t, l)
			if got := amounts["n1/shop/syscalls"] - 30; got != tt.wantB {
				t.Errorf("shop's last 10 units billed %d micro, want %d", got, tt.wantB)
			}
			// blog was never routed before: its first route is b's.
			if q["n1/blog/syscalls"] != 30 || amounts["n1/blog/syscalls"] != 150 {
				t.Errorf("blog billed %d units for %d micro, want its held 30 for 150", q["n1/blog/syscalls"], amounts["n1/blog/syscalls"])
			}
			if n := sw.questions(shop); n != tt.wantAsked {
				t.Errorf("shop's route asked for %d times, want %d", n, tt.wantAsked)
			}
			if u := b.Unbilled(); len(u) != 0 {
				t.Errorf("unbilled = %v, want none", u)
			}
			mustVerify(t, l)
		})
	}
}

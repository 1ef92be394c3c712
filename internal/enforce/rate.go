package enforce

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Bounds on what a limit may say. Larger values are almost certainly a
// unit mistake (10GiB/s typed as 10GB/ms) and would overflow the kernel's
// nano-token arithmetic: a bucket holds burst * 1e9 in a signed 64-bit
// integer.
const (
	// MaxByteRate is 1 TiB/s.
	MaxByteRate = 1 << 40
	// MaxByteBurst is 8 GiB.
	MaxByteBurst = 8 << 30
	// MaxEventRate is ten million events per second.
	MaxEventRate = 10_000_000
	// MaxEventBurst is one billion events.
	MaxEventBurst = 1_000_000_000
	// MinByteBurst is the smallest byte burst: one 64 KiB GSO packet, so
	// a TCP sender on loopback is never stuck behind a packet larger than
	// the bucket.
	MinByteBurst = 64 << 10
)

var byteUnits = map[string]*big.Rat{
	"b":  big.NewRat(1, 1),
	"kb": big.NewRat(1000, 1), "mb": big.NewRat(1000_000, 1), "gb": big.NewRat(1000_000_000, 1), "tb": big.NewRat(1000_000_000_000, 1),
	"kib": big.NewRat(1<<10, 1), "mib": big.NewRat(1<<20, 1), "gib": big.NewRat(1<<30, 1), "tib": big.NewRat(1<<40, 1),
	"bit": big.NewRat(1, 8), "kbit": big.NewRat(1000, 8), "mbit": big.NewRat(1000_000, 8), "gbit": big.NewRat(1000_000_000, 8),
}

// ParseByteRate parses a bandwidth such as "10MiB/s", "500KB/s" or
// "100Mbit/s" into bytes per second. The empty string is 0 (unlimited).
func ParseByteRate(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	num, unit, err := splitRate(s)
	if err != nil {
		return 0, err
	}
	if unit == "" {
		return 0, fmt.Errorf("rate %q has no unit: a bandwidth is written like 10MiB/s or 500B/s", s)
	}
	mul, ok := byteUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("rate %q: unknown unit %q (use B, KB, MB, GB, KiB, MiB, GiB, Kbit, Mbit or Gbit, followed by /s)", s, unit)
	}
	v := new(big.Rat).Mul(num, mul)
	return checkRate(s, v, MaxByteRate, "1TiB/s")
}

// ParseEventRate parses an event rate such as "100/s" into events per
// second. The empty string is 0 (unlimited).
func ParseEventRate(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	num, unit, err := splitRate(s)
	if err != nil {
		return 0, err
	}
	if unit != "" {
		return 0, fmt.Errorf("rate %q: an event rate has no unit, write it like 100/s", s)
	}
	return checkRate(s, num, MaxEventRate, "10000000/s")
}

// splitRate splits "10.5MiB/s" into 10.5 and "MiB".
func splitRate(s string) (*big.Rat, string, error) {
	t := strings.TrimSpace(s)
	body, ok := strings.CutSuffix(t, "/s")
	if !ok {
		return nil, "", fmt.Errorf("rate %q: must end in /s (per second), like 10MiB/s or 100/s", s)
	}
	i := 0
	for i < len(body) && (body[i] == '-' || body[i] == '+' || body[i] == '.' || (body[i] >= '0' && body[i] <= '9')) {
		i++
	}
	numText, unit := body[:i], strings.TrimSpace(body[i:])
	if numText == "" {
		return nil, "", fmt.Errorf("rate %q: no number before the unit", s)
	}
	num, ok := new(big.Rat).SetString(numText)
	if !ok {
		return nil, "", fmt.Errorf("rate %q: %q is not a number", s, numText)
	}
	if num.Sign() < 0 {
		return nil, "", fmt.Errorf("rate %q is negative: a rate must be positive (remove the limit to make it unlimited)", s)
	}
	return num, unit, nil
}

func checkRate(s string, v *big.Rat, max uint64, maxText string) (uint64, error) {
	if v.Sign() == 0 {
		return 0, fmt.Errorf("rate %q is zero: to block, use a policy; to make it unlimited, leave it out", s)
	}
	if v.Cmp(new(big.Rat).SetUint64(max)) > 0 {
		return 0, fmt.Errorf("rate %q is above the maximum %s: check the unit", s, maxText)
	}
	n := new(big.Int).Quo(v.Num(), v.Denom()) // round down
	if n.Sign() == 0 {
		return 0, fmt.Errorf("rate %q is below 1 per second, the smallest rate the kernel buckets count", s)
	}
	return n.Uint64(), nil
}

// FormatByteRate writes bytes per second in the largest binary unit that
// divides it exactly, so ParseByteRate(FormatByteRate(n)) == n.
func FormatByteRate(n uint64) string {
	if n == 0 {
		return ""
	}
	for _, u := range []struct {
		name string
		size uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n%u.size == 0 {
			return strconv.FormatUint(n/u.size, 10) + u.name + "/s"
		}
	}
	return strconv.FormatUint(n, 10) + "B/s"
}

// FormatEventRate writes events per second as "N/s".
func FormatEventRate(n uint64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatUint(n, 10) + "/s"
}

// Spec is a limit as people write it: in the config file, the API body
// and the CLI flags. Empty rates are unlimited.
type Spec struct {
	// Egress is the bandwidth a tenant may send, such as "10MiB/s".
	Egress string `json:"egress,omitempty"`
	// EgressBurst is the egress bucket size in bytes (default: see
	// [DefaultByteBurst]).
	EgressBurst uint64 `json:"egress_burst,omitempty"`
	// Ingress is the bandwidth a tenant may receive.
	Ingress string `json:"ingress,omitempty"`
	// IngressBurst is the ingress bucket size in bytes.
	IngressBurst uint64 `json:"ingress_burst,omitempty"`
	// ConnectRate is new outbound TCP connections per second, "100/s".
	ConnectRate string `json:"connect_rate,omitempty"`
	// ConnectBurst is how many connections may be made at once (default:
	// one second's worth).
	ConnectBurst uint64 `json:"connect_burst,omitempty"`
	// TLSRate is TLS handshakes (ClientHello or ServerHello sent) per second.
	TLSRate string `json:"tls_rate,omitempty"`
	// TLSBurst is how many handshakes may start at once (default: one
	// second's worth).
	TLSBurst uint64 `json:"tls_burst,omitempty"`
}

// Limit is a parsed, validated [Spec]. Zero rates are unlimited.
type Limit struct {
	Egress, EgressBurst       uint64 // bytes/s, bytes
	Ingress, IngressBurst     uint64 // bytes/s, bytes
	ConnectRate, ConnectBurst uint64 // connections/s, connections
	TLSRate, TLSBurst         uint64 // handshakes/s, handshakes
}

// DefaultByteBurst is the byte burst used when none is given: 100 ms of
// the rate, but at least 1 MiB, so that a new TCP connection's first
// window (ten 64 KiB segments on loopback) fits and a paced flow never
// meets the drop path.
func DefaultByteBurst(rate uint64) uint64 {
	return max(rate/10, 1<<20)
}

// Parse validates s and fills in default bursts. All problems are
// reported together.
func (s Spec) Parse() (Limit, error) {
	var l Limit
	var errs []error
	var err error
	if l.Egress, err = ParseByteRate(s.Egress); err != nil {
		errs = append(errs, fmt.Errorf("egress: %w", err))
	}
	if l.Ingress, err = ParseByteRate(s.Ingress); err != nil {
		errs = append(errs, fmt.Errorf("ingress: %w", err))
	}
	if l.ConnectRate, err = ParseEventRate(s.ConnectRate); err != nil {
		errs = append(errs, fmt.Errorf("connect rate: %w", err))
	}
	if l.TLSRate, err = ParseEventRate(s.TLSRate); err != nil {
		errs = append(errs, fmt.Errorf("tls rate: %w", err))
	}
	byteBurst := func(name string, rate, burst uint64) uint64 {
		switch {
		case burst == 0 && rate > 0:
			return DefaultByteBurst(rate)
		case burst > 0 && rate == 0:
			errs = append(errs, fmt.Errorf("%s burst %d given without a %s rate", name, burst, name))
		case burst > MaxByteBurst:
			errs = append(errs, fmt.Errorf("%s burst %d bytes is above the maximum %d (8 GiB)", name, burst, uint64(MaxByteBurst)))
		case burst > 0 && burst < MinByteBurst:
			errs = append(errs, fmt.Errorf("%s burst %d bytes is below the minimum %d (one 64 KiB packet)", name, burst, MinByteBurst))
		}
		return burst
	}
	eventBurst := func(name string, rate, burst uint64) uint64 {
		switch {
		case burst == 0 && rate > 0:
			return rate
		case burst > 0 && rate == 0:
			errs = append(errs, fmt.Errorf("%s burst %d given without a %s rate", name, burst, name))
		case burst > MaxEventBurst:
			errs = append(errs, fmt.Errorf("%s burst %d is above the maximum %d", name, burst, uint64(MaxEventBurst)))
		}
		return burst
	}
	l.EgressBurst = byteBurst("egress", l.Egress, s.EgressBurst)
	l.IngressBurst = byteBurst("ingress", l.Ingress, s.IngressBurst)
	l.ConnectBurst = eventBurst("connect", l.ConnectRate, s.ConnectBurst)
	l.TLSBurst = eventBurst("tls", l.TLSRate, s.TLSBurst)
	if err := errors.Join(errs...); err != nil {
		return Limit{}, err
	}
	return l, nil
}

// Spec returns l as people write it.
func (l Limit) Spec() Spec {
	return Spec{
		Egress: FormatByteRate(l.Egress), EgressBurst: l.EgressBurst,
		Ingress: FormatByteRate(l.Ingress), IngressBurst: l.IngressBurst,
		ConnectRate: FormatEventRate(l.ConnectRate), ConnectBurst: l.ConnectBurst,
		TLSRate: FormatEventRate(l.TLSRate), TLSBurst: l.TLSBurst,
	}
}

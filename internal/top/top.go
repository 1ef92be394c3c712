// Package top renders a live per-tenant view of a running agent's meters:
// rates between two reads of GET /v1/usage, and totals.
package top

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kmeter/kmeter/internal/meter"
)

// Usage is the part of GET /v1/usage that top reads.
type Usage struct {
	Time        time.Time                    `json:"time"`
	Tenants     map[string]map[string]uint64 `json:"tenants"`
	Enforced    map[string]map[string]uint64 `json:"enforced"`
	Unavailable []string                     `json:"unavailable"`
}

// Fetch reads GET /v1/usage from the agent at server.
func Fetch(ctx context.Context, c *http.Client, server string) (*Usage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(server, "/")+"/v1/usage", nil)
	if err != nil {
		return nil, fmt.Errorf("fetch usage: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch usage from %s: %w (is `kmeter run` running there?)", server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("fetch usage from %s: %s: %s", server, resp.Status, strings.TrimSpace(string(b)))
	}
	var u Usage
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil {
		return nil, fmt.Errorf("decode usage from %s: %w", server, err)
	}
	return &u, nil
}

// columns are the meters shown, with short headers.
var columns = []struct{ meter, head string }{
	{meter.Syscalls, "SYSCALLS"},
	{meter.TCPConnects, "CONNECTS"},
	{meter.TCPAccepts, "ACCEPTS"},
	{meter.NetTxBytes, "TX"},
	{meter.NetRxBytes, "RX"},
	{meter.TLSClientHandshakes, "TLS-C"},
	{meter.TLSServerHandshakes, "TLS-S"},
	{enforcedColumn, "ENFORCED"},
}

// enforcedColumn is the pseudo-meter of enforcement decisions (all kinds
// added up): packets dropped and connections denied by the limiter.
const enforcedColumn = "enforced"

// value returns tenant t's cumulative value of column m.
func (u *Usage) value(t, m string) (uint64, bool) {
	if m != enforcedColumn {
		v, ok := u.Tenants[t][m]
		return v, ok
	}
	kinds, ok := u.Enforced[t]
	var sum uint64
	for _, v := range kinds {
		sum += v
	}
	return sum, ok
}

// Render writes one screen: a row per tenant with "rate/s (total)" per
// meter, busiest tenants (by syscall rate) first, at most maxRows rows
// (0: all). prev may be nil, then rates are blank.
func Render(w io.Writer, prev, cur *Usage, maxRows int) error {
	type row struct {
		tenant string
		rates  []float64
		totals []uint64
	}
	dt := 0.0
	if prev != nil {
		dt = cur.Time.Sub(prev.Time).Seconds()
	}
	tenants := map[string]bool{}
	for t := range cur.Tenants {
		tenants[t] = true
	}
	for t := range cur.Enforced {
		tenants[t] = true
	}
	rows := make([]row, 0, len(tenants))
	for t := range tenants {
		r := row{tenant: t}
		for _, c := range columns {
			v, _ := cur.value(t, c.meter)
			rate := 0.0
			if dt > 0 {
				if p, ok := prev.value(t, c.meter); ok && v >= p {
					rate = float64(v-p) / dt
				}
			}
			r.rates = append(r.rates, rate)
			r.totals = append(r.totals, v)
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].rates[0] != rows[j].rates[0] {
			return rows[i].rates[0] > rows[j].rates[0]
		}
		return rows[i].tenant < rows[j].tenant
	})
	if maxRows > 0 && len(rows) > maxRows {
		rows = rows[:maxRows]
	}
	fmt.Fprintf(w, "kmeter top - %s - %d tenants - rate/s (total)\n", cur.Time.Format(time.TimeOnly), len(tenants))
	if len(cur.Unavailable) > 0 {
		fmt.Fprintf(w, "unavailable (meter not attached, see kmeter doctor): %s\n", strings.Join(cur.Unavailable, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "TENANT\t")
	for _, c := range columns {
		fmt.Fprintf(tw, "%s\t", c.head)
	}
	fmt.Fprintln(tw)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t", r.tenant)
		for i, c := range columns {
			bytes := c.meter == meter.NetTxBytes || c.meter == meter.NetRxBytes
			rate := "-" // no earlier read to take a rate from
			if prev != nil {
				rate = human(r.rates[i], bytes)
			}
			fmt.Fprintf(tw, "%s (%s)\t", rate, human(float64(r.totals[i]), bytes))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// human formats v compactly: 1.2k, 3.4M; bytes in KiB/MiB/GiB.
func human(v float64, bytes bool) string {
	base, units := 1000.0, []string{"", "k", "M", "G", "T"}
	if bytes {
		base, units = 1024.0, []string{"B", "KiB", "MiB", "GiB", "TiB"}
	}
	i := 0
	for v >= base && i < len(units)-1 {
		v /= base
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f%s", v, units[0])
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}

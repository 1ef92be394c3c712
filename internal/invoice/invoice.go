// Package invoice builds a tenant's invoice for one period from the
// ledger and renders it as JSON, CSV or HTML.
package invoice

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/kmeter/kmeter/internal/ledger"
)

// ErrManyCurrencies means the tenant was charged in several currencies
// in the period and no currency was picked.
var ErrManyCurrencies = errors.New("charged in more than one currency")

// Source is where usage lines come from; *ledger.Ledger implements it.
type Source interface {
	UsageLines(ctx context.Context, tenant, period string) ([]ledger.UsageLine, error)
}

// Line is one line item: the usage of one meter priced by one plugin.
type Line struct {
	Meter    string `json:"meter"`
	Quantity int64  `json:"quantity"`
	// UnitPriceMicro is amount/quantity in micro-units as a decimal
	// (up to 6 places): what the plugin charged per unit.
	UnitPriceMicro string `json:"unit_price_micro"`
	AmountMicro    int64  `json:"amount_micro"`
	// PluginSHA256 identifies the plugin that priced the line.
	PluginSHA256 string `json:"plugin_sha256"`
	// Late marks usage of an earlier period that arrived after that
	// period was closed.
	Late bool `json:"late"`
}

// Invoice is a tenant's bill for one period in one currency.
type Invoice struct {
	Tenant     string `json:"tenant"`
	Period     string `json:"period"`
	Currency   string `json:"currency"`
	Lines      []Line `json:"lines"`
	TotalMicro int64  `json:"total_micro"`
}

// Build makes tenant's invoice for period (such as "2026-11"). currency
// may be empty when the tenant was charged in one currency only.
func Build(ctx context.Context, src Source, tenant, period, currency string) (Invoice, error) {
	if tenant == "" {
		return Invoice{}, fmt.Errorf("invoice: tenant is empty")
	}
	if err := ledger.CheckPeriod(period); err != nil {
		return Invoice{}, fmt.Errorf("invoice: %w", err)
	}
	uls, err := src.UsageLines(ctx, tenant, period)
	if err != nil {
		return Invoice{}, fmt.Errorf("invoice: %w", err)
	}
	if currency == "" {
		var seen []string
		for _, u := range uls {
			if u.Currency != "" && !slices.Contains(seen, u.Currency) {
				seen = append(seen, u.Currency)
			}
		}
		switch len(seen) {
		case 0:
		case 1:
			currency = seen[0]
		default:
			slices.Sort(seen)
			return Invoice{}, fmt.Errorf("invoice: %s was %w (%s) in %s: pick one with --currency or ?currency=", tenant, ErrManyCurrencies, strings.Join(seen, " and "), period)
		}
	}
	inv := Invoice{Tenant: tenant, Period: period, Currency: currency, Lines: []Line{}}
	for _, u := range uls {
		// Lines without a currency are usage priced at zero.
		if u.Currency != currency && u.Currency != "" {
			continue
		}
		if u.Quantity == 0 && u.AmountMicro == 0 {
			continue
		}
		inv.Lines = append(inv.Lines, Line{Meter: u.Meter, Quantity: u.Quantity, UnitPriceMicro: unitPrice(u.AmountMicro, u.Quantity),
			AmountMicro: u.AmountMicro, PluginSHA256: u.PluginSHA256, Late: u.Late})
		inv.TotalMicro += u.AmountMicro
	}
	return inv, nil
}

func unitPrice(amount, quantity int64) string {
	if quantity == 0 {
		return "0"
	}
	s := new(big.Rat).SetFrac64(amount, quantity).FloatString(6)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// Formats lists the formats [Invoice.Write] knows.
var Formats = []string{"json", "csv", "html"}

// Write renders inv in format "json", "csv" or "html".
func (inv Invoice) Write(w io.Writer, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(inv)
	case "csv":
		return inv.writeCSV(w)
	case "html":
		return htmlTemplate.Execute(w, inv)
	}
	return fmt.Errorf("invoice format %q is not one of %s", format, strings.Join(Formats, ", "))
}

func (inv Invoice) writeCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	rows := [][]string{{"tenant", "period", "currency", "meter", "quantity", "unit_price_micro", "amount_micro", "plugin_sha256", "late"}}
	for _, l := range inv.Lines {
		rows = append(rows, []string{inv.Tenant, inv.Period, inv.Currency, l.Meter, strconv.FormatInt(l.Quantity, 10), l.UnitPriceMicro,
			strconv.FormatInt(l.AmountMicro, 10), l.PluginSHA256, strconv.FormatBool(l.Late)})
	}
	rows = append(rows, []string{inv.Tenant, inv.Period, inv.Currency, "total", "", "", strconv.FormatInt(inv.TotalMicro, 10), "", ""})
	if err := cw.WriteAll(rows); err != nil {
		return fmt.Errorf("write invoice csv: %w", err)
	}
	return nil
}

var htmlTemplate = template.Must(template.New("invoice").Funcs(template.FuncMap{"money": ledger.FormatAmount}).Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Invoice {{.Tenant}} {{.Period}}</title>
<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px}td.n{text-align:right}.late{background:#fff3cd}</style>
</head>
<body>
<h1>Invoice</h1>
<p>Tenant: <strong>{{.Tenant}}</strong><br>Period: {{.Period}}<br>Currency: {{.Currency}}</p>
<table>
<tr><th>Meter</th><th>Quantity</th><th>Unit price (micro)</th><th>Amount ({{.Currency}})</th><th>Priced by plugin (sha256)</th><th>Note</th></tr>
{{- range .Lines}}
<tr{{if .Late}} class="late"{{end}}><td>{{.Meter}}</td><td class="n">{{.Quantity}}</td><td class="n">{{.UnitPriceMicro}}</td><td class="n">{{money .AmountMicro}}</td><td><code>{{.PluginSHA256}}</code></td><td>{{if .Late}}late usage from an earlier period{{end}}</td></tr>
{{- end}}
<tr><th colspan="3">Total</th><th class="n">{{money .TotalMicro}}</th><th colspan="2"></th></tr>
</table>
</body>
</html>
`))

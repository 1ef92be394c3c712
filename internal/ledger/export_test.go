package ledger

import (
	"context"
	"database/sql"
)

// ExecForTest runs a raw statement, to prove the triggers refuse edits.
func ExecForTest(ctx context.Context, l *Ledger, stmt string) error {
	_, err := l.db.ExecContext(ctx, stmt)
	return err
}

// OpenVersionForTest opens cfg with its schema brought only to version,
// to build a ledger as an earlier kmeter left it.
func OpenVersionForTest(ctx context.Context, cfg Config, version int) (*Ledger, error) {
	return open(ctx, cfg, version)
}

// JournalLinesForTest computes tenant's usage lines of period from the
// journal alone, as UsageLines did before the usage_lines rollup (schema
// version 1): the reference the rollup must equal.
func JournalLinesForTest(ctx context.Context, l *Ledger, tenant, period string) ([]UsageLine, error) {
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`SELECT meter, currency, plugin_sha256, late, SUM(quantity), SUM(amount_micro) FROM (
			SELECT u.meter, e.currency, e.plugin_sha256, e.late, u.quantity, u.amount_micro
			FROM entries e JOIN usage_v u ON u.entry_id = e.id
			WHERE e.tenant = ? AND e.period = ? AND e.kind = 'usage'
			UNION ALL
			SELECT u.meter, o.currency, o.plugin_sha256, o.late, -u.quantity, -u.amount_micro
			FROM entries r JOIN entries o ON o.id = r.reverses JOIN usage_v u ON u.entry_id = o.id
			WHERE r.tenant = ? AND r.period = ? AND r.kind = 'reversal'
		) lines
		GROUP BY meter, currency, plugin_sha256, late
		ORDER BY meter, late, currency, plugin_sha256`), tenant, period, tenant, period)
	return scanLines(rows, err)
}

// UsageLinesV2ForTest is UsageLines as schema version 2 answered it,
// with the open lines' sums on the series rows: the invoices a ledger
// showed before migrating to version 3.
func UsageLinesV2ForTest(ctx context.Context, l *Ledger, tenant, period string) ([]UsageLine, error) {
	rows, err := l.db.QueryContext(ctx, l.d.rebind(`SELECT meter, currency, plugin_sha256, late, SUM(quantity), SUM(amount_micro) FROM (
			SELECT meter, currency, plugin_sha256, late, quantity, amount_micro FROM usage_lines WHERE tenant = ? AND period = ?
			UNION ALL
			SELECT meter, line_currency, line_plugin_sha256, line_late, line_quantity, line_amount_micro FROM series
			WHERE tenant = ? AND line_period = ?
		) lines
		GROUP BY meter, currency, plugin_sha256, late
		ORDER BY meter, late, currency, plugin_sha256`), tenant, period, tenant, period)
	return scanLines(rows, err)
}

// scanLines reads (meter, currency, plugin, late, quantity, amount) rows.
func scanLines(rows *sql.Rows, err error) ([]UsageLine, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ls []UsageLine
	for rows.Next() {
		var u UsageLine
		var late int
		if err := rows.Scan(&u.Meter, &u.Currency, &u.PluginSHA256, &late, &u.Quantity, &u.AmountMicro); err != nil {
			return nil, err
		}
		u.Late = late == 1
		ls = append(ls, u)
	}
	return ls, rows.Err()
}

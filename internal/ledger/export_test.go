package ledger

import "context"

// ExecForTest runs a raw statement, to prove the triggers refuse edits.
func ExecForTest(ctx context.Context, l *Ledger, stmt string) error {
	_, err := l.db.ExecContext(ctx, stmt)
	return err
}

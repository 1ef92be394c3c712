package ledger

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseAmount parses a decimal amount of a currency, such as "5", "5.25"
// or "0.000001", into micro-units, exactly (no floating point).
func ParseAmount(s string) (int64, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	bad := fmt.Errorf("amount %q is not a decimal such as 5 or 12.50 (at most 6 decimal places)", s)
	if whole == "" || strings.HasPrefix(whole, "-") || strings.HasPrefix(whole, "+") || len(frac) > 6 || (hasDot && frac == "") {
		return 0, bad
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > (1<<63-1)/1_000_000-1 {
		return 0, bad
	}
	var f int64
	if frac != "" {
		if strings.ContainsAny(frac, "+-") {
			return 0, bad
		}
		if f, err = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64); err != nil {
			return 0, bad
		}
	}
	return w*1_000_000 + f, nil
}

// FormatAmount renders micro-units as a decimal, such as "5.250000".
func FormatAmount(micro int64) string {
	sign := ""
	u := uint64(micro)
	if micro < 0 {
		sign, u = "-", uint64(-micro)
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/1_000_000, u%1_000_000)
}

package ledger_test

import (
	"fmt"
	"testing"

	"github.com/kmeter/kmeter/internal/ledger"
)

func TestParseAmount(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"5", 5_000_000, true},
		{"5.25", 5_250_000, true},
		{"0.000001", 1, true},
		{"12.500000", 12_500_000, true},
		{"0.0000001", 0, false},
		{"-5", 0, false},
		{"5.", 0, false},
		{".5", 0, false},
		{"1e3", 0, false},
		{"5.-1", 0, false},
		{"99999999999999", 0, false},
	}
	for _, tt := range tests {
		got, err := ledger.ParseAmount(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseAmount(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func ExampleFormatAmount() {
	fmt.Println(ledger.FormatAmount(5_250_000), ledger.FormatAmount(-1))
	// Output: 5.250000 -0.000001
}

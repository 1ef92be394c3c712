package billing

import (
	"strings"
	"testing"
	"time"
)

func TestWindowInterval(t *testing.T) {
	for _, tc := range []struct {
		name       string
		read, bill time.Duration
		want       time.Duration
		err        string
	}{
		{"default: every read", 5 * time.Second, 0, 5 * time.Second, ""},
		{"longer windows", 5 * time.Second, time.Minute, time.Minute, ""},
		{"equal", 5 * time.Second, 5 * time.Second, 5 * time.Second, ""},
		{"not a multiple of reads", 5 * time.Second, 7 * time.Second, 7 * time.Second, ""},
		{"shorter than reads", 5 * time.Second, time.Second, 0, "--bill-interval 1s is shorter than --interval 5s"},
		{"negative", 5 * time.Second, -time.Second, 0, "--bill-interval -1s must be positive"},
		{"bad read interval", 0, time.Minute, 0, "--interval 0s must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := WindowInterval(tc.read, tc.bill)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("WindowInterval(%v, %v) = %v, %v; want error %q", tc.read, tc.bill, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("WindowInterval(%v, %v) = %v, %v; want %v", tc.read, tc.bill, got, err, tc.want)
			}
		})
	}
}

package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerify checks Verify never panics and never accepts a log whose
// lines do not chain: every accepted log re-verifies line by line.
func FuzzVerify(f *testing.F) {
	path := filepath.Join(f.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		f.Fatal(err)
	}
	for _, ev := range []string{EventAccept, EventLoad} {
		if _, err := l.Append(context.Background(), Entry{Event: ev}); err != nil {
			f.Fatal(err)
		}
	}
	l.Close()
	seed, _ := os.ReadFile(path)
	f.Add(seed)
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		head, err := Verify(bytes.NewReader(b), "")
		if err != nil {
			return
		}
		if n := uint64(bytes.Count(b, []byte("\n"))); len(b) > 0 && b[len(b)-1] == '\n' && head.Seq != n {
			t.Fatalf("accepted %d lines but head seq is %d", n, head.Seq)
		}
	})
}

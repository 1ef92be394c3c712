package audit

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkLog_Append measures one durable append (flock, write, fsync)
// on the test's temporary directory.
func BenchmarkLog_Append(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	e := Entry{Event: EventLoad, Plugin: "pricing", SHA256: "0f028d075795b479af96a3055c1ecaec5c72323f5f77c142bcf82f07fc459f21"}
	for b.Loop() {
		if _, err := l.Append(context.Background(), e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify measures checking a 10,000-entry chain.
func BenchmarkVerify(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		if _, err := l.Append(context.Background(), Entry{Event: EventAccept}); err != nil {
			b.Fatal(err)
		}
	}
	l.Close()
	for b.Loop() {
		if _, err := VerifyFile(path, ""); err != nil {
			b.Fatal(err)
		}
	}
}

package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// writeLog appends n entries and returns the file's lines.
func writeLog(t *testing.T, n int) (string, [][]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < n; i++ {
		if _, err := l.Append(context.Background(), Entry{Event: EventLoad, Plugin: fmt.Sprintf("p%d", i), SHA256: fmt.Sprintf("%064x", i)}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	return path, lines[:len(lines)-1]
}

func join(lines [][]byte) []byte { return bytes.Join(lines, nil) }

func TestLog_Append_verify(t *testing.T) {
	path, lines := writeLog(t, 10)
	if len(lines) != 10 {
		t.Fatalf("%d lines, want 10", len(lines))
	}
	head, err := VerifyFile(path, "")
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != 10 {
		t.Fatalf("head seq = %d, want 10", head.Seq)
	}
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Head() != head {
		t.Fatalf("reopened head = %+v, want %+v", l.Head(), head)
	}
	e, err := l.Append(context.Background(), Entry{Event: EventSwap})
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 11 || e.Prev != head.Hash {
		t.Fatalf("entry after reopen = seq %d prev %s, want seq 11 prev %s", e.Seq, e.Prev, head.Hash)
	}
	if _, err := VerifyFile(path, head.Hash); err != nil {
		t.Fatalf("verify with an older anchor: %v", err)
	}
}

// TestVerify_tamper edits, deletes and reorders every line of a log in
// turn, and requires Verify to name the first line that no longer holds.
func TestVerify_tamper(t *testing.T) {
	const n = 6
	_, lines := writeLog(t, n)
	edit := func(line []byte) []byte {
		return bytes.Replace(bytes.Clone(line), []byte(`"plugin":"p`), []byte(`"plugin":"q`), 1)
	}
	type mutation struct {
		name     string
		log      [][]byte
		wantLine int
	}
	var tests []mutation
	for i := 0; i < n; i++ {
		edited := append([][]byte(nil), lines...)
		edited[i] = edit(lines[i])
		tests = append(tests, mutation{fmt.Sprintf("edit line %d", i+1), edited, i + 1})

		if i < n-1 { // deleting the last line is caught by the anchor only
			deleted := append(append([][]byte(nil), lines[:i]...), lines[i+1:]...)
			tests = append(tests, mutation{fmt.Sprintf("delete line %d", i+1), deleted, i + 1})

			swapped := append([][]byte(nil), lines...)
			swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
			tests = append(tests, mutation{fmt.Sprintf("swap lines %d and %d", i+1, i+2), swapped, i + 1})
		}
		rehashed := append([][]byte(nil), lines...)
		rehashed[i] = bytes.Replace(bytes.Clone(lines[i]), []byte(`"event":"load"`), []byte(`"event":"load" `), 1)
		tests = append(tests, mutation{fmt.Sprintf("reformat line %d", i+1), rehashed, i + 1})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(bytes.NewReader(join(tt.log)), "")
			var be *BrokenError
			if !errors.As(err, &be) || !errors.Is(err, ErrBroken) {
				t.Fatalf("Verify = %v, want a BrokenError", err)
			}
			if be.Line != tt.wantLine {
				t.Fatalf("broken at line %d (%s), want line %d", be.Line, be.Reason, tt.wantLine)
			}
		})
	}
}

func TestVerify_anchorCatchesTruncation(t *testing.T) {
	path, lines := writeLog(t, 5)
	head, err := VerifyFile(path, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Verify(bytes.NewReader(join(lines[:4])), head.Hash)
	var be *BrokenError
	if !errors.As(err, &be) || be.Line != 5 {
		t.Fatalf("truncated log with anchor: %v, want broken at line 5", err)
	}
	if _, err := Verify(bytes.NewReader(join(lines[:4])), ""); err != nil {
		t.Fatalf("without anchor a truncated chain is still a valid chain: %v", err)
	}
}

// TestLog_concurrent appends from many goroutines through two Log values
// on one file (as two processes would) and checks the chain is whole.
func TestLog_concurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		l := a
		if w%2 == 1 {
			l = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := l.Append(context.Background(), Entry{Event: EventAccept, Plugin: fmt.Sprintf("w%d-%d", w, i)}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	head, err := VerifyFile(path, "")
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != workers*each {
		t.Fatalf("head seq = %d, want %d", head.Seq, workers*each)
	}
}

func TestOpen_cutShortLastLine(t *testing.T) {
	path, lines := writeLog(t, 2)
	cut := join(lines)
	if err := os.WriteFile(path, cut[:len(cut)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil {
		t.Fatal("Open accepted a log whose last append was cut short")
	}
}

func TestLog_Close_idempotent(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Append(context.Background(), Entry{Event: EventLoad}); err == nil {
		t.Fatal("Append after Close succeeded")
	}
}

func TestLog_Append_fixedTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	at := time.Date(2026, 11, 25, 10, 0, 0, 123, time.FixedZone("X", 3600))
	e, err := l.Append(context.Background(), Entry{Event: EventRefuse, Reason: "module is not signed", Time: at})
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 1 || e.Prev != GenesisHash || !e.Time.Equal(at) || e.Time.Location() != time.UTC {
		t.Fatalf("entry = %+v", e)
	}
	if _, err := l.Append(context.Background(), Entry{}); err == nil {
		t.Fatal("Append without event succeeded")
	}
}

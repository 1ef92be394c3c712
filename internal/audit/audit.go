// Package audit keeps a tamper-evident, append-only record of what the
// agent decided about plugins: every load, refusal and swap.
//
// The log is a file of JSON lines. Each entry carries the hash of the
// entry before it (prev) and its own hash (the SHA-256 of its canonical
// JSON without the hash field), so editing, deleting or reordering any
// line breaks the chain at that line and [Verify] names it. Deleting lines
// from the end leaves a valid shorter chain; detect that by keeping the
// head hash elsewhere (monitoring, a ticket, the ledger) and passing it to
// [Verify] as the anchor.
package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Events the plugin subsystem records.
const (
	EventAccept = "accept" // the verifier accepted a module
	EventRefuse = "refuse" // the verifier refused a module; Reason says why
	EventLoad   = "load"   // the engine loaded a module
	EventSwap   = "swap"   // the engine replaced a running module; Replaces names the old one
	// EventReject: the engine refused a module the verifier had accepted
	// (ABI or import check, canary batch); Reason says why.
	EventReject = "reject"
)

// GenesisHash is the prev of the first entry.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// maxLine bounds one entry, so a corrupt file cannot make Verify or Open
// buffer without limit.
const maxLine = 1 << 20

// ErrBroken is matched (errors.Is) by every [BrokenError].
var ErrBroken = errors.New("audit chain broken")

// Entry is one audit record. Callers fill the descriptive fields; Append
// sets Seq, Time (when zero), Prev and Hash.
type Entry struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	Plugin string    `json:"plugin,omitempty"`
	SHA256 string    `json:"sha256,omitempty"`
	Signer string    `json:"signer,omitempty"`
	// Licensee is the licence holder named in the module, if any.
	Licensee string `json:"licensee,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// Replaces is the sha256 of the module a swap took out of service.
	Replaces string `json:"replaces,omitempty"`
	Prev     string `json:"prev"`
	Hash     string `json:"hash,omitempty"`
}

// computeHash is the SHA-256 (hex) of e's canonical JSON without Hash.
func (e Entry) computeHash() (string, error) {
	e.Hash = ""
	b, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// BrokenError names the first line where the chain does not hold.
type BrokenError struct {
	// Line is 1-based.
	Line   int
	Reason string
}

func (e *BrokenError) Error() string { return fmt.Sprintf("audit log line %d: %s", e.Line, e.Reason) }

// Is makes errors.Is(err, ErrBroken) true.
func (e *BrokenError) Is(target error) bool { return target == ErrBroken }

// Head is the last entry of a verified chain.
type Head struct {
	Seq  uint64
	Hash string
}

// Log appends entries to an audit file. It is safe for concurrent use by
// goroutines, and by several processes sharing the file (appends take an
// exclusive flock and re-read the head another process may have moved).
type Log struct {
	mu   sync.Mutex
	f    *os.File
	head Head
	size int64 // file size after our last read or write of the head
	now  func() time.Time
}

// Open opens (creating if needed, mode 0600) the audit log at path and
// reads its last entry to continue the chain. It does not verify the
// whole file; use [VerifyFile] for that.
func Open(path string) (*Log, error) {
	if path == "" {
		return nil, errors.New("open audit log: empty path; set the audit log file")
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// Make the new file's directory entry durable too.
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	l := &Log{f: f, now: time.Now}
	if err := l.lock(); err != nil {
		f.Close()
		return nil, err
	}
	err = l.refresh()
	l.unlock()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	return l, nil
}

// Close closes the file. It is idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("close audit log: %w", err)
	}
	return nil
}

// Head returns the last entry written or seen.
func (l *Log) Head() Head {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Append chains e after the current head, writes it as one line and
// fsyncs before returning the entry as written.
func (l *Log) Append(ctx context.Context, e Entry) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, fmt.Errorf("append audit entry: %w", err)
	}
	if e.Event == "" {
		return Entry{}, errors.New("append audit entry: event is empty")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return Entry{}, errors.New("append audit entry: log is closed")
	}
	if err := l.lock(); err != nil {
		return Entry{}, err
	}
	defer l.unlock()
	if err := l.refresh(); err != nil {
		return Entry{}, fmt.Errorf("append audit entry: %w", err)
	}
	e.Seq = l.head.Seq + 1
	e.Prev = l.head.Hash
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC().Round(0)
	h, err := e.computeHash()
	if err != nil {
		return Entry{}, fmt.Errorf("append audit entry: %w", err)
	}
	e.Hash = h
	line, err := json.Marshal(e)
	if err != nil {
		return Entry{}, fmt.Errorf("append audit entry: %w", err)
	}
	line = append(line, '\n')
	if _, err := l.f.Write(line); err != nil {
		return Entry{}, fmt.Errorf("append audit entry: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return Entry{}, fmt.Errorf("append audit entry: fsync: %w", err)
	}
	l.head = Head{Seq: e.Seq, Hash: e.Hash}
	l.size += int64(len(line))
	return e, nil
}

func (l *Log) lock() error {
	if err := unix.Flock(int(l.f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock audit log: %w", err)
	}
	return nil
}

func (l *Log) unlock() { _ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN) }

// refresh re-reads the head when the file changed size since we last
// looked (another process appended). Called with the flock held.
func (l *Log) refresh() error {
	st, err := l.f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == l.size && (size > 0 || l.head.Hash != "") {
		return nil
	}
	if size == 0 {
		l.head, l.size = Head{Hash: GenesisHash}, 0
		return nil
	}
	last, err := lastLine(l.f, size)
	if err != nil {
		return err
	}
	e, err := parseLine(last)
	if err != nil {
		return fmt.Errorf("last entry: %w (run `kmeter audit verify`)", err)
	}
	l.head, l.size = Head{Seq: e.Seq, Hash: e.Hash}, size
	return nil
}

// lastLine returns the final newline-terminated line of f.
func lastLine(f *os.File, size int64) ([]byte, error) {
	var buf []byte
	const chunk = 4096
	end := size
	for {
		start := max(end-chunk, 0)
		b := make([]byte, end-start)
		if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		buf = append(b, buf...)
		if len(buf) == 0 || buf[len(buf)-1] != '\n' {
			return nil, errors.New("the file does not end with a newline: the last append was cut short")
		}
		if i := bytes.LastIndexByte(buf[:len(buf)-1], '\n'); i >= 0 {
			return buf[i+1 : len(buf)-1], nil
		}
		if start == 0 {
			return buf[:len(buf)-1], nil
		}
		if len(buf) > maxLine {
			return nil, fmt.Errorf("last line longer than %d bytes", maxLine)
		}
		end = start
	}
}

// parseLine decodes one line and checks that it is the canonical encoding
// of an entry whose hash matches its content.
func parseLine(line []byte) (Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var e Entry
	if err := dec.Decode(&e); err != nil {
		return Entry{}, fmt.Errorf("not an audit entry: %v", err)
	}
	want, err := e.computeHash()
	if err != nil {
		return Entry{}, err
	}
	if e.Hash != want {
		return Entry{}, fmt.Errorf("hash %q does not match the entry's content (sha256 %s): the line was edited", e.Hash, want)
	}
	canon, err := json.Marshal(e)
	if err != nil {
		return Entry{}, err
	}
	if !bytes.Equal(canon, line) {
		return Entry{}, errors.New("the line is not in canonical form: it was edited")
	}
	return e, nil
}

// Verify reads a whole log and checks every link: each line parses, its
// hash matches its content, its prev is the previous line's hash and
// sequence numbers count up from 1. anchor, when not empty, is a head hash
// recorded earlier; an error is returned unless some entry has that hash,
// which catches lines deleted from the end. An empty log is valid.
func Verify(r io.Reader, anchor string) (Head, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), maxLine)
	head := Head{Hash: GenesisHash}
	anchored := anchor == ""
	n := 0
	for sc.Scan() {
		n++
		e, err := parseLine(sc.Bytes())
		if err != nil {
			return head, &BrokenError{Line: n, Reason: err.Error()}
		}
		if e.Prev != head.Hash {
			return head, &BrokenError{Line: n, Reason: fmt.Sprintf("prev %s does not match the hash of the entry before (%s): an entry was deleted, inserted or moved", short(e.Prev), short(head.Hash))}
		}
		if e.Seq != head.Seq+1 {
			return head, &BrokenError{Line: n, Reason: fmt.Sprintf("seq %d follows seq %d", e.Seq, head.Seq)}
		}
		head = Head{Seq: e.Seq, Hash: e.Hash}
		if e.Hash == anchor {
			anchored = true
		}
	}
	if err := sc.Err(); err != nil {
		return head, &BrokenError{Line: n + 1, Reason: err.Error()}
	}
	if !anchored {
		return head, &BrokenError{Line: n + 1, Reason: fmt.Sprintf("no entry has the anchor hash %s: entries were deleted from the end or the log was rewritten", short(anchor))}
	}
	return head, nil
}

// VerifyFile runs [Verify] on the file at path.
func VerifyFile(path, anchor string) (Head, error) {
	f, err := os.Open(path)
	if err != nil {
		return Head{}, fmt.Errorf("verify audit log: %w", err)
	}
	defer f.Close()
	return Verify(f, anchor)
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

// DefaultPath is where the agent keeps its audit log unless configured.
const DefaultPath = "/var/lib/kmeter/audit.log"

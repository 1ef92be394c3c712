package ledger

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

// commitCases are commits whose windows share everything a commit
// usually shares, some of it, or nothing.
// ents are usage entries with the given ids, of two tenants and line keys.
func ents(ids ...int64) []commitEntry {
	es := make([]commitEntry, len(ids))
	for i, id := range ids {
		es[i] = commitEntry{id: id, tenant: fmt.Sprintf("tenant-%d", i%2), key: lineKey{"2026-11", "USD", strings.Repeat("ab", 32), i%3 == 2}}
	}
	return es
}

func commitCases() []struct {
	name    string
	ws      []packedWindow
	entries []commitEntry
} {
	usual := func(sid, entry int64) packedWindow {
		return packedWindow{sid: sid, seq: 9, prev: 8, from: 1000, to: 1010, qty: 10, startUS: 5_000_000, endUS: 10_000_000,
			amount: 70, vendor: 49, entry: entry}
	}
	rebased := usual(4, 12)
	rebased.rebased, rebased.to, rebased.qty, rebased.amount, rebased.vendor = true, 3, 0, 0, 0
	other := usual(7, 12)
	other.seq, other.prev, other.startUS, other.endUS = 11, 2, -1, math.MaxInt64
	big := usual(math.MaxInt64, 1<<40)
	big.from, big.to, big.qty, big.amount, big.vendor = math.MaxInt64-5, math.MaxInt64, 5, math.MaxInt64, math.MaxInt64
	return []struct {
		name    string
		ws      []packedWindow
		entries []commitEntry
	}{
		{"one window", []packedWindow{usual(1, 1)}, ents(1)},
		{"usual commit", []packedWindow{usual(1, 10), usual(2, 10), usual(3, 11), usual(9, 12)}, ents(10, 11, 12)},
		{"all rebased", []packedWindow{rebased}, ents(12)},
		{"mixed seq, span and rebase", []packedWindow{usual(1, 10), rebased, other}, ents(10, 12)},
		{"entry ids with gaps (PostgreSQL's sequence)", []packedWindow{usual(1, 10), usual(2, 30), usual(3, 10)}, ents(10, 30)},
		{"largest values", []packedWindow{usual(1, 1), big}, ents(1, 1<<40)},
	}
}

func TestPack_commitRoundTrip(t *testing.T) {
	for _, tt := range commitCases() {
		t.Run(tt.name, func(t *testing.T) {
			blob, err := encodeCommit(nil, tt.ws, tt.entries)
			if err != nil {
				t.Fatal(err)
			}
			if blob[0] != commitFormat1 {
				t.Fatalf("first byte %d, want format version %d", blob[0], commitFormat1)
			}
			got, gotEntries, err := decodeCommit("n1", 3, blob)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.ws) {
				t.Fatalf("decoded %+v\nwant    %+v", got, tt.ws)
			}
			if !reflect.DeepEqual(gotEntries, tt.entries) {
				t.Fatalf("decoded entries %+v\nwant            %+v", gotEntries, tt.entries)
			}
		})
	}
}

// The usual commit stores what its windows share once: a window costs a
// few bytes, not the ~60 of a usage row.
func TestPack_commitSize(t *testing.T) {
	ws := make([]packedWindow, 60_000)
	entries := make([]commitEntry, 10_000)
	for i := range entries {
		entries[i] = commitEntry{id: int64(500_000 + i), tenant: fmt.Sprintf("tenant-%05d", i), key: lineKey{"2026-11", "USD", strings.Repeat("ab", 32), false}}
	}
	for i := range ws {
		ws[i] = packedWindow{sid: int64(i + 1), seq: 1000, prev: 999, from: 123_456_789, to: 123_457_789, qty: 1000,
			startUS: 1_700_000_000_000_000, endUS: 1_700_000_005_000_000, amount: 10, vendor: 7, entry: entries[i/6].id}
	}
	blob, err := encodeCommit(nil, ws, entries)
	if err != nil {
		t.Fatal(err)
	}
	// sid 1 + from 4 + change 2 + quantity 2 + amount 1 + vendor 1 + entry
	// 1, and per entry (one per 6 windows) its id, tenant and line key.
	if per := float64(len(blob)) / float64(len(ws)); per > 16 {
		t.Errorf("%.1f bytes per window, want at most 16", per)
	}
}

func TestPack_encodeRefuses(t *testing.T) {
	w := packedWindow{sid: 2, seq: 2, prev: 1, entry: 5}
	tests := []struct {
		name    string
		ws      []packedWindow
		entries []commitEntry
		want    string
	}{
		{"no windows", nil, ents(5), "no windows"},
		{"series twice", []packedWindow{w, w}, ents(5), "series ids not ascending"},
		{"foreign entry", []packedWindow{w}, ents(4), "entry 5 is not one of the commit's"},
		{"entries unsorted", []packedWindow{w}, ents(5, 4), "entry ids not ascending"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := encodeCommit(nil, tt.ws, tt.entries); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// Every truncation, a bad version and trailing bytes are errors that
// name the node and commit, never a panic or a silently short commit.
func TestPack_commitCorrupt(t *testing.T) {
	for _, tt := range commitCases() {
		blob, err := encodeCommit(nil, tt.ws, tt.entries)
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(blob) {
			if _, _, err := decodeCommit("n7", 42, blob[:n]); err == nil || !strings.Contains(err.Error(), "window commit 42 of node n7") {
				t.Fatalf("%s: truncated to %d of %d bytes: err = %v", tt.name, n, len(blob), err)
			}
		}
		if _, _, err := decodeCommit("n7", 42, append(blob, 0)); err == nil || !strings.Contains(err.Error(), "after the last window") {
			t.Fatalf("%s: trailing byte: err = %v", tt.name, err)
		}
	}
	bad := []byte{9, 0}
	if _, _, err := decodeCommit("n7", 42, bad); err == nil || !strings.Contains(err.Error(), "window commit 42 of node n7: unknown format version 9") {
		t.Fatalf("bad version: err = %v", err)
	}
}

func stateCase() ([]seriesState, []charge, []lineKey) {
	keys := []lineKey{
		{"2026-11", "USD", strings.Repeat("ab", 32), false},
		{"2026-12", "EUR", "", true},
		{"2027-01", "USD", "x", false}, // not used by any series
	}
	return []seriesState{
			{sid: 3, seq: 7, counter: 100, endUS: 5_000_000, line: 0, qty: 10, amountSum: 70},
			{sid: 4, seq: 7, counter: 0, endUS: 5_000_000, line: noLine},
			{sid: 90, seq: 2, counter: math.MaxUint64, endUS: -7, line: 1, qty: -3, amountSum: math.MinInt64},
			{sid: 91, seq: 0, line: 0},
		}, []charge{
			{"cafe", "EUR", -5}, {"cafe", "USD", math.MaxInt64}, {"shop", "USD", 70},
		}, keys
}

func TestPack_stateRoundTrip(t *testing.T) {
	ss, cs, keys := stateCase()
	blob, err := encodeState(nil, ss, cs, keys)
	if err != nil {
		t.Fatal(err)
	}
	// Decoding interns keys into another table: ids are the reader's.
	var table []lineKey
	intern := func(k lineKey) uint32 {
		table = append(table, k)
		return uint32(len(table) - 1)
	}
	got, gotCharges, err := decodeState("n1", blob, intern)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotCharges, cs) {
		t.Errorf("charges %+v, want %+v", gotCharges, cs)
	}
	if len(got) != len(ss) {
		t.Fatalf("decoded %d series, want %d", len(got), len(ss))
	}
	for i := range ss {
		g, w := got[i], ss[i]
		if (g.line == noLine) != (w.line == noLine) || g.line != noLine && table[g.line] != keys[w.line] {
			t.Errorf("series %d: line %v, want %v", w.sid, g.line, w.line)
		}
		g.line, w.line = 0, 0
		if g != w {
			t.Errorf("series %d: decoded %+v, want %+v", w.sid, g, w)
		}
	}
	if len(table) != 2 {
		t.Errorf("the blob holds %d line keys, want the 2 in use", len(table))
	}
}

func TestPack_stateCorrupt(t *testing.T) {
	ss, cs, keys := stateCase()
	blob, err := encodeState(nil, ss, cs, keys)
	if err != nil {
		t.Fatal(err)
	}
	intern := func(lineKey) uint32 { return 0 }
	for n := range len(blob) {
		if _, _, err := decodeState("n7", blob[:n], intern); err == nil || !strings.Contains(err.Error(), "state of node n7") {
			t.Fatalf("truncated to %d of %d bytes: err = %v", n, len(blob), err)
		}
	}
	if _, _, err := decodeState("n7", []byte{2}, intern); err == nil || !strings.Contains(err.Error(), "unknown format version 2") {
		t.Fatalf("bad version: err = %v", err)
	}
}

// FuzzDecodeCommit: any bytes decode to an error or to windows that
// encode back to a blob decoding to the same windows.
func FuzzDecodeCommit(f *testing.F) {
	for _, tt := range commitCases() {
		blob, err := encodeCommit(nil, tt.ws, tt.entries)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(blob)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ws, entries, err := decodeCommit("n", 1, data)
		if err != nil {
			return
		}
		if len(ws) == 0 {
			return // a valid blob with no windows; encodeCommit refuses those
		}
		blob, err := encodeCommit(nil, ws, entries)
		if err != nil {
			return // e.g. an entry no window names, which the encoder allows but a vendor check refuses
		}
		again, againEntries, err := decodeCommit("n", 1, blob)
		if err != nil || !reflect.DeepEqual(again, ws) || !reflect.DeepEqual(againEntries, entries) {
			t.Fatalf("re-encoded %+v %+v decodes to %+v %+v, %v", ws, entries, again, againEntries, err)
		}
	})
}

// FuzzDecodeState: any bytes decode to an error or to a state, never a
// panic.
func FuzzDecodeState(f *testing.F) {
	ss, cs, keys := stateCase()
	blob, err := encodeState(nil, ss, cs, keys)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob)
	f.Fuzz(func(t *testing.T, data []byte) {
		var n uint32
		_, _, _ = decodeState("n", data, func(lineKey) uint32 { n++; return n - 1 })
	})
}

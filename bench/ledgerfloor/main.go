// Command ledgerfloor measures what SQLite needs, with the ledger's
// durability settings (WAL, synchronous=FULL, 16 KiB pages), to store one
// usage window of many series when the window is ONE packed row instead of
// a row per series. It sizes a ledger layout kmeter does not have yet: the
// per-series layout (internal/ledger, schema 3) writes about 190,000 rows
// per window at 10,000 tenants x 7 meters, and SQLite's engine alone then
// needs several times the agent's CPU budget (2% of one core at 5 s
// windows is 100 ms per window). Run it next to the ledger's own
// benchmark to compare:
//
//	go run ./bench/ledgerfloor
//	go test -run '^$' -bench 'CommitWindows$/sqlite' -benchtime 5x ./internal/ledger/
//
// Each layout commits -windows windows, each in one transaction:
//
//   - packed: one immutable row per (node, window) holding every series'
//     id, quantity, amount and vendor share as varints, plus the node's
//     state row (every series' checkpoint counter and open invoice line),
//     replaced in the same transaction: the compare-and-swap is on that
//     one row's window number;
//   - packed+balances: the same plus one balance upsert per tenant, so
//     that balances stay readable with one SQL lookup.
//
// It reports the process's CPU time (user+system, from getrusage) and wall
// time per window, and the bytes each window adds to the database file.
package main

import (
	"database/sql"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"syscall"
	"time"

	_ "modernc.org/sqlite"
)

func main() {
	tenants := flag.Int("tenants", 10_000, "tenants")
	meters := flag.Int("meters", 7, "meters per tenant")
	windows := flag.Int("windows", 20, "windows committed per layout")
	flag.Parse()
	dir, err := os.MkdirTemp("", "ledgerfloor-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	fmt.Printf("ledgerfloor: %d tenants x %d meters = %d series per window, %d windows per layout\n",
		*tenants, *meters, *tenants**meters, *windows)
	fmt.Printf("%-16s %14s %14s %16s\n", "layout", "CPU ms/window", "wall ms/window", "file B/window")
	for _, balances := range []bool{false, true} {
		name := "packed"
		if balances {
			name += "+balances"
		}
		r, err := run(filepath.Join(dir, name+".db"), *tenants, *meters, *windows, balances)
		if err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		fmt.Printf("%-16s %14.1f %14.1f %16.0f\n", name, r.cpu, r.wall, r.bytes)
	}
}

type result struct{ cpu, wall, bytes float64 }

func run(path string, tenants, meters, windows int, balances bool) (result, error) {
	// Page size first: once WAL is on, the first page is written and the
	// size is fixed (the ledger creates its files the same way).
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=page_size(16384)")
	if err != nil {
		return result{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, s := range []string{
		`PRAGMA journal_mode = WAL`,
		`PRAGMA synchronous = FULL`,
		`PRAGMA cache_size = -16000`,
		`CREATE TABLE windows (node TEXT NOT NULL, seq INTEGER NOT NULL, prev_seq INTEGER NOT NULL, data BLOB NOT NULL,
			PRIMARY KEY (node, seq)) WITHOUT ROWID`,
		`CREATE TABLE state (node TEXT PRIMARY KEY, seq INTEGER NOT NULL, data BLOB NOT NULL)`,
		`INSERT INTO state VALUES ('n', 0, x'')`,
		`CREATE TABLE balances (account TEXT PRIMARY KEY, balance INTEGER NOT NULL) WITHOUT ROWID`,
	} {
		if _, err := db.Exec(s); err != nil {
			return result{}, fmt.Errorf("%s: %w", s, err)
		}
	}
	accounts := make([]string, tenants)
	for t := range accounts {
		accounts[t] = fmt.Sprintf("tenant:/kmeter/t%05d", t)
	}
	series := tenants * meters
	var win, state []byte
	cpu0, wall0 := cpuTime(), time.Now()
	size0, err := fileSize(path)
	if err != nil {
		return result{}, err
	}
	for seq := 1; seq <= windows; seq++ {
		win, state = win[:0], state[:0]
		for s := range series {
			q := uint64(500 + s%13)
			win = binary.AppendUvarint(win, 1) // series id, delta-coded
			win = binary.AppendUvarint(win, q)
			win = binary.AppendUvarint(win, 2*q) // amount
			win = binary.AppendUvarint(win, 0)   // vendor share
			state = binary.AppendUvarint(state, uint64(seq)*q)
			state = binary.AppendUvarint(state, uint64(seq)*q)
			state = binary.AppendUvarint(state, uint64(seq)*2*q)
		}
		tx, err := db.Begin()
		if err != nil {
			return result{}, err
		}
		res, err := tx.Exec(`UPDATE state SET seq = ?, data = ? WHERE node = 'n' AND seq = ?`, seq, state, seq-1)
		if err != nil {
			return result{}, err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return result{}, fmt.Errorf("window %d: the state row moved", seq)
		}
		if _, err := tx.Exec(`INSERT INTO windows VALUES ('n', ?, ?, ?)`, seq, seq-1, win); err != nil {
			return result{}, err
		}
		if balances {
			st, err := tx.Prepare(`INSERT INTO balances VALUES (?, ?)
				ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance`)
			if err != nil {
				return result{}, err
			}
			for _, a := range accounts {
				if _, err := st.Exec(a, -7000); err != nil {
					return result{}, err
				}
			}
			st.Close()
		}
		if err := tx.Commit(); err != nil {
			return result{}, err
		}
	}
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	size, err := fileSize(path)
	if err != nil {
		return result{}, err
	}
	n := float64(windows)
	return result{cpu: cpu.Seconds() * 1000 / n, wall: float64(wall.Milliseconds()) / n, bytes: float64(size-size0) / n}, nil
}

// fileSize is the database file plus its WAL.
func fileSize(path string) (int64, error) {
	var total int64
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return 0, err
		}
		total += fi.Size()
	}
	return total, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

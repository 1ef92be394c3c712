package licence

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/plugin/sign"
)

// pluginWasm is a small valid plugin module. Built with:
//
//	wat2wasm testdata/plugin.wat -o testdata/plugin.wasm   (wabt 1.0.32)
//
//go:embed testdata/plugin.wasm
var pluginWasm []byte

func TestReadFile(t *testing.T) {
	l, err := ReadFile("testdata/licence.json")
	if err != nil {
		t.Fatal(err)
	}
	want := Licence{Publisher: "Acme Pricing", Licensee: "Tenant Bank", NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		Hosts: []string{"3d1219c7c4c5404aaa1f6d2a48adfda4"}, MaxCalls: 1000000}
	if l.Publisher != want.Publisher || l.Licensee != want.Licensee || !l.NotAfter.Equal(want.NotAfter) ||
		len(l.Hosts) != 1 || l.Hosts[0] != want.Hosts[0] || l.MaxCalls != want.MaxCalls {
		t.Fatalf("licence = %+v, want %+v", l, want)
	}
}

func TestParse_errors(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"empty object", `{}`, []string{"publisher is empty", "licensee is empty", "not_after is missing"}},
		{"unknown field", `{"publisher":"a","licensee":"b","not_after":"2027-01-01T00:00:00Z","host":["x"]}`, []string{`unknown field "host"`}},
		{"bad time", `{"publisher":"a","licensee":"b","not_after":"tomorrow"}`, []string{"tomorrow"}},
		{"empty host", `{"publisher":"a","licensee":"b","not_after":"2027-01-01T00:00:00Z","hosts":[""]}`, []string{"hosts[0] is empty"}},
		{"trailing", `{"publisher":"a","licensee":"b","not_after":"2027-01-01T00:00:00Z"} {}`, []string{"trailing data"}},
		{"not json", `publisher: a`, []string{"invalid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse = %v, want ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLicence_Check(t *testing.T) {
	end := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	l := Licence{Publisher: "p", Licensee: "l", NotAfter: end, Hosts: []string{"h1", "h2"}}
	anyHost := Licence{Publisher: "p", Licensee: "l", NotAfter: end}
	tests := []struct {
		name string
		l    Licence
		host string
		now  time.Time
		want error
	}{
		{"valid", l, "h2", end.Add(-time.Hour), nil},
		{"at not-after", l, "h1", end, nil},
		{"expired", l, "h1", end.Add(time.Nanosecond), ErrExpired},
		{"wrong host", l, "h3", end.Add(-time.Hour), ErrWrongHost},
		{"no host list allows any host", anyHost, "h3", end.Add(-time.Hour), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.l.Check(tt.host, tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEmbed_Extract(t *testing.T) {
	if _, ok, err := Extract(pluginWasm); ok || err != nil {
		t.Fatalf("Extract on a module without licence = %v, %v", ok, err)
	}
	l, err := ReadFile("testdata/licence.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := Embed(pluginWasm, l)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := sign.NewKeyPairFromSeed(make([]byte, 32))
	signed, err := sign.Sign(m, k)
	if err != nil {
		t.Fatal(err)
	}
	secs, _ := sign.Sections(signed)
	if secs[0].Name != sign.SignatureSectionName || secs[1].Name != SectionName {
		t.Fatalf("sections start %q, %q; want the licence right after the signature", secs[0].Name, secs[1].Name)
	}
	got, ok, err := Extract(signed)
	if err != nil || !ok || got.Licensee != l.Licensee || got.MaxCalls != l.MaxCalls {
		t.Fatalf("Extract = %+v, %v, %v", got, ok, err)
	}
	// Embedding again replaces the licence instead of adding a second one.
	l.Licensee = "Other"
	m2, err := Embed(signed, l)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := Extract(m2); got.Licensee != "Other" {
		t.Fatalf("re-embedded licensee = %q", got.Licensee)
	}
	if _, err := Embed(pluginWasm, Licence{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Embed of an empty licence = %v, want ErrInvalid", err)
	}
	bad, _ := sign.SetCustomSection(pluginWasm, SectionName, []byte("{"))
	if _, ok, err := Extract(bad); !ok || !errors.Is(err, ErrInvalid) {
		t.Fatalf("Extract of a malformed licence = %v, %v", ok, err)
	}
}

func TestReadHostID(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "machine-id")
	os.WriteFile(p, []byte("  abc123\n"), 0o644)
	if id, err := ReadHostID(p); err != nil || id != "abc123" {
		t.Fatalf("ReadHostID = %q, %v", id, err)
	}
	os.WriteFile(p, []byte("\n"), 0o644)
	if _, err := ReadHostID(p); err == nil {
		t.Fatal("empty host id accepted")
	}
	if _, err := ReadHostID(filepath.Join(dir, "none")); err == nil {
		t.Fatal("missing host id file accepted")
	}
}

// TestCounter_concurrent takes from many goroutines and checks exactly
// max calls succeed.
func TestCounter_concurrent(t *testing.T) {
	const max, workers, each = 1000, 8, 200
	c := NewCounter(max)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				err := c.Take()
				mu.Lock()
				if err == nil {
					ok++
				} else if errors.Is(err, ErrCallsExhausted) {
					refused++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != max || refused != workers*each-max || c.Used() != max {
		t.Fatalf("ok=%d refused=%d used=%d, want %d, %d, %d", ok, refused, c.Used(), max, workers*each-max, max)
	}
	unlimited := NewCounter(0)
	for i := 0; i < 5; i++ {
		if err := unlimited.Take(); err != nil {
			t.Fatal(err)
		}
	}
	if unlimited.Used() != 5 {
		t.Fatalf("unlimited used = %d", unlimited.Used())
	}
}

func ExampleCounter() {
	c := NewCounter(2) // plugin.Identity.MaxCalls of the loaded module
	for call := 1; call <= 3; call++ {
		if err := c.Take(); err != nil {
			fmt.Println("call", call, "refused:", errors.Is(err, ErrCallsExhausted))
			continue
		}
		fmt.Println("call", call, "allowed")
	}
	// Output:
	// call 1 allowed
	// call 2 allowed
	// call 3 refused: true
}

package exposition

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// family is one metric family, written through a Writer and, for
// comparison, encoded by expfmt from the equivalent dto.MetricFamily.
type family struct {
	name, help string
	typ        prometheus.ValueType
	labels     []string
	samples    []sample
}

type sample struct {
	value  float64
	labels []string
}

func (f family) dto() *dto.MetricFamily {
	t := map[prometheus.ValueType]dto.MetricType{prometheus.CounterValue: dto.MetricType_COUNTER, prometheus.GaugeValue: dto.MetricType_GAUGE, prometheus.UntypedValue: dto.MetricType_UNTYPED}[f.typ]
	mf := &dto.MetricFamily{Name: ptr(f.name), Help: ptr(f.help), Type: t.Enum()}
	for _, s := range f.samples {
		m := &dto.Metric{}
		for i, v := range s.labels {
			m.Label = append(m.Label, &dto.LabelPair{Name: ptr(f.labels[i]), Value: ptr(v)})
		}
		switch f.typ {
		case prometheus.CounterValue:
			m.Counter = &dto.Counter{Value: ptr(s.value)}
		case prometheus.GaugeValue:
			m.Gauge = &dto.Gauge{Value: ptr(s.value)}
		default:
			m.Untyped = &dto.Untyped{Value: ptr(s.value)}
		}
		mf.Metric = append(mf.Metric, m)
	}
	return mf
}

func ptr[T any](v T) *T { return &v }

// write writes families through a Writer that allows them all.
func write(fs ...family) (string, error) {
	var b bytes.Buffer
	w := newWriter(64) // small, so that lines cross buffer flushes
	w.reset(&b, nil)
	w.allowed = map[string]bool{}
	for _, f := range fs {
		w.allowed[f.name] = true
	}
	for _, f := range fs {
		w.Family(f.name, f.help, f.typ, f.labels...)
		for _, s := range f.samples {
			w.Sample(s.value, s.labels...)
		}
	}
	if err := w.bw.Flush(); err != nil {
		return "", err
	}
	return b.String(), w.Err()
}

// TestWriter_matchesExpfmt writes families and checks the text is byte
// for byte what prometheus/common's encoder writes for them, and that the
// parser reads back every label value and value exactly.
func TestWriter_matchesExpfmt(t *testing.T) {
	nasty := []string{`quote"d`, `back\slash`, "new\nline", `trailing\`, `\"`, `\n`, `{a="b"},c=d`, "tab\tcr\r", "ünïcödé ☃ 日本", "# HELP x y", "", " "}
	var nastySamples []sample
	for i, v := range nasty {
		nastySamples = append(nastySamples, sample{float64(i), []string{"x", v}})
	}
	tests := []struct {
		name string
		f    family
	}{
		{"no labels", family{"up_things", "Things that are up.", prometheus.GaugeValue, nil, []sample{{1, nil}}}},
		{"escaped label values", family{"kmeter_usage_total", "Usage.", prometheus.CounterValue, []string{"meter", "tenant"}, nastySamples}},
		{"escaped help", family{"odd_help", "a \\ backslash, a \"quote\" and a\nnewline", prometheus.UntypedValue, []string{"l"}, []sample{{2, []string{"v"}}}}},
		{"values", family{"values", "Values.", prometheus.GaugeValue, []string{"v"}, []sample{
			{0, []string{"zero"}}, {math.Copysign(0, -1), []string{"negative zero"}}, {1, []string{"one"}}, {-1, []string{"minus one"}},
			{7, []string{"small"}}, {123456, []string{"below 1e6"}}, {1234567, []string{"above 1e6"}}, {1 << 40, []string{"2^40"}},
			{1<<53 + 2, []string{"past 2^53"}}, {math.MaxUint64, []string{"max uint64"}}, {0.1, []string{"fraction"}},
			{1e-7, []string{"tiny"}}, {-2.5, []string{"negative"}}, {math.MaxFloat64, []string{"max"}},
			{math.Inf(1), []string{"+inf"}}, {math.Inf(-1), []string{"-inf"}},
		}}},
		{"colon in the name", family{"job:rate:sum", "Recorded.", prometheus.GaugeValue, []string{"a_b", "c"}, []sample{{3, []string{"1", "2"}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := write(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var want strings.Builder
			if _, err := expfmt.MetricFamilyToText(&want, tt.f.dto()); err != nil {
				t.Fatal(err)
			}
			if got != want.String() {
				t.Fatalf("Writer wrote:\n%s\nexpfmt writes:\n%s", got, want.String())
			}
			p := expfmt.NewTextParser(model.LegacyValidation)
			mfs, err := p.TextToMetricFamilies(strings.NewReader(got))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			var back strings.Builder
			if _, err := expfmt.MetricFamilyToText(&back, mfs[tt.f.name]); err != nil {
				t.Fatal(err)
			}
			if back.String() != want.String() {
				t.Errorf("parsed back as:\n%s\nwritten:\n%s", back.String(), want.String())
			}
		})
	}
}

func TestWriter_NaN(t *testing.T) {
	got, err := write(family{"n", "N.", prometheus.GaugeValue, nil, []sample{{math.NaN(), nil}}})
	if err != nil || !strings.HasSuffix(got, "\nn NaN\n") {
		t.Fatalf("write NaN: %q, %v", got, err)
	}
}

// A family without samples is left out, as a registry leaves it out.
func TestWriter_emptyFamilyLeftOut(t *testing.T) {
	got, err := write(
		family{"empty", "Nothing.", prometheus.CounterValue, []string{"a"}, nil},
		family{"full", "Something.", prometheus.GaugeValue, nil, []sample{{2, nil}}},
	)
	if want := "# HELP full Something.\n# TYPE full gauge\nfull 2\n"; err != nil || got != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
}

// Misuse of a Writer is an error, and nothing is written after it: a
// scrape must not show a family twice or a half-written line.
func TestWriter_errors(t *testing.T) {
	ok := family{"ok", "Fine.", prometheus.GaugeValue, []string{"a"}, []sample{{1, []string{"x"}}}}
	tests := []struct {
		name    string
		fs      []family
		wantErr string
	}{
		{"family twice", []family{ok, ok}, "ok written twice"},
		{"invalid name", []family{{"bad-name", "", prometheus.GaugeValue, nil, []sample{{1, nil}}}}, `"bad-name" is not a valid`},
		{"invalid label name", []family{{"m", "", prometheus.GaugeValue, []string{"1a"}, []sample{{1, []string{"v"}}}}}, `label name "1a" is not valid`},
		{"reserved label name", []family{{"m", "", prometheus.GaugeValue, []string{"__name__"}, []sample{{1, []string{"v"}}}}}, `label name "__name__" is not valid`},
		{"labels unsorted", []family{{"m", "", prometheus.GaugeValue, []string{"tenant", "meter"}, []sample{{1, []string{"a", "b"}}}}}, "must be sorted"},
		{"labels repeated", []family{{"m", "", prometheus.GaugeValue, []string{"a", "a"}, []sample{{1, []string{"a", "b"}}}}}, "must be sorted and distinct"},
		{"histogram", []family{{"m", "", prometheus.ValueType(99), nil, []sample{{1, nil}}}}, "cannot be written"},
		{"too few label values", []family{{"m", "", prometheus.GaugeValue, []string{"a", "b"}, []sample{{1, []string{"x"}}}}}, "1 label values for 2 label names"},
		{"invalid UTF-8", []family{{"m", "", prometheus.GaugeValue, []string{"a"}, []sample{{1, []string{"ok"}}, {1, []string{"\xff"}}}}}, "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := write(append(tt.fs, family{"after", "", prometheus.GaugeValue, nil, []sample{{1, nil}}})...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
			if strings.Contains(got, "after") {
				t.Errorf("written after the error: %q", got)
			}
			if got != "" && !strings.HasSuffix(got, "\n") {
				t.Errorf("a line was cut: %q", got)
			}
		})
	}
}

func TestWriter_undeclaredFamily(t *testing.T) {
	var b bytes.Buffer
	w := newWriter(bufSize)
	w.reset(&b, nil)
	w.allowed = map[string]bool{"declared": true}
	w.Family("other", "", prometheus.GaugeValue)
	w.Sample(1)
	if err := w.Err(); err == nil || !strings.Contains(err.Error(), "not among the names its source declared") {
		t.Fatalf("error %v", err)
	}
	w.Family("declared", "", prometheus.GaugeValue)
	w.Sample(1)
	w.bw.Flush()
	if b.Len() != 0 {
		t.Errorf("written after the error: %q", b.String())
	}
}

func TestWriter_sampleBeforeFamily(t *testing.T) {
	w := newWriter(bufSize)
	w.reset(&bytes.Buffer{}, nil)
	w.Sample(1)
	if err := w.Err(); err == nil || !strings.Contains(err.Error(), "before any metric family") {
		t.Fatalf("error %v", err)
	}
}

func BenchmarkWriter_Sample(b *testing.B) {
	w := newWriter(bufSize)
	var n discard
	w.reset(&n, nil)
	w.allowed = map[string]bool{"kmeter_usage_total": true}
	w.Family("kmeter_usage_total", "Usage.", prometheus.CounterValue, "meter", "tenant")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w.Sample(float64(i)*1e3, "net_tx_bytes", "/sys/fs/cgroup/kmeter-agent10k/t01234")
	}
	if w.Err() != nil {
		b.Fatal(w.Err())
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestAppendValue_matchesAppendFloat checks the integer fast path writes
// what expfmt's strconv.AppendFloat 'g' writes: around the switch to
// exponent form at 1e6, around 2^53 where it stops, for negative values,
// powers of ten and a spread of counters of every magnitude.
func TestAppendValue_matchesAppendFloat(t *testing.T) {
	values := []float64{1, -1, 9, 10, 99999, 100000, 999999, -999999, 1e6, -1e6, 1e6 + 1, 1234567, 1.5e6, 10e6,
		123456789, 1e15, 1e15 + 1, 1 << 52, 1<<53 - 1, 1 << 53, -(1 << 53), 1<<53 + 2, -(1<<53 + 2), 1e16, 9.007199254740993e15,
		0.5, -0.5, 1e6 + 0.5, 2.5e15 + 0.5, math.MaxInt64, math.MinInt64, math.SmallestNonzeroFloat64}
	for p := 1.0; p < 1e20; p *= 10 {
		values = append(values, p, p-1, p+1, -p, 3*p, 1.25*p)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := float64(r.Int64N(1<<53) >> r.IntN(53))
		if r.IntN(2) == 0 {
			v = -v
		}
		values = append(values, v, math.Trunc(v/1000)*1000)
	}
	for _, v := range values {
		if v == 0 {
			continue // expfmt writes -0 as 0, unlike AppendFloat: TestWriter_matchesExpfmt checks it
		}
		want := strconv.AppendFloat(nil, v, 'g', -1, 64)
		if got := appendValue(nil, v); string(got) != string(want) {
			t.Errorf("appendValue(%v) = %s, AppendFloat writes %s", v, got, want)
		}
	}
}

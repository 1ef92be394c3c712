// Package exposition serves a Prometheus /metrics endpoint whose largest
// metric families are written in the text exposition format (version
// 0.0.4) straight from the program's own data, beside the families of a
// prometheus.Gatherer encoded as usual.
//
// A prometheus.Registry builds a dto.Metric per series, then sorts and
// encodes them: right for a few hundred series, but at 90,000 per-tenant
// series it cost the agent 215 ms and 34 MB per scrape. A [Source] writes
// its series through a [Writer] instead, one line at a time into a reused
// buffer, with no allocation per series.
package exposition

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Writer writes metric families of a [Source] in the text format. It keeps
// the first error (a bad name, a duplicate family, the client going away)
// and ignores everything written after it; the [Handler] reports it.
// A Writer is used by one scrape at a time.
type Writer struct {
	bw   *bufio.Writer
	line []byte // the sample being written
	err  error

	// The family samples are written to.
	name   string
	labels []string
	header []byte // its HELP and TYPE lines, written with its first sample
	skip   bool   // not asked for (name[] filter)

	wanted  map[string]bool     // families asked for; nil: all
	allowed map[string]bool     // families the current source declared
	written map[string]struct{} // families begun in this scrape
}

func newWriter(size int) *Writer {
	return &Writer{bw: bufio.NewWriterSize(nil, size), written: map[string]struct{}{}}
}

// reset prepares w for a new scrape written to out.
func (w *Writer) reset(out io.Writer, wanted map[string]bool) {
	w.bw.Reset(out)
	w.err, w.wanted, w.allowed = nil, wanted, nil
	w.name, w.labels, w.header, w.skip = "", nil, w.header[:0], false
	clear(w.written)
}

// Err returns the first error met by the writer.
func (w *Writer) Err() error { return w.err }

func (w *Writer) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// Family begins a metric family: the samples that follow belong to it,
// with the given label names. Its HELP and TYPE lines are written with its
// first sample, so a family without samples is left out, as a registry
// leaves it out. Label names must be sorted, as a registry sorts them, so
// that a line reads the same whichever way it was written. Each family is
// begun at most once per scrape, and only families the source named in
// [Source.Names].
func (w *Writer) Family(name, help string, typ prometheus.ValueType, labels ...string) {
	if w.err != nil {
		return
	}
	if _, ok := w.written[name]; ok {
		w.fail(fmt.Errorf("metric family %s written twice", name))
		return
	}
	if !w.allowed[name] {
		w.fail(fmt.Errorf("metric family %s is not among the names its source declared", name))
		return
	}
	if err := checkFamily(name, labels); err != nil {
		w.fail(err)
		return
	}
	var t string
	switch typ {
	case prometheus.CounterValue:
		t = "counter"
	case prometheus.GaugeValue:
		t = "gauge"
	case prometheus.UntypedValue:
		t = "untyped"
	default:
		w.fail(fmt.Errorf("metric family %s: value type %v cannot be written as one sample per series", name, typ))
		return
	}
	w.written[name] = struct{}{}
	w.name, w.labels = name, labels
	w.skip = w.wanted != nil && !w.wanted[name]
	h := append(w.header[:0], "# HELP "...)
	h = append(h, name...)
	h = append(h, ' ')
	h = appendEscaped(h, help, false)
	h = append(h, "\n# TYPE "...)
	h = append(h, name...)
	h = append(h, ' ')
	h = append(h, t...)
	w.header = append(h, '\n')
}

// Sample writes one series of the current family: its label values, in the
// order of the label names given to [Writer.Family], and its value. Label
// values must be valid UTF-8; they are escaped as the format requires.
func (w *Writer) Sample(value float64, labelValues ...string) {
	if w.err != nil || w.skip {
		return
	}
	if w.name == "" {
		w.fail(errors.New("sample written before any metric family"))
		return
	}
	if len(labelValues) != len(w.labels) {
		w.fail(fmt.Errorf("metric family %s: %d label values for %d label names", w.name, len(labelValues), len(w.labels)))
		return
	}
	if len(w.header) > 0 {
		if _, err := w.bw.Write(w.header); err != nil {
			w.fail(err)
			return
		}
		w.header = w.header[:0]
	}
	l := append(w.line[:0], w.name...)
	for i, v := range labelValues {
		if !validValue(v) {
			w.fail(fmt.Errorf("metric family %s: label %s=%q is not valid UTF-8", w.name, w.labels[i], v))
			return
		}
		if i == 0 {
			l = append(l, '{')
		} else {
			l = append(l, ',')
		}
		l = append(l, w.labels[i]...)
		l = append(l, '=', '"')
		l = appendEscaped(l, v, true)
		l = append(l, '"')
	}
	if len(labelValues) > 0 {
		l = append(l, '}')
	}
	l = append(l, ' ')
	l = appendValue(l, value)
	l = append(l, '\n')
	w.line = l
	if _, err := w.bw.Write(l); err != nil {
		w.fail(err)
	}
}

// appendValue appends v as the text format writes a sample value, byte
// for byte as prometheus/common's expfmt writes it: the shortest decimal
// that reads back as v ('g' format), "+Inf", "-Inf" or "NaN".
func appendValue(b []byte, v float64) []byte {
	switch {
	case v == 0: // also -0, which expfmt writes as 0
		return append(b, '0')
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	// Counters are whole numbers: formatting them as integers skips the
	// shortest-float search, most of the cost of a sample.
	if v >= -maxExact && v <= maxExact {
		if i := int64(v); float64(i) == v {
			return appendInt(b, i)
		}
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// maxExact is 2^53: every integer of at most this magnitude is a float64,
// and no shorter decimal reads back as the same float64, so its digits
// without trailing zeros are exactly what the shortest 'g' format picks.
const maxExact = 1 << 53

// appendInt appends the integer i as strconv.AppendFloat(b, float64(i),
// 'g', -1, 64) does: plainly below 1e6 in magnitude, and from 1e6 on in
// exponent form such as 1.234567e+06 or 1e+15, as 'g' switches to %e
// when the exponent reaches 6 for the shortest precision.
func appendInt(b []byte, i int64) []byte {
	if i > -1e6 && i < 1e6 {
		return strconv.AppendInt(b, i, 10)
	}
	if i < 0 {
		b = append(b, '-')
		i = -i
	}
	var d [20]byte
	digits := strconv.AppendUint(d[:0], uint64(i), 10)
	exp := len(digits) - 1
	for digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
	}
	b = append(b, digits[0])
	if len(digits) > 1 {
		b = append(b, '.')
		b = append(b, digits[1:]...)
	}
	b = append(b, 'e', '+')
	if exp < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(exp), 10)
}

// appendEscaped appends s escaped as the text format requires: backslash
// and newline in HELP text, and the double quote too in label values.
func appendEscaped(b []byte, s string, quote bool) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch c := s[i]; {
		case c == '\\':
			esc = `\\`
		case c == '\n':
			esc = `\n`
		case c == '"' && quote:
			esc = `\"`
		default:
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, esc...)
		start = i + 1
	}
	return append(b, s[start:]...)
}

// validValue reports whether s is valid UTF-8; the loop over ASCII bytes
// is cheaper than utf8.ValidString for the short names of tenants.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return utf8.ValidString(s[i:])
		}
	}
	return true
}

// checkFamily checks what the text format needs of a family's names: a
// valid metric name and valid, sorted, distinct label names.
func checkFamily(name string, labels []string) error {
	if !validName(name, true) {
		return fmt.Errorf("metric family name %q is not a valid Prometheus metric name", name)
	}
	for i, l := range labels {
		if !validName(l, false) || len(l) >= 2 && l[:2] == "__" {
			return fmt.Errorf("metric family %s: label name %q is not valid", name, l)
		}
		if i > 0 && labels[i-1] >= l {
			return fmt.Errorf("metric family %s: label names %v must be sorted and distinct", name, labels)
		}
	}
	return nil
}

// validName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*, with ':'
// also allowed in metric names.
func validName(s string, metric bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || metric && c == ':' || i > 0 && c >= '0' && c <= '9'
		if !ok {
			return false
		}
	}
	return true
}

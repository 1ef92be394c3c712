package exposition

import (
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// ContentType is the media type of every response of a [Handler]: the
// Prometheus text format 0.0.4, which every Prometheus version scrapes.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Source is a set of metric families written straight into each scrape's
// response, for families too large to go through a prometheus.Registry.
type Source interface {
	// Names lists the families the source writes. Each family comes from
	// one place only: [NewHandler] refuses two sources naming the same
	// family, and a scrape in which the gatherer returns one of them fails.
	Names() []string
	// Scrape fixes what this scrape exports (typically it takes the latest
	// snapshot of the data) and checks it: an error fails the scrape with
	// HTTP 500 before anything is written. The returned function writes
	// the families while the response is sent, so it must not wait on
	// anything slow, such as a lock held by a read loop.
	Scrape() (func(*Writer), error)
}

// HandlerOpts configures a [Handler].
type HandlerOpts struct {
	// ErrorLog, when set, receives the errors of failed scrapes.
	ErrorLog *slog.Logger
}

// Handler serves /metrics: the families of a prometheus.Gatherer and of
// every [Source].
//
// It always answers in the text format 0.0.4 ([ContentType]), whatever
// the Accept header asks: Prometheus accepts it from every scrape
// configuration, and writing one format is what lets the sources write it
// directly. Protobuf is not offered (promhttp negotiated it, and
// OpenMetrics when enabled): only native histograms need it, and kmeter
// exports none.
// The body is gzip-compressed when the request's Accept-Encoding allows
// gzip (Prometheus and Go's HTTP client always ask for it), at
// gzip.BestSpeed: /metrics is read over a local network, where the CPU of
// a stronger compression costs more than the bytes it saves.
//
// The name[] query parameter, given once or more, limits the response to
// the named families, as promhttp's handler does.
//
// Errors are handled as promhttp.HTTPErrorOnError did for the agent: when
// the gatherer returns an error (even with some families), when a family
// comes both from the gatherer and from a source, or when a source cannot
// begin its scrape, the response is HTTP 500 with the error as plain
// text, and nothing else. An error met while writing (the client went
// away, a source misusing its [Writer]) is logged and aborts the response
// (http.ErrAbortHandler), so that the scraper fails the scrape rather than
// take part of it for the whole.
//
// A Handler is safe for concurrent use; concurrent scrapes do not wait on
// each other.
type Handler struct {
	g        prometheus.Gatherer
	sources  []Source
	allowed  []map[string]bool // per source, the families it declared
	streamed map[string]bool   // every family of every source
	log      *slog.Logger

	writers sync.Pool // *Writer, with its buffered writer
	gzips   sync.Pool // *gzip.Writer
}

// bufSize is the size of a scrape's write buffer: a response is sent in
// pieces of this size, whether compressed or not.
const bufSize = 32 << 10

// NewHandler returns a Handler of g's families and of sources'. It fails
// when a source names an invalid family or two sources name the same one.
func NewHandler(g prometheus.Gatherer, sources []Source, opts HandlerOpts) (*Handler, error) {
	h := &Handler{g: g, sources: sources, streamed: map[string]bool{}, log: opts.ErrorLog}
	for _, s := range sources {
		allowed := map[string]bool{}
		for _, name := range s.Names() {
			if !validName(name, true) {
				return nil, fmt.Errorf("streamed metric family name %q is not a valid Prometheus metric name", name)
			}
			if h.streamed[name] {
				return nil, fmt.Errorf("metric family %s is streamed by two sources", name)
			}
			h.streamed[name] = true
			allowed[name] = true
		}
		h.allowed = append(h.allowed, allowed)
	}
	h.writers.New = func() any { return newWriter(bufSize) }
	h.gzips.New = func() any {
		gz, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed) // BestSpeed is a valid level
		return gz
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(rsp http.ResponseWriter, req *http.Request) {
	var wanted map[string]bool
	if req.URL != nil {
		if names := req.URL.Query()["name[]"]; len(names) > 0 {
			wanted = make(map[string]bool, len(names))
			for _, n := range names {
				wanted[n] = true
			}
		}
	}

	mfs, err := h.g.Gather()
	if err != nil {
		h.fail(rsp, fmt.Errorf("gather metrics: %w", err))
		return
	}
	for _, mf := range mfs {
		if h.streamed[mf.GetName()] {
			h.fail(rsp, fmt.Errorf("metric family %s is both gathered and streamed", mf.GetName()))
			return
		}
	}
	writes := make([]func(*Writer), len(h.sources))
	for i, s := range h.sources {
		if !wantsAny(wanted, h.allowed[i]) {
			continue
		}
		if writes[i], err = s.Scrape(); err != nil {
			h.fail(rsp, fmt.Errorf("begin streamed metrics: %w", err))
			return
		}
	}

	hdr := rsp.Header()
	hdr.Set("Content-Type", ContentType)
	hdr.Add("Vary", "Accept-Encoding")
	var out io.Writer = rsp
	var gz *gzip.Writer
	if acceptsGzip(req.Header.Get("Accept-Encoding")) {
		hdr.Set("Content-Encoding", "gzip")
		gz = h.gzips.Get().(*gzip.Writer)
		gz.Reset(rsp)
		defer func() {
			gz.Reset(nil) // hold no response writer in the pool
			h.gzips.Put(gz)
		}()
		out = gz
	}
	w := h.writers.Get().(*Writer)
	defer h.writers.Put(w)
	w.reset(out, wanted)
	defer w.reset(nil, nil)

	err = h.write(w, mfs, writes)
	if err == nil && gz != nil {
		err = gz.Close()
	}
	if err != nil {
		h.logError("write metrics", err)
		// Part of the response may be out already: abort it, so that the
		// scraper fails the scrape instead of taking a part for the whole.
		panic(http.ErrAbortHandler)
	}
}

// write writes the gathered families, then the streamed ones.
func (h *Handler) write(w *Writer, mfs []*dto.MetricFamily, writes []func(*Writer)) error {
	for _, mf := range mfs {
		if w.wanted != nil && !w.wanted[mf.GetName()] {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(w.bw, mf); err != nil {
			return err
		}
	}
	for i, write := range writes {
		if write == nil {
			continue
		}
		w.allowed = h.allowed[i]
		write(w)
		if w.err != nil {
			return w.err
		}
	}
	return w.bw.Flush()
}

// fail answers HTTP 500 with err, as promhttp's handler does.
func (h *Handler) fail(rsp http.ResponseWriter, err error) {
	h.logError("serve metrics", err)
	http.Error(rsp, "An error has occurred while serving metrics:\n\n"+err.Error(), http.StatusInternalServerError)
}

func (h *Handler) logError(msg string, err error) {
	if h.log != nil {
		h.log.Error(msg, "err", err)
	}
}

// wantsAny reports whether a name[] filter asks for any of a source's
// families; a source asked for nothing is not scraped.
func wantsAny(wanted, names map[string]bool) bool {
	if wanted == nil {
		return true
	}
	for n := range names {
		if wanted[n] {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding header prefers gzip to
// an uncompressed body (RFC 9110, section 12.5.3): gzip is listed with a
// q-value above 0 and not below identity's. A "*" alone does not choose
// gzip, as it does not for promhttp.
func acceptsGzip(header string) bool {
	gzipQ, identityQ := 0.0, -1.0
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		q := 1.0
		if k, v, ok := strings.Cut(strings.TrimSpace(params), "="); ok && strings.TrimSpace(k) == "q" {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				continue
			}
			q = f
		}
		switch strings.ToLower(strings.TrimSpace(coding)) {
		case "gzip":
			gzipQ = q
		case "identity":
			identityQ = q
		}
	}
	return gzipQ > 0 && gzipQ >= identityQ
}

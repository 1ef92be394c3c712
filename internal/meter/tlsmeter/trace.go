package tlsmeter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kmeter/kmeter/internal/tenant"
)

// Trace loads a private instance of the meter at cgroupDir (see
// [OpenPrivate]) and writes one line per handshake to w until ctx ends.
// It returns the ring buffer accounting of the session.
func Trace(ctx context.Context, w io.Writer, cgroupDir string) (RingStats, error) {
	m, err := OpenPrivate(cgroupDir)
	if err != nil {
		return RingStats{}, err
	}
	defer m.Close()
	r, err := m.Events()
	if err != nil {
		return RingStats{}, err
	}
	defer r.Close()
	names := newCgroupNames(cgroupDir)
	for {
		e, err := r.Read(ctx)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			return RingStats{}, err
		}
		if _, err := io.WriteString(w, FormatEvent(e, names.path(e.CgroupID))+"\n"); err != nil {
			return RingStats{}, fmt.Errorf("write event: %w", err)
		}
	}
	// Count what is still in flight as produced but not delivered.
	return r.Stats()
}

// FormatEvent renders e as one line: time, cgroup (path, or id when
// cgroup is ""), pid, comm, side, version, addresses and SNI.
func FormatEvent(e Event, cgroup string) string {
	if cgroup == "" {
		cgroup = fmt.Sprintf("cgroup:%d", e.CgroupID)
	}
	comm := e.Comm
	if comm == "" {
		comm = "-"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s pid=%d comm=%s %s %s %s -> %s",
		e.Time.Format("15:04:05.000000"), cgroup, e.PID, comm, e.Kind, e.Version, e.Src, e.Dst)
	if e.HelloRetry {
		b.WriteString(" hello-retry")
	}
	if e.SNI != "" {
		fmt.Fprintf(&b, " sni=%s", e.SNI)
		if e.SNITruncated {
			b.WriteString("...")
		}
	}
	return b.String()
}

// cgroupNames names cgroup ids for trace lines with a tenant.Resolver,
// rescanning at most once a second on a miss.
type cgroupNames struct {
	res      *tenant.Resolver // nil when the hierarchy cannot be read
	scanned  time.Time
	interval time.Duration
}

func newCgroupNames(root string) *cgroupNames {
	res, err := tenant.NewResolver(root, nil)
	if err != nil {
		res = nil // events then show cgroup ids
	}
	return &cgroupNames{res: res, scanned: time.Now(), interval: time.Second}
}

func (c *cgroupNames) path(id uint64) string {
	if c.res == nil {
		return ""
	}
	if p, ok := c.res.Path(id); ok {
		return p
	}
	if time.Since(c.scanned) < c.interval {
		return ""
	}
	c.scanned = time.Now()
	if c.res.Refresh() != nil {
		return ""
	}
	p, _ := c.res.Path(id)
	return p
}

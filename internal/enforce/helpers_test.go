package enforce

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.RunHelper(map[string]func([]string) error{
		"connect":     helperConnect,
		"send":        helperSend,
		"echo":        helperEcho,
		"tls":         helperTLS,
		"udp":         helperUDP,
		"progbench":   helperProgBench,
		"progrun":     helperProgRun,
		"recv":        helperRecv,
		"tcpenforcer": helperTCPEnforcer,
		"tcptoggle":   helperTCPToggle,
		"tlsserve":    helperTLSServe,
	})
	os.Exit(m.Run())
}

// connectResult is what the connect helper prints.
type connectResult struct {
	OK    int `json:"ok"`
	EPERM int `json:"eperm"`
	Other int `json:"other"`
	// FirstOther is the first unexpected error, for the test log.
	FirstOther string `json:"first_other,omitempty"`
}

// helperConnect makes n TCP connects to addr (an IPv4 or IPv6 host:port)
// as fast as it can, closing each socket at once, and prints a
// connectResult. Raw syscalls keep the burst tight.
func helperConnect(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: connect ADDR N")
	}
	ap, err := netip.ParseAddrPort(args[0])
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	if ap.Addr().Is4() {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	var res connectResult
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		// Close with RST: no TIME_WAIT pile-up across 1000 connects.
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		err = unix.Connect(fd, sa)
		switch {
		case err == nil:
			res.OK++
		case errors.Is(err, unix.EPERM):
			res.EPERM++
		default:
			if res.Other == 0 {
				res.FirstOther = err.Error()
			}
			res.Other++
		}
		unix.Close(fd)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// helperSend connects to addr and writes as fast as it can for the given
// seconds.
func helperSend(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: send ADDR SECONDS")
	}
	secs, err := strconv.ParseFloat(args[1], 64)
	if err != nil {
		return err
	}
	c, err := net.Dial("tcp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	deadline := time.Now().Add(time.Duration(secs * float64(time.Second)))
	_ = c.SetWriteDeadline(deadline)
	for time.Now().Before(deadline) {
		if _, err := c.Write(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
	}
	return nil
}

// helperEcho connects to an echo server at addr, prints "ready" once
// connected, then sends 1 KiB and reads it back until stdin is closed, and
// prints the number of round trips.
func helperEcho(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: echo ADDR")
	}
	c, err := net.Dial("tcp", args[0])
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("ready")
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()
	buf := make([]byte, 1024)
	rounds := 0
	for {
		select {
		case <-stop:
			fmt.Println(rounds)
			return nil
		default:
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(buf); err != nil {
			return fmt.Errorf("round %d: write: %w", rounds, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return fmt.Errorf("round %d: read: %w", rounds, err)
		}
		rounds++
	}
}

// pathResolver names tenants by cgroup path relative to the cgroup2 mount,
// as internal/tenant does for cgroups outside named subtrees.
type pathResolver struct {
	root string
	mu   sync.Mutex
	seen map[uint64]string
}

func newPathResolver(root string) *pathResolver {
	return &pathResolver{root: root, seen: map[uint64]string{}}
}

func (r *pathResolver) Roots(tenant string) ([]uint64, error) {
	if len(tenant) == 0 || tenant[0] != '/' {
		return nil, fmt.Errorf("tenant %q is not a cgroup path", tenant)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(r.root, tenant), &st); err != nil {
		return nil, fmt.Errorf("no cgroup %s: %w", tenant, err)
	}
	r.mu.Lock()
	r.seen[st.Ino] = tenant
	r.mu.Unlock()
	return []uint64{st.Ino}, nil
}

func (r *pathResolver) Tenant(id uint64) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.seen[id]; ok {
		return t
	}
	name := "cgroup:" + strconv.FormatUint(id, 10)
	_ = filepath.WalkDir(r.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if unix.Stat(path, &st) == nil && st.Ino == id {
			name = strings.TrimPrefix(path, r.root)
			return filepath.SkipAll
		}
		return nil
	})
	return name
}

// pinnedLinkProgram opens the program behind the link pinned at path, as
// the helper processes that run it with BPF_PROG_TEST_RUN need it.
func pinnedLinkProgram(path string) (*ebpf.Program, error) {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return nil, err
	}
	return ebpf.NewProgramFromID(info.Program)
}

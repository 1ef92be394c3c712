package tlsmeter

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kmeter/kmeter/internal/testutil"
)

// The test binary doubles as the helper processes below, started inside
// test cgroups with testutil's SelfCommand: a TLS server, a TLS client and
// plain TCP peers. Each prints "key=value" lines the test checks.

// helperFlags are the flags every helper understands.
type helperFlags struct {
	addr    string
	n       int
	version string
	curves  string
	sni     string
	mode    string
}

func parseHelperFlags(args []string) (helperFlags, error) {
	var f helperFlags
	fs := flag.NewFlagSet("helper", flag.ContinueOnError)
	fs.StringVar(&f.addr, "addr", "", "address to listen on or dial")
	fs.IntVar(&f.n, "n", 1, "connections")
	fs.StringVar(&f.version, "version", "1.3", "maximum TLS version: 1.2 or 1.3")
	fs.StringVar(&f.curves, "curves", "", "comma-separated curve preferences: p256, x25519")
	fs.StringVar(&f.sni, "sni", "", "client server name")
	fs.StringVar(&f.mode, "mode", "", "plain client mode: late-hello or not-tls")
	return f, fs.Parse(args)
}

func (f helperFlags) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch f.version {
	case "1.2":
		cfg.MaxVersion = tls.VersionTLS12
	case "1.3":
		cfg.MaxVersion = tls.VersionTLS13
	default:
		return nil, fmt.Errorf("unknown version %q", f.version)
	}
	for _, c := range strings.Split(f.curves, ",") {
		switch c {
		case "":
		case "p256":
			cfg.CurvePreferences = append(cfg.CurvePreferences, tls.CurveP256)
		case "x25519":
			cfg.CurvePreferences = append(cfg.CurvePreferences, tls.X25519)
		default:
			return nil, fmt.Errorf("unknown curve %q", c)
		}
	}
	return cfg, nil
}

var helpers = map[string]func([]string) error{
	"tls-server":   tlsServerHelper,
	"tls-client":   tlsClientHelper,
	"plain-server": plainServerHelper,
	"plain-client": plainClientHelper,
}

// listen listens on addr and prints "port=N" for the test.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	fmt.Printf("port=%d\n", ln.Addr().(*net.TCPAddr).Port)
	return ln, nil
}

// helloCounter counts ClientHello records read from the wire: a
// plaintext handshake record whose first message is type 1.
type helloCounter struct {
	net.Conn
	mu     sync.Mutex
	buf    []byte
	hellos int
}

func (c *helloCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p[:n]...)
	for len(c.buf) >= 5 {
		l := int(c.buf[3])<<8 | int(c.buf[4])
		if len(c.buf) < 5+l {
			break
		}
		if c.buf[0] == 22 && l > 0 && c.buf[5] == 1 {
			c.hellos++
		}
		c.buf = c.buf[5+l:]
	}
	return n, err
}

func tlsServerHelper(args []string) error {
	f, err := parseHelperFlags(args)
	if err != nil {
		return err
	}
	cfg, err := f.tlsConfig()
	if err != nil {
		return err
	}
	cert, err := testutil.SelfSignedCert("kmeter-test")
	if err != nil {
		return err
	}
	cfg.Certificates = []tls.Certificate{cert}
	ln, err := listen(f.addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	hellos, retries := 0, 0
	for i := 0; i < f.n; i++ {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		hc := &helloCounter{Conn: c}
		tc := tls.Server(hc, cfg)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("server handshake: %w", err)
		}
		if tc.ConnectionState().HelloRetryRequest {
			retries++
		}
		if _, err := tc.Write([]byte("ok")); err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, tc)
		tc.Close()
		hellos += hc.hellos
	}
	fmt.Printf("clienthellos=%d\nretries=%d\n", hellos, retries)
	return nil
}

func tlsClientHelper(args []string) error {
	f, err := parseHelperFlags(args)
	if err != nil {
		return err
	}
	cfg, err := f.tlsConfig()
	if err != nil {
		return err
	}
	cfg.ServerName = f.sni
	cfg.InsecureSkipVerify = true // a throwaway self-signed certificate
	var ports []string
	for i := 0; i < f.n; i++ {
		c, err := tls.Dial("tcp", f.addr, cfg)
		if err != nil {
			return fmt.Errorf("client handshake %d: %w", i, err)
		}
		buf := make([]byte, 2)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		ports = append(ports, strconv.Itoa(c.LocalAddr().(*net.TCPAddr).Port))
		c.Close()
	}
	fmt.Printf("ports=%s\n", strings.Join(ports, ","))
	return nil
}

// plainServerHelper echoes every connection until the peer closes it.
func plainServerHelper(args []string) error {
	f, err := parseHelperFlags(args)
	if err != nil {
		return err
	}
	ln, err := listen(f.addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	for i := 0; i < f.n; i++ {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		_, _ = io.Copy(c, c)
		c.Close()
	}
	return nil
}

// plainClientHelper writes TCP payloads that are not a TLS hello at the
// start of the stream: "not-tls" sends a TLS-looking first payload that is
// not a hello; "late-hello" sends a line first and then, in separate
// segments (each echoed back before the next), byte-exact ClientHellos.
func plainClientHelper(args []string) error {
	f, err := parseHelperFlags(args)
	if err != nil {
		return err
	}
	hello, err := recordClientHello(f.sni)
	if err != nil {
		return err
	}
	var writes [][]byte
	switch f.mode {
	case "late-hello":
		writes = [][]byte{[]byte("HELO plain\r\n"), hello, hello, hello}
	case "not-tls":
		// A handshake record holding a Finished (type 20), then a
		// ClientHello: neither starts a stream with a hello.
		notHello := append([]byte(nil), hello...)
		notHello[5] = 20
		writes = [][]byte{notHello, hello}
	default:
		return fmt.Errorf("unknown mode %q", f.mode)
	}
	for i := 0; i < f.n; i++ {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			return err
		}
		r := bufio.NewReader(c)
		for _, w := range writes {
			if _, err := c.Write(w); err != nil {
				return err
			}
			if _, err := io.ReadFull(r, make([]byte, len(w))); err != nil {
				return fmt.Errorf("read echo: %w", err)
			}
		}
		c.Close()
	}
	return nil
}

// recordClientHello returns the bytes of the first record a crypto/tls
// client writes: a real ClientHello.
func recordClientHello(sni string) ([]byte, error) {
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
		a.Close()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		return nil, err
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		return nil, err
	}
	if hdr[0] != 22 || body[0] != 1 {
		return nil, errors.New("first record is not a ClientHello")
	}
	return append(hdr, body...), nil
}

// helperOutput parses "key=value" lines.
func helperOutput(out string) map[string]string {
	kv := make(map[string]string)
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// unpinnedSpec loads the tlsmeter spec with pinning turned off, for tests
// that load its test programs: pinned by name without a pin path, their
// maps would land in a shared bpffs dir and outlive the test.
func unpinnedSpec(tb testing.TB) *ebpf.CollectionSpec {
	tb.Helper()
	spec, err := loadTlsmeter()
	if err != nil {
		tb.Fatal(err)
	}
	for _, ms := range spec.Maps {
		ms.Pinning = ebpf.PinNone
	}
	return spec
}

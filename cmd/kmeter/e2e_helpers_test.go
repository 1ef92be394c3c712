package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/invoice"
	"github.com/kmeter/kmeter/internal/ledger"
	"github.com/kmeter/kmeter/internal/testutil"
)

// The end-to-end tests below start real agents (`kmeter run` as a child of
// the test binary), make real kernel events from helper processes placed in
// test cgroups, and check what the ledger billed to the last unit.

// tlsServerHelper ADDR N accepts N TLS connections on ADDR (printing
// "port=P" once listening), completing the handshake of each.
func tlsServerHelper(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: tls-server ADDR N")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	cert, err := testutil.SelfSignedCert("kmeter-e2e")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Printf("port=%d\n", ln.Addr().(*net.TCPAddr).Port)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	for i := range n {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("server handshake %d: %w", i, err)
		}
		if _, err := tc.Write([]byte("ok")); err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, tc)
		tc.Close()
	}
	return nil
}

// tlsClientHelper ADDR N makes N TLS handshakes with ADDR, one connection
// each, and reads the server's "ok" on every one.
func tlsClientHelper(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: tls-client ADDR N")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "kmeter-e2e"} // throwaway self-signed cert
	for i := range n {
		c, err := tls.Dial("tcp", args[0], cfg)
		if err != nil {
			return fmt.Errorf("client handshake %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
			return fmt.Errorf("read from server %d: %w", i, err)
		}
		c.Close()
	}
	return nil
}

// connectLoopHelper ADDR connects to ADDR and closes the connection in a
// loop until killed; every connect() is one tcp_connects event. A refused
// or denied connect is not an error here: the quota test watches them.
func connectLoopHelper(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: connect-loop ADDR")
	}
	for {
		c, err := net.DialTimeout("tcp", args[0], time.Second)
		if err == nil {
			c.Close()
		}
		time.Sleep(time.Millisecond)
	}
}

// tlsHandshakes makes n real TLS handshakes: the server runs in cgroup
// server, the client in cgroup client, over 127.0.0.1 on a free port
// (never 443, so no port rule can be what counts them).
func tlsHandshakes(t *testing.T, server, client testutil.Cgroup, n int) {
	t.Helper()
	if err := startTLS(t, server, client, n)(); err != nil {
		t.Fatal(err)
	}
}

// startTLS starts the server and the client of tlsHandshakes and returns
// a function that waits for both, so that several pairs can run at once.
func startTLS(t *testing.T, server, client testutil.Cgroup, n int) (wait func() error) {
	t.Helper()
	srv := server.SelfCommand(t, "tls-server", "127.0.0.1:0", strconv.Itoa(n))
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start tls server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("tls server did not print its port: %v", err)
	}
	port, ok := strings.CutPrefix(strings.TrimSpace(line), "port=")
	if !ok || port == "443" {
		t.Fatalf("tls server printed %q", line)
	}
	cli := client.SelfCommand(t, "tls-client", "127.0.0.1:"+port, strconv.Itoa(n))
	if err := cli.Start(); err != nil {
		t.Fatalf("start tls client: %v", err)
	}
	return func() error {
		if err := cli.Wait(); err != nil {
			return fmt.Errorf("tls client: %w", err)
		}
		if err := srv.Wait(); err != nil {
			return fmt.Errorf("tls server: %w", err)
		}
		return nil
	}
}

// buildPlugin builds the C example plugin name ("c-tls", "c-flat") from
// source with plugins/build.sh into a temp dir and returns its path. It
// fails when clang is missing under KMETER_REQUIRE_BPF=1 and skips
// otherwise.
func buildPlugin(t *testing.T, name string) string {
	t.Helper()
	for _, tool := range []string{"clang", "wasm-ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipOrFail(t, "%s is not installed (Debian: clang lld), needed to build plugin %s", tool, name)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", filepath.Join("..", "..", "plugins", "build.sh"), dir, "c")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugins/build.sh c: %v\n%s", err, out)
	}
	return filepath.Join(dir, name+".wasm")
}

// signedPlugin makes a publisher key with `kmeter plugin keygen`, signs
// module with `kmeter plugin sign`, and returns the signed module and a
// trusted-keys dir that holds only the public key.
func signedPlugin(t *testing.T, module string) (signed, keysDir string) {
	t.Helper()
	dir := t.TempDir()
	keysDir = filepath.Join(dir, "trusted")
	if err := os.Mkdir(keysDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pluginCLI(t, "plugin", "keygen", "--out", filepath.Join(dir, "acme")); err != nil {
		t.Fatalf("plugin keygen: %v", err)
	}
	if err := os.Rename(filepath.Join(dir, "acme.pub"), filepath.Join(keysDir, "acme.pub")); err != nil {
		t.Fatal(err)
	}
	signed = filepath.Join(dir, "signed.wasm")
	if _, _, err := pluginCLI(t, "plugin", "sign", "--key", filepath.Join(dir, "acme.key"), "--out", signed, module); err != nil {
		t.Fatalf("plugin sign: %v", err)
	}
	return signed, keysDir
}

// writeConfig writes a YAML config to a temp file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kmeter.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// invoiceCLI runs `kmeter invoice --format json` in-process.
func invoiceCLI(t *testing.T, tenant string, ledgerArgs ...string) invoice.Invoice {
	t.Helper()
	args := append([]string{"invoice", "--tenant", tenant, "--period", ledger.PeriodOf(time.Now()), "--format", "json"}, ledgerArgs...)
	out, _, err := pluginCLI(t, args...)
	if err != nil {
		t.Fatalf("kmeter %s: %v", strings.Join(args, " "), err)
	}
	var inv invoice.Invoice
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatalf("invoice JSON: %v\n%s", err, out)
	}
	return inv
}

// apiInvoice reads tenant's invoice of this month from the agent's money
// API.
func (a *testAgent) apiInvoice(t *testing.T, tenant string) invoice.Invoice {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/invoices/%s?period=%s", a.addr, tenant, ledger.PeriodOf(time.Now())))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET invoice of %s: %s: %s", tenant, resp.Status, body)
	}
	var inv invoice.Invoice
	if err := json.Unmarshal(body, &inv); err != nil {
		t.Fatalf("invoice JSON: %v\n%s", err, body)
	}
	return inv
}

// lineOf returns the quantity and amount billed for meter on inv, summed
// over its lines (one per plugin version).
func lineOf(inv invoice.Invoice, meter string) (quantity, amount int64) {
	for _, l := range inv.Lines {
		if l.Meter == meter {
			quantity += l.Quantity
			amount += l.AmountMicro
		}
	}
	return quantity, amount
}

// waitBilled polls the agent's invoice of tenant until meter's billed
// quantity reaches want (or the deadline passes), then returns the
// invoice.
func (a *testAgent) waitBilled(t *testing.T, tenant, meter string, want int64, timeout time.Duration) invoice.Invoice {
	t.Helper()
	var inv invoice.Invoice
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		inv = a.apiInvoice(t, tenant)
		if q, _ := lineOf(inv, meter); q >= want || time.Now().After(deadline) {
			return inv
		}
	}
}

// stop ends the agent with SIGTERM, as an operator would, and waits.
func (a *testAgent) stop(t *testing.T) {
	t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Wait(); err != nil {
		t.Fatalf("agent exited with %v after SIGTERM", err)
	}
}

// connectsHelper ADDR N [GAP] makes N connect() calls to ADDR, GAP apart
// (default none), or fewer when "-until-eperm" is the 4th argument and one
// is denied. It prints "ok=X eperm=Y" and "ok_times=" (unix nanoseconds of
// each connect that succeeded); any error other than EPERM fails it.
func connectsHelper(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: connects ADDR N [GAP [-until-eperm]]")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	var gap time.Duration
	if len(args) > 2 {
		if gap, err = time.ParseDuration(args[2]); err != nil {
			return err
		}
	}
	untilEPERM := len(args) > 3 && args[3] == "-until-eperm"
	var ok, eperm int
	var times []string
	for range n {
		c, err := net.DialTimeout("tcp", args[0], 2*time.Second)
		switch {
		case err == nil:
			times = append(times, strconv.FormatInt(time.Now().UnixNano(), 10))
			ok++
			c.Close()
		case errors.Is(err, syscall.EPERM):
			eperm++
		default:
			return fmt.Errorf("connect %s: %w", args[0], err)
		}
		if untilEPERM && eperm > 0 {
			break
		}
		time.Sleep(gap)
	}
	fmt.Printf("ok=%d\neperm=%d\nok_times=%s\n", ok, eperm, strings.Join(times, ","))
	return nil
}

// connectResult is what connectsHelper printed.
type connectResult struct {
	ok, eperm int
	okTimes   []time.Time
}

// runConnects runs the connects helper in cg and parses its output.
func runConnects(t *testing.T, cg testutil.Cgroup, args ...string) connectResult {
	t.Helper()
	out, err := cg.SelfCommand(t, "connects", args...).Output()
	if err != nil {
		t.Fatalf("connects helper %v: %v", args, err)
	}
	var r connectResult
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "ok":
			r.ok, _ = strconv.Atoi(v)
		case "eperm":
			r.eperm, _ = strconv.Atoi(v)
		case "ok_times":
			for _, s := range strings.Split(v, ",") {
				if ns, err := strconv.ParseInt(s, 10, 64); err == nil {
					r.okTimes = append(r.okTimes, time.Unix(0, ns))
				}
			}
		}
	}
	return r
}

// acceptAll listens on 127.0.0.1 in the test process (outside every test
// cgroup), accepts and closes connections until the test ends, and
// returns its address.
func acceptAll(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

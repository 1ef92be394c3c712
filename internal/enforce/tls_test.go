package enforce

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/testutil"
)

// tlsResult is what the tls helper prints.
type tlsResult struct {
	OK     int `json:"ok"`
	Failed int `json:"failed"`
}

// helperTLS makes n TLS handshakes to addr one after another, each with a
// short timeout, and prints a tlsResult.
func helperTLS(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: tls ADDR N")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	res := dialTLS(args[0], n)
	return json.NewEncoder(os.Stdout).Encode(res)
}

// selfSigned returns a server config with a fresh self-signed certificate
// for kmeter.test.
func selfSigned() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"kmeter.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, nil
}

// serveTLS completes a TLS handshake on every connection ln accepts.
func serveTLS(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}()
	}
}

// tlsServer serves TLS handshakes on loopback until the test ends.
func tlsServer(t *testing.T) string {
	t.Helper()
	cfg, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveTLS(ln)
	return ln.Addr().String()
}

// helperTLSServe serves TLS handshakes on loopback, prints its address,
// and stops when stdin is closed.
func helperTLSServe(args []string) error {
	cfg, err := selfSigned()
	if err != nil {
		return err
	}
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", cfg)
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	go serveTLS(ln)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return ln.Close()
}

// dialTLS makes n handshakes to addr, each with a 250 ms timeout.
func dialTLS(addr string, n int) tlsResult {
	var res tlsResult
	for i := 0; i < n; i++ {
		d := &net.Dialer{Timeout: 250 * time.Millisecond}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "kmeter.test"})
		if err != nil {
			res.Failed++
			continue
		}
		res.OK++
		c.Close()
	}
	return res
}

// TestEnforcer_tlsHandshakeRate limits a tenant to 1 handshake/s with
// burst 2 and makes 6 real TLS handshakes within well under a second:
// exactly the bucket's allowance completes (2 + refill over the kernel
// time between the first and last ClientHello, at most 1 here), the
// others fail and each is counted once as tls_drop, although the kernel
// saw their ClientHellos retransmitted.
func TestEnforcer_tlsHandshakeRate(t *testing.T) {
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "tls")
	addr := tlsServer(t)
	if err := e.SetLimit(cg.Rel, Limit{TLSRate: 1, TLSBurst: 2}); err != nil {
		t.Fatal(err)
	}
	const n = 6
	cmd := cg.SelfCommand(t, "tls", addr, strconv.Itoa(n))
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("tls helper: %v", err)
	}
	var res tlsResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("tls helper output %q: %v", out.String(), err)
	}
	var b limiterTbucket
	if err := e.objs.Buckets.Lookup(limiterBucketKey{Id: cg.ID, Kind: kindTLS}, &b); err != nil {
		t.Fatal(err)
	}
	want := 2 + int((b.LastNs-b.SinceNs)*1/nano)
	t.Logf("%d handshakes completed, %d failed; allowance %d over %d ns", res.OK, res.Failed, want, b.LastNs-b.SinceNs)
	if res.OK != want || int(b.Passed) != want || res.OK+res.Failed != n {
		t.Errorf("completed %d, kernel passed %d, want exactly %d of %d", res.OK, b.Passed, want, n)
	}
	got, err := e.Enforced()
	if err != nil {
		t.Fatal(err)
	}
	if d := got[cg.Rel][TLSDrop]; d != uint64(res.Failed) {
		t.Errorf("tls_drop = %d, want %d (one per failed handshake)", d, res.Failed)
	}
}

// TestEnforcer_tlsServerHelloRate puts the TLS server in the tenant: its
// ServerHellos beyond 1/s with burst 2 are dropped, so exactly the
// allowance of 6 handshakes from outside completes, and each failed one is
// counted once.
func TestEnforcer_tlsServerHelloRate(t *testing.T) {
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "tlsserver")
	if err := e.SetLimit(cg.Rel, Limit{TLSRate: 1, TLSBurst: 2}); err != nil {
		t.Fatal(err)
	}
	srv := cg.SelfCommand(t, "tlsserve")
	stdin, err := srv.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("tls server printed no address")
	}
	const n = 6
	res := dialTLS(sc.Text(), n)
	stdin.Close()
	if err := srv.Wait(); err != nil {
		t.Fatalf("tls server: %v", err)
	}
	var b limiterTbucket
	if err := e.objs.Buckets.Lookup(limiterBucketKey{Id: cg.ID, Kind: kindTLS}, &b); err != nil {
		t.Fatal(err)
	}
	want := 2 + int((b.LastNs-b.SinceNs)*1/nano)
	if res.OK != want || int(b.Passed) != want || res.OK+res.Failed != n {
		t.Errorf("completed %d, kernel passed %d, want exactly %d of %d", res.OK, b.Passed, want, n)
	}
	got, err := e.Enforced()
	if err != nil {
		t.Fatal(err)
	}
	if d := got[cg.Rel][TLSDrop]; d != uint64(res.Failed) {
		t.Errorf("tls_drop = %d, want %d", d, res.Failed)
	}
	t.Logf("server side: %d handshakes completed, %d failed", res.OK, res.Failed)
}

package enforce

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
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
	var res tlsResult
	for i := 0; i < n; i++ {
		d := &net.Dialer{Timeout: 250 * time.Millisecond}
		c, err := tls.DialWithDialer(d, "tcp", args[0], &tls.Config{InsecureSkipVerify: true, ServerName: "kmeter.test"})
		if err != nil {
			res.Failed++
			continue
		}
		res.OK++
		c.Close()
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// tlsServer serves TLS handshakes on loopback with a fresh self-signed
// certificate.
func tlsServer(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"kmeter.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", cfg)
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
			go func() {
				_ = c.SetDeadline(time.Now().Add(time.Second))
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
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

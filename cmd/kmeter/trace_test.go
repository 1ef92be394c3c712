package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmeter/kmeter/internal/testutil"
)

// lockedBuffer is written by the command and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTraceTLS runs `kmeter trace tls`, makes TLS handshakes in this
// process until they show up, stops it as Ctrl-C would and checks the
// lines and the final accounting.
func TestTraceTLS(t *testing.T) {
	testutil.RequireBPF(t)
	ln := tlsListener(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte{1})
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut lockedBuffer
	root := newRootCmd()
	root.SetArgs([]string{"trace", "tls"})
	root.SetOut(&out)
	root.SetErr(&errOut)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	port := ln.Addr().(*net.TCPAddr).Port
	client := regexp.MustCompile(fmt.Sprintf(`pid=\d+ comm=\S+ client TLS 1\.3 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:%d sni=trace\.kmeter\.test`, port))
	server := regexp.MustCompile(fmt.Sprintf(`server TLS 1\.3 127\.0\.0\.1:%d -> 127\.0\.0\.1:\d+`, port))
	deadline := time.Now().Add(20 * time.Second)
	for !client.MatchString(out.String()) || !server.MatchString(out.String()) {
		select {
		case err := <-done:
			t.Fatalf("trace tls ended early: %v\n%s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no client and server lines for port %d after 20s:\n%s", port, out.String())
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "trace.kmeter.test", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadFull(c, make([]byte, 1))
		c.Close()
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("trace tls: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("trace tls did not stop 10s after its context ended")
	}
	if !regexp.MustCompile(`^produced \d+, delivered \d+, dropped 0\n$`).MatchString(errOut.String()) {
		t.Errorf("final accounting %q", errOut.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.Contains(line, " pid=") {
			t.Errorf("malformed line %q", line)
		}
	}
}

func tlsListener(t *testing.T) net.Listener {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "trace.kmeter.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

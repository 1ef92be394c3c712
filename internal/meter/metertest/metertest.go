// Package metertest runs real workloads inside test cgroups for the meter
// tests: TCP connections over loopback between a client process in one
// cgroup and a server process in another, reporting what each side did
// as its sockets' TCP_INFO saw it.
package metertest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmeter/kmeter/internal/testutil"
)

// Helper names, as registered by [Helpers].
const (
	helperServer = "metertest-tcp-server"
	helperClient = "metertest-tcp-client"
)

// Helpers returns the helper processes [RunTCP] starts. Merge them into
// the map a test binary's TestMain passes to [testutil.RunHelper].
func Helpers() map[string]func([]string) error {
	return map[string]func([]string) error{
		helperServer: tcpServer,
		helperClient: tcpClient,
	}
}

// TCPReport is what one side of a TCP workload did.
type TCPReport struct {
	// Conns is the number of connections made or accepted.
	Conns int `json:"conns"`
	// Bytes is the payload the application sent (client) or received
	// (server).
	Bytes uint64 `json:"bytes"`
	// BytesSent is the payload TCP sent, retransmissions included
	// (tcpi_bytes_sent): what crossed the loopback, beyond Bytes when
	// segments were lost (for example to a full backlog on a busy host).
	BytesSent uint64 `json:"bytes_sent"`
	// SegsOut and SegsIn are TCP segments sent and received, summed
	// over the connections (tcpi_segs_out/in, read after the other side
	// closed, so they include the handshake and FIN exchange as far as
	// the socket itself saw them).
	SegsOut uint64 `json:"segs_out"`
	SegsIn  uint64 `json:"segs_in"`
}

// RunTCP makes conns TCP connections over loopback (network "tcp4" or
// "tcp6") from a client process started in cgroup client to a server
// process started in cgroup server. The client sends payload bytes on
// each connection and half-closes; the server reads to the end, then
// closes too. RunTCP returns when both processes have exited, so every
// packet of the workload has been sent and processed.
func RunTCP(t *testing.T, server, client testutil.Cgroup, network string, conns, payload int) (srv, cli TCPReport) {
	t.Helper()
	sc := server.SelfCommand(t, helperServer, network, strconv.Itoa(conns))
	out, err := sc.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(); err != nil {
		t.Fatalf("start tcp server: %v", err)
	}
	defer sc.Process.Kill()
	r := bufio.NewReader(out)
	addr, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read tcp server address: %v", err)
	}
	cc := client.SelfCommand(t, helperClient, addr[:len(addr)-1], strconv.Itoa(conns), strconv.Itoa(payload))
	cout, err := cc.Output()
	if err != nil {
		t.Fatalf("tcp client: %v", err)
	}
	if err := json.Unmarshal(cout, &cli); err != nil {
		t.Fatalf("tcp client report %q: %v", cout, err)
	}
	if err := json.NewDecoder(r).Decode(&srv); err != nil {
		t.Fatalf("tcp server report: %v", err)
	}
	if err := sc.Wait(); err != nil {
		t.Fatalf("tcp server: %v", err)
	}
	if cli.Conns != conns || srv.Conns != conns || srv.Bytes != uint64(conns*payload) {
		t.Fatalf("workload incomplete: client %+v, server %+v, want %d conns of %d bytes", cli, srv, conns, payload)
	}
	return srv, cli
}

// tcpServer listens on loopback, prints its address, accepts args[1]
// connections one by one, reads each to EOF, closes it and prints its
// TCPReport as JSON.
func tcpServer(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: network conns")
	}
	network := args[0]
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	host := "127.0.0.1:0"
	if network == "tcp6" {
		host = "[::1]:0"
	}
	ln, err := net.Listen(network, host)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr())
	var rep TCPReport
	for range n {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		got, err := io.Copy(io.Discard, c)
		if err != nil {
			return err
		}
		tc := c.(*net.TCPConn)
		if err := tc.CloseWrite(); err != nil {
			return err
		}
		if err := addTCPInfo(&rep, tc); err != nil {
			return err
		}
		c.Close()
		rep.Conns++
		rep.Bytes += uint64(got)
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// tcpClient makes args[1] connections to args[0], sends args[2] bytes on
// each, half-closes, waits for the server's FIN and prints its TCPReport.
func tcpClient(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: addr conns payload")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	size, err := strconv.Atoi(args[2])
	if err != nil {
		return err
	}
	buf := make([]byte, size)
	var rep TCPReport
	for range n {
		c, err := net.Dial("tcp", args[0])
		if err != nil {
			return err
		}
		tc := c.(*net.TCPConn)
		if _, err := tc.Write(buf); err != nil {
			return err
		}
		if err := tc.CloseWrite(); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, tc); err != nil {
			return err
		}
		if err := addTCPInfo(&rep, tc); err != nil {
			return err
		}
		c.Close()
		rep.Conns++
		rep.Bytes += uint64(size)
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

func addTCPInfo(rep *TCPReport, c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var (
		info *unix.TCPInfo
		ierr error
	)
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("tcp_info: %w", ierr)
	}
	rep.BytesSent += info.Bytes_sent
	rep.SegsOut += uint64(info.Segs_out)
	rep.SegsIn += uint64(info.Segs_in)
	return nil
}

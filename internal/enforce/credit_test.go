package enforce

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kmeter/kmeter/internal/testutil"
)

// helperProgRun runs the program behind the pinned link LINK on
// benchPacket N times with BPF_PROG_TEST_RUN, one packet per run, from the
// cgroup it was started in, and prints how many it passed.
func helperProgRun(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: progrun LINK N")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	prog, err := pinnedLinkProgram(args[0])
	if err != nil {
		return err
	}
	defer prog.Close()
	pkt := benchPacket()
	passed := 0
	for range n {
		ret, err := prog.Run(&ebpf.RunOptions{Data: pkt})
		if err != nil {
			return err
		}
		// Egress drops return 2 (drop, and tell TCP "congestion").
		passed += int(ret & 1)
	}
	fmt.Println(passed)
	return nil
}

// TestEnforcer_egressCredit checks the byte credit that lets most packets
// skip the bucket: every byte a root takes from the bucket is either a
// packet that passed or credit still held, the bucket's tokens are exact to
// the nano-token, no more passes than the burst and the refill allow, at
// most one packet's worth per batch is left unused, and every other packet
// is dropped and counted.
func TestEnforcer_egressCredit(t *testing.T) {
	e, _ := openTest(t)
	cg := testutil.NewCgroup(t, "credit")
	const (
		burst = 1 << 20
		n     = 2000
		pkt   = 1040 // benchPacket without its Ethernet header: the skb's len
	)
	if err := e.SetLimit(cg.Rel, Limit{Egress: 1, EgressBurst: burst}); err != nil {
		t.Fatal(err)
	}
	cmd := cg.SelfCommand(t, "progrun", e.tenantPin(cg.ID, hook{name: "egress"}), strconv.Itoa(n))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("progrun: %v", err)
	}
	passed, err := strconv.Atoi(string(bytes.TrimSpace(out.Bytes())))
	if err != nil {
		t.Fatalf("progrun output %q: %v", out.String(), err)
	}
	var b limiterTbucket
	if err := e.objs.Buckets.Lookup(limiterBucketKey{Id: cg.ID, Kind: kindEgress}, &b); err != nil {
		t.Fatalf("read bucket: %v", err)
	}
	var kl limiterTenantLimits
	if err := e.objs.Tenants.Lookup(cg.ID, &kl); err != nil {
		t.Fatalf("read tenant limits: %v", err)
	}
	credit := kl.Credit[kindEgress]
	t.Logf("%d of %d packets of %d B passed; bucket handed out %d B, %d B credit left, refilled %d nano-tokens",
		passed, n, pkt, b.Passed, credit, b.RefilledN)
	if got := int64(passed)*pkt + credit; uint64(got) != b.Passed {
		t.Errorf("passed %d B + credit %d B = %d, want the %d B the bucket handed out", int64(passed)*pkt, credit, got, b.Passed)
	}
	if want := int64(burst*nano+b.RefilledN) - int64(b.Passed)*nano; b.Tokens != want {
		t.Errorf("bucket holds %d nano-tokens, want %d", b.Tokens, want)
	}
	batches := int64(burst / creditBatch(burst))
	if hi := (burst + int64(b.RefilledN/nano)) / pkt; int64(passed) > hi {
		t.Errorf("%d packets passed, more than the %d the burst and refill hold", passed, hi)
	}
	if lo := (burst - batches*pkt) / pkt; int64(passed) < lo {
		t.Errorf("%d packets passed, fewer than %d: more than one packet per batch went unused", passed, lo)
	}
	if credit < 0 || credit >= pkt {
		t.Errorf("credit left %d B, want 0..%d (less than one packet, or it would have been sent)", credit, pkt-1)
	}
	enforced, err := e.Enforced()
	if err != nil {
		t.Fatal(err)
	}
	if got := enforced[cg.Rel][EgressDrop]; got != uint64(n-passed) {
		t.Errorf("egress drops counted %d, want %d", got, n-passed)
	}
}

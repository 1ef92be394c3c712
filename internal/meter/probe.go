package meter

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// ProbeTPBTF reports whether this kernel can load a BTF-enabled raw
// tracepoint program (SEC("tp_btf/<event>")) for event: it needs BPF
// tracing programs and kernel BTF that describes the tracepoint. A nil
// error means meters can prefer tp_btf over the classic tracepoint, which
// costs a perf event and tracefs.
func ProbeTPBTF(event string) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:       "kmeter_probe",
		Type:       ebpf.Tracing,
		AttachType: ebpf.AttachTraceRawTp,
		AttachTo:   event,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		return fmt.Errorf("probe tp_btf/%s: %w", event, err)
	}
	return prog.Close()
}

package plugin

import (
	"context"
	"encoding/binary"
	"log/slog"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// Host module names.
const (
	hostModule = "kmeter"
	wasiModule = "wasi_snapshot_preview1"
)

// Guest log limits: a plugin cannot flood the host's log.
const (
	maxLogBytes    = 1024
	maxLogsPerCall = 16
)

// WASI errno values used by the safe subset.
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoInval   = 28
	errnoNotsup  = 58
)

// hostImportTable returns the allow-list of imports a plugin may have, with their
// signatures. The wasi_snapshot_preview1 subset is exactly what the Go
// runtime needs (GOOS=wasip1, -buildmode=c-shared) and touches nothing
// outside the instance: no files, sockets, environment or real clock.
func hostImportTable() map[string]map[string]sig {
	return map[string]map[string]sig{
		hostModule: {
			"log": {[]api.ValueType{i32, i32, i32}, nil},
			"now": {nil, []api.ValueType{i64}},
		},
		wasiModule: {
			"args_get":          {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
			"args_sizes_get":    {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
			"environ_get":       {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
			"environ_sizes_get": {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
			"clock_time_get":    {[]api.ValueType{i32, i64, i32}, []api.ValueType{i32}},
			"random_get":        {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
			"fd_write":          {[]api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}},
			"poll_oneoff":       {[]api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}},
			"sched_yield":       {nil, []api.ValueType{i32}},
			"proc_exit":         {[]api.ValueType{i32}, nil},
		},
	}
}

// callState is what host functions may see of the batch being priced.
type callState struct {
	now    int64 // latest window end of the batch, unix ns
	logs   int
	sha    string
	logger *slog.Logger
}

type callStateKey struct{}

func stateOf(ctx context.Context) *callState {
	st, _ := ctx.Value(callStateKey{}).(*callState)
	return st
}

func (st *callState) log(level int32, msg []byte) {
	if st == nil || st.logs >= maxLogsPerCall {
		return
	}
	st.logs++
	if len(msg) > maxLogBytes {
		msg = msg[:maxLogBytes]
	}
	lvl := slog.LevelInfo
	switch {
	case level <= 0:
		lvl = slog.LevelDebug
	case level >= 3:
		lvl = slog.LevelError
	case level == 2:
		lvl = slog.LevelWarn
	}
	st.logger.Log(context.Background(), lvl, "plugin log", "plugin_sha256", st.sha, "msg", string(msg))
}

// instantiateHostModules defines the kmeter and safe WASI host modules
// in r. Each function is deterministic: time comes from the batch's
// window, randomness from a fixed seed.
// mono backs the WASI monotonic clock: it advances 1 µs per reading, so
// runtimes that need a moving clock (Go's) work while guests learn
// nothing about real time.
func instantiateHostModules(ctx context.Context, r wazero.Runtime, mono *atomic.Int64) error {
	kb := r.NewHostModuleBuilder(hostModule)
	kb.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostLog), []api.ValueType{i32, i32, i32}, nil).Export("log")
	kb.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(hostNow), nil, []api.ValueType{i64}).Export("now")
	if _, err := kb.Instantiate(ctx); err != nil {
		return err
	}
	wb := r.NewHostModuleBuilder(wasiModule)
	wasi := hostImportTable()[wasiModule]
	fn := func(name string, f api.GoModuleFunc) {
		s := wasi[name]
		wb.NewFunctionBuilder().WithGoModuleFunction(f, s.params, s.results).Export(name)
	}
	fn("args_get", wasiNoop)
	fn("args_sizes_get", wasiZeroSizes)
	fn("environ_get", wasiNoop)
	fn("environ_sizes_get", wasiZeroSizes)
	fn("clock_time_get", func(ctx context.Context, m api.Module, stack []uint64) { wasiClock(ctx, m, stack, mono) })
	fn("random_get", wasiRandom)
	fn("fd_write", wasiFdWrite)
	fn("poll_oneoff", wasiErr(errnoNotsup))
	fn("sched_yield", wasiNoop)
	fn("proc_exit", wasiProcExit)
	_, err := wb.Instantiate(ctx)
	return err
}

func hostLog(ctx context.Context, m api.Module, stack []uint64) {
	level, ptr, n := int32(stack[0]), uint32(stack[1]), uint32(stack[2])
	msg, ok := m.Memory().Read(ptr, min(n, maxLogBytes))
	if !ok {
		return
	}
	stateOf(ctx).log(level, msg)
}

func hostNow(ctx context.Context, _ api.Module, stack []uint64) {
	var now int64
	if st := stateOf(ctx); st != nil {
		now = st.now
	}
	stack[0] = uint64(now)
}

func wasiNoop(_ context.Context, _ api.Module, stack []uint64) {
	if len(stack) > 0 {
		stack[0] = errnoSuccess
	}
}

func wasiErr(errno uint64) api.GoModuleFunc {
	return func(_ context.Context, _ api.Module, stack []uint64) { stack[0] = errno }
}

func wasiZeroSizes(_ context.Context, m api.Module, stack []uint64) {
	if !m.Memory().WriteUint32Le(uint32(stack[0]), 0) || !m.Memory().WriteUint32Le(uint32(stack[1]), 0) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

// wasiClock answers the realtime clock with the end of the batch's
// latest window and the monotonic clock with mono.
func wasiClock(ctx context.Context, m api.Module, stack []uint64, mono *atomic.Int64) {
	var now int64
	switch uint32(stack[0]) { // the upper half of an i32 slot is undefined
	case 0: // realtime
		if st := stateOf(ctx); st != nil {
			now = st.now
		}
	case 1: // monotonic
		now = mono.Add(1000)
	default:
		stack[0] = errnoInval
		return
	}
	if !m.Memory().WriteUint64Le(uint32(stack[2]), uint64(now)) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

// wasiRandom fills the buffer from a fixed-seed splitmix64 stream: guests
// (the Go runtime seeds its maps with it) get bytes, pricing stays
// deterministic.
func wasiRandom(_ context.Context, m api.Module, stack []uint64) {
	buf, ok := m.Memory().Read(uint32(stack[0]), uint32(stack[1]))
	if !ok {
		stack[0] = errnoFault
		return
	}
	x := uint64(0x6b6d65746572) // "kmeter"
	var w [8]byte
	for i := 0; i < len(buf); i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(w[:], z^(z>>31))
		copy(buf[i:], w[:])
	}
	stack[0] = errnoSuccess
}

// wasiFdWrite sends stdout and stderr to the host log (rate-limited) and
// refuses every other descriptor.
func wasiFdWrite(ctx context.Context, m api.Module, stack []uint64) {
	fd, iovs, n, written := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	if fd != 1 && fd != 2 {
		stack[0] = errnoBadf
		return
	}
	mem := m.Memory()
	var total uint32
	for i := uint32(0); i < n; i++ {
		ptr, ok1 := mem.ReadUint32Le(iovs + 8*i)
		l, ok2 := mem.ReadUint32Le(iovs + 8*i + 4)
		if !ok1 || !ok2 {
			stack[0] = errnoFault
			return
		}
		b, ok := mem.Read(ptr, l)
		if !ok {
			stack[0] = errnoFault
			return
		}
		stateOf(ctx).log(int32(fd), b)
		total += l
	}
	if !mem.WriteUint32Le(written, total) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

func wasiProcExit(ctx context.Context, m api.Module, stack []uint64) {
	code := uint32(stack[0])
	_ = m.CloseWithExitCode(ctx, code)
	panic(sys.NewExitError(code))
}

package plugin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/kmeter/kmeter/internal/pricing"
	"github.com/kmeter/kmeter/sdk/go/abi"
)

// instance is one instantiated plugin module. It is used by one batch at
// a time.
type instance struct {
	mod   api.Module
	mem   api.Memory
	alloc api.Function
	price api.Function
	event api.Function // nil when the plugin has no kmeter_on_event
	enc   encoder
	cur   abi.CurrencyCache
	stack [2]uint64
	// inPtr and inCap describe the input buffer the guest handed out at
	// the last kmeter_alloc call.
	inPtr uint32
	inCap int
}

// newInstance instantiates v's module. With checkVersion (the first
// instance of each loaded module) it checks the ABI version before any ABI
// function runs; later instances are the same code in the same initial
// state, so they skip that call and its stack. No guest code runs at instantiation (start
// functions are refused, see scanSections); a WASI reactor's _initialize
// (the Go runtime's init) runs first because its exports abort until it
// has, and it can reach only the safe host imports.
func (v *version) newInstance(ctx context.Context, checkVersion bool) (*instance, error) {
	ctx = v.e.instCtx(ctx)
	if v.usesHost || v.hasInit {
		// Let _initialize log (a Go runtime's fatal error goes to fd 2).
		ctx = context.WithValue(ctx, callStateKey{}, &callState{sha: v.id.SHA256, logger: v.e.cfg.Logger})
	}
	mod, err := v.e.rt.InstantiateModule(ctx, v.compiled, v.e.modCfg)
	if err != nil {
		return nil, fmt.Errorf("instantiate plugin %s: %w", short(v.id.SHA256), err)
	}
	in := &instance{
		mod:   mod,
		mem:   mod.Memory(),
		alloc: mod.ExportedFunction(exportAlloc),
		price: mod.ExportedFunction(exportPrice),
	}
	if v.hasEvent {
		in.event = mod.ExportedFunction(exportEvent)
	}
	if v.hasInit {
		cctx, cancel := v.e.guestCtx(ctx, v.e.cfg.CallTimeout*4)
		err := mod.ExportedFunction(exportInit).CallWithStack(cctx, in.stack[:])
		cancel()
		if err != nil {
			in.close(ctx)
			return nil, fmt.Errorf("%w: %s: %v", ErrRefused, exportInit, err)
		}
	}
	if !checkVersion {
		return in, nil
	}
	cctx, cancel := v.e.guestCtx(ctx, v.e.cfg.CallTimeout)
	err = in.mod.ExportedFunction(exportVersion).CallWithStack(cctx, in.stack[:])
	cancel()
	if err != nil {
		in.close(ctx)
		return nil, fmt.Errorf("%w: call %s: %v", ErrRefused, exportVersion, err)
	}
	if got := int32(in.stack[0]); got != abi.Version {
		in.close(ctx)
		return nil, fmt.Errorf("%w: %s returned %d, this host speaks ABI %d: rebuild the plugin with a matching SDK", ErrRefused, exportVersion, got, abi.Version)
	}
	return in, nil
}

func (in *instance) close(ctx context.Context) { _ = in.mod.Close(ctx) }

// call prices recs in one guest call (or one kmeter_on_event call when
// event is set and the plugin exports it) and appends one charge per
// record to dst. Any error leaves dst as it was and means the instance
// must be discarded.
func (in *instance) call(ctx context.Context, st *callState, recs []pricing.Record, event bool, dst []pricing.Charge) ([]pricing.Charge, error) {
	n := len(recs)
	hs := headSize(n)
	// The header and records go straight into the input buffer from the
	// last kmeter_alloc when they fit in it; the deduplicated attributes
	// and strings follow once their size is known. Guest memory never
	// shrinks, so a buffer that was inside it still is.
	var head []byte
	direct := hs <= in.inCap
	if direct {
		head, direct = in.mem.Read(in.inPtr, uint32(hs))
	}
	if !direct {
		in.enc.head = slices.Grow(in.enc.head[:0], hs)[:hs]
		head = in.enc.head
	}
	if err := in.enc.encode(head, recs); err != nil {
		return dst, fmt.Errorf("encode batch: %w", err)
	}
	size := in.enc.size(n)
	if st != nil {
		st.now = in.enc.now
		ctx = context.WithValue(ctx, callStateKey{}, st)
	}
	// The input buffer from an earlier kmeter_alloc is reused while the
	// batch fits: one guest call per batch in the steady state.
	if size > in.inCap {
		if direct {
			// kmeter_alloc may write anywhere in guest memory: keep the
			// records on the host side while it runs.
			in.enc.head = append(in.enc.head[:0], head...)
			head = in.enc.head
		}
		in.stack[0] = uint64(size)
		if err := in.alloc.CallWithStack(ctx, in.stack[:]); err != nil {
			return dst, classify(ctx, exportAlloc, err)
		}
		in.inPtr, in.inCap = uint32(in.stack[0]), 0
		if in.inPtr == 0 {
			return dst, fmt.Errorf("%w: %s(%d) returned 0: out of memory (cap %d pages)", ErrBadOutput, exportAlloc, size, in.mem.Size()/65536)
		}
		buf, ok := in.mem.Read(in.inPtr, uint32(size))
		if !ok {
			return dst, fmt.Errorf("%w: %s(%d) returned %#x, outside memory (%d bytes)", ErrBadOutput, exportAlloc, size, in.inPtr, in.mem.Size())
		}
		in.inCap = size
		copy(buf, head)
	}
	ptr := in.inPtr
	buf, ok := in.mem.Read(ptr, uint32(size))
	if !ok {
		in.inCap = 0
		return dst, fmt.Errorf("%w: input buffer %#x+%d lies outside memory (%d bytes)", ErrBadOutput, ptr, size, in.mem.Size())
	}
	in.enc.place(buf, n)
	fn := in.price
	if event && in.event != nil {
		fn = in.event
	}
	in.stack[0], in.stack[1] = uint64(ptr), uint64(size)
	if err := fn.CallWithStack(ctx, in.stack[:]); err != nil {
		return dst, classify(ctx, fn.Definition().Name(), err)
	}
	res := int64(in.stack[0])
	if res < 0 {
		return dst, fmt.Errorf("%w: plugin error code %d (%s)", ErrBadOutput, res, codeName(res))
	}
	outPtr, outLen := uint32(res>>32), uint32(res)
	if want := abi.ChargesSize(len(recs)); int(outLen) != want {
		return dst, fmt.Errorf("%w: %d bytes of charges for %d records, want exactly %d", ErrBadOutput, outLen, len(recs), want)
	}
	out, ok := in.mem.Read(outPtr, outLen)
	if !ok {
		return dst, fmt.Errorf("%w: charges at %#x+%d lie outside guest memory (%d bytes)", ErrBadOutput, outPtr, outLen, in.mem.Size())
	}
	return decodeCharges(out, len(recs), &in.cur, dst)
}

// decodeCharges validates the guest's charges and appends them to dst;
// on any error dst is returned unchanged, so no partial charges escape.
func decodeCharges(b []byte, n int, cur *abi.CurrencyCache, dst []pricing.Charge) ([]pricing.Charge, error) {
	le := binary.LittleEndian
	if len(b) != abi.ChargesSize(n) || le.Uint32(b) != abi.ChargesMagic || int(le.Uint32(b[4:])) != n {
		return dst, fmt.Errorf("%w: charges are not a KMC1 block of %d charges", ErrBadOutput, n)
	}
	base := len(dst)
	grown := slices.Grow(dst, n)
	out := grown[base : base+n]
	src := b[abi.ChargesHeader:]
	var code uint64 // currency field of the previous charge, and its string
	var currency string
	for i := 0; i < n; {
		// Fast path: valid amounts in the previous charge's currency. It
		// makes no calls, so its state stays in registers.
		for ; i < n; i++ {
			cb := (*[abi.ChargeSize]byte)(src[i*abi.ChargeSize:])
			amt, ven := int64(le.Uint64(cb[0:])), int64(le.Uint64(cb[8:]))
			if amt < 0 || uint64(ven) > uint64(amt) || le.Uint64(cb[16:]) != code || len(currency) == 0 {
				break
			}
			out[i] = pricing.Charge{AmountMicro: amt, Currency: currency, VendorMicro: ven}
		}
		if i == n {
			break
		}
		// Slow path: a new currency, or an invalid charge.
		cb := (*[abi.ChargeSize]byte)(src[i*abi.ChargeSize:])
		amt, ven := int64(le.Uint64(cb[0:])), int64(le.Uint64(cb[8:]))
		if amt < 0 || ven < 0 || ven > amt {
			return dst, fmt.Errorf("%w: charge %d: %v", ErrBadOutput, i, abi.CheckCharge(amt, ven))
		}
		c, ok := cur.Parse(cb[16:24])
		if !ok {
			return dst, fmt.Errorf("%w: charge %d: currency %q is not a three-letter ISO 4217 code", ErrBadOutput, i, cb[16:24])
		}
		code, currency = le.Uint64(cb[16:]), c
		out[i] = pricing.Charge{AmountMicro: amt, Currency: currency, VendorMicro: ven}
		i++
	}
	return grown[:base+n], nil
}

// classify turns a guest call error into ErrTimeout or ErrTrap.
func classify(ctx context.Context, fn string, err error) error {
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			return fmt.Errorf("%w: %s: %v", ErrTimeout, fn, err)
		}
	}
	// The call guard stops a guest at a function entry with the context's
	// own error.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %s: %v", ErrTimeout, fn, firstLine(err))
	}
	if errors.Is(err, errCallDepth) {
		return fmt.Errorf("%w: %s: %v", ErrTrap, fn, firstLine(err))
	}

	return fmt.Errorf("%w: %s: %v", ErrTrap, fn, err)
}

func codeName(c int64) string {
	switch c {
	case -1:
		return "malformed input"
	case -2:
		return "refused by plugin"
	case -3:
		return "out of memory"
	case -4:
		return "overflow"
	}
	return "plugin-defined"
}

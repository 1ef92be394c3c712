package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// errCallDepth is what the call guard panics with when a guest nests
// calls deeper than Config.MaxCallDepth; wazero returns the panic value,
// wrapped, as the call's error.
var errCallDepth = errors.New("guest call depth limit exceeded")

type guardKey struct{}

// guardState follows one call into the guest.
type guardState struct {
	ctx        context.Context // the call's context, for its deadline
	depth, max int
}

// callGuard is a wazero function listener that runs on entry to and exit
// from every guest function. wazero stops a guest at its deadline only at
// loop headers, so a guest that recurses without looping would run until
// wazero's stack ceiling (about a second and 160 MB, docs/plugin-abi.md).
// Checking the deadline and the call depth on every function entry closes
// that gap: a guest that neither loops nor calls runs straight-line code
// bounded by its size.
type callGuard struct{}

func (callGuard) NewFunctionListener(api.FunctionDefinition) experimental.FunctionListener {
	return callGuard{}
}

func (callGuard) Before(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	g, _ := ctx.Value(guardKey{}).(*guardState)
	if g == nil {
		return
	}
	g.depth++
	if g.depth > g.max {
		panic(fmt.Errorf("%w (%d nested calls)", errCallDepth, g.max))
	}
	if err := g.ctx.Err(); err != nil {
		panic(err)
	}
}

func (callGuard) After(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64) {
	if g, _ := ctx.Value(guardKey{}).(*guardState); g != nil {
		g.depth--
	}
}

func (callGuard) Abort(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ error) {
	if g, _ := ctx.Value(guardKey{}).(*guardState); g != nil {
		g.depth--
	}
}

// guestCtx returns the context for one call into the guest: ctx with a
// deadline d from now and the call guard's state.
func (e *Engine) guestCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, d)
	return context.WithValue(ctx, guardKey{}, &guardState{ctx: ctx, max: e.cfg.MaxCallDepth}), cancel
}

// firstLine drops the wasm stack trace wazero appends to a recovered
// panic: the first line says what happened.
func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

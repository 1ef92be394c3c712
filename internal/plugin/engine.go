package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"

	"github.com/kmeter/kmeter/internal/audit"
	"github.com/kmeter/kmeter/internal/plugin/licence"
	"github.com/kmeter/kmeter/internal/pricing"
)

// Engine prices batches with one live plugin and, optionally, a shadow
// candidate. It implements [pricing.Pricer] and is safe for concurrent
// use. Replacing the live plugin ([Engine.Load]) never interrupts a batch:
// a batch is priced entirely by the version that was live when it started.
type Engine struct {
	cfg    Config
	rt     wazero.Runtime
	cache  wazero.CompilationCache
	modCfg wazero.ModuleConfig
	mem    *memoryPool
	stats  *stats
	mono   atomic.Int64 // WASI monotonic clock, see instantiateHostModules

	// loadMu serialises going live, so each audit entry names the version
	// that was really replaced.
	loadMu sync.Mutex
	mu     sync.RWMutex
	live   *version
	shadow *version
	closed bool

	shadowQ   chan shadowJob
	bg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// version is one loaded plugin module with its pool of warm instances.
type version struct {
	e        *Engine
	id       Identity
	compiled wazero.CompiledModule
	hasEvent bool
	hasInit  bool
	usesHost bool
	// calls enforces the licence's max_calls for this load of the module.
	calls     *licence.Counter
	exhausted atomic.Bool // the first licence refusal was logged

	pool    chan *instance
	refill  chan struct{}
	stop    context.CancelFunc
	users   sync.WaitGroup // batches in flight
	fillers sync.WaitGroup
}

// New creates an engine with no plugin loaded; call [Engine.Load] next.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rc := wazero.NewRuntimeConfigCompiler().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(cfg.MemoryLimitPages)
	e := &Engine{cfg: cfg, stats: newStats(), shadowQ: make(chan shadowJob, 1)}
	if cfg.CacheDir != "" {
		if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("create plugin compilation cache dir: %w", err)
		}
		cache, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("open plugin compilation cache %s: %w", cfg.CacheDir, err)
		}
		e.cache = cache
		rc = rc.WithCompilationCache(cache)
	}
	e.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	if err := instantiateHostModules(ctx, e.rt, &e.mono); err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("define plugin host modules: %w", err)
	}
	// Anonymous instances (name "") may coexist; no start functions run
	// implicitly; no args, env, files or real clocks.
	// The sys context's random source is never reachable by guests (WASI
	// comes from our own host module); a constant reader saves seeding a
	// math/rand source on every instantiation.
	e.modCfg = wazero.NewModuleConfig().WithName("").WithStartFunctions().WithRandSource(zeroReader{})
	e.mem = newMemoryPool(4 * (cfg.PoolSize + 2))
	e.bg.Add(1)
	go e.shadowLoop()
	return e, nil
}

// instCtx adds the pooled memory allocator to ctx for instantiation.
func (e *Engine) instCtx(ctx context.Context) context.Context {
	return experimental.WithMemoryAllocator(ctx, e.mem)
}

// Load verifies, compiles and checks module, warms its instance pool and
// makes it the live plugin. Batches already running finish on the old
// version. With Config.Audit set, the load (or swap, naming the replaced
// sha256) is recorded before the version goes live, and a verified module
// the engine refuses is recorded as rejected. On any error the live
// plugin is unchanged and the error wraps ErrRefused when the module
// itself was at fault.
func (e *Engine) Load(ctx context.Context, module []byte) (Identity, error) {
	return e.load(ctx, module, "")
}

// load is Load for a module read from path ("" when it came as bytes);
// the path names the plugin in the audit log.
func (e *Engine) load(ctx context.Context, module []byte, path string) (Identity, error) {
	v, err := e.prepare(ctx, module, path)
	if err != nil {
		e.stats.loadFailures.Add(1)
		return Identity{}, err
	}
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	entry := audit.Entry{Event: audit.EventLoad, Plugin: path, SHA256: v.id.SHA256, Signer: v.id.Signer, Licensee: licensee(v.id)}
	if old, ok := e.Live(); ok {
		entry.Event, entry.Replaces = audit.EventSwap, old.SHA256
	}
	// The record comes first: a version that cannot be recorded never
	// prices anything.
	if err := e.record(ctx, entry); err != nil {
		v.retire()
		e.stats.loadFailures.Add(1)
		return Identity{}, fmt.Errorf("plugin %s: %w; the previous plugin keeps serving", short(v.id.SHA256), err)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		v.retire()
		return Identity{}, ErrClosed
	}
	old := e.live
	e.live = v
	e.mu.Unlock()
	e.stats.loads.Add(1)
	if old != nil {
		old.retire()
	}
	return v.id, nil
}

// record appends e to the audit log, when there is one.
func (e *Engine) record(ctx context.Context, entry audit.Entry) error {
	if e.cfg.Audit == nil {
		return nil
	}
	if _, err := e.cfg.Audit.Append(context.WithoutCancel(ctx), entry); err != nil {
		return fmt.Errorf("record plugin %s in the audit log: %w", entry.Event, err)
	}
	return nil
}

// licensee returns the licence holder the trust verifier attached, if any.
func licensee(id Identity) string {
	if l, ok := id.Licence.(licence.Licence); ok {
		return l.Licensee
	}
	return ""
}

// LoadFile is [Engine.Load] for a module file.
func (e *Engine) LoadFile(ctx context.Context, path string) (Identity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Identity{}, fmt.Errorf("read plugin: %w", err)
	}
	id, err := e.load(ctx, b, path)
	if err != nil {
		return Identity{}, fmt.Errorf("load plugin %s: %w", path, err)
	}
	return id, nil
}

// Live returns the identity of the live plugin and false when none is
// loaded.
func (e *Engine) Live() (Identity, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.live == nil {
		return Identity{}, false
	}
	return e.live.id, true
}

// prepare builds a ready version of module without publishing it.
func (e *Engine) prepare(ctx context.Context, module []byte, path string) (*version, error) {
	id, err := e.cfg.Verifier.Verify(ctx, module)
	if err != nil {
		return nil, fmt.Errorf("%w: verify: %w", ErrRefused, err)
	}
	if id.SHA256 == "" {
		id.SHA256 = SHA256Hex(module)
	}
	if isUnsigned(e.cfg.Verifier) {
		e.cfg.Logger.Warn("loading UNSIGNED plugin: signature and licence checks are off (plugin.AllowUnsigned is for development only)", "plugin_sha256", id.SHA256)
	}
	v, err := e.build(ctx, id, module)
	if err != nil {
		// The verifier recorded its acceptance; record that the engine
		// still refused the module, and why.
		if aerr := e.record(ctx, audit.Entry{Event: audit.EventReject, Plugin: path, SHA256: id.SHA256, Signer: id.Signer, Licensee: licensee(id), Reason: err.Error()}); aerr != nil {
			err = errors.Join(err, aerr)
		}
		return nil, err
	}
	return v, nil
}

// build compiles and checks a verified module and warms its pool.
func (e *Engine) build(ctx context.Context, id Identity, module []byte) (*version, error) {
	if err := scanSections(module); err != nil {
		return nil, err
	}
	// Every guest function gets the call guard (depth and deadline).
	cctx := experimental.WithFunctionListenerFactory(ctx, callGuard{})
	if e.cfg.noCallGuard {
		cctx = ctx
	}
	compiled, err := e.rt.CompileModule(cctx, module)
	if err != nil {
		return nil, fmt.Errorf("%w: compile: %v", ErrRefused, err)
	}
	v := &version{e: e, id: id, compiled: compiled, calls: licence.NewCounter(id.MaxCalls)}
	v.hasEvent, v.hasInit, v.usesHost, err = checkModule(compiled)
	if err != nil {
		_ = compiled.Close(ctx)
		return nil, err
	}
	// The first instance proves the module instantiates and speaks our
	// ABI before it can price anything.
	first, err := v.newInstance(ctx, true)
	if err != nil {
		_ = compiled.Close(ctx)
		if !errors.Is(err, ErrRefused) {
			err = fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return nil, err
	}
	var st *callState
	if v.usesHost {
		st = &callState{sha: id.SHA256, logger: e.cfg.Logger}
	}
	cctx, cancel := e.guestCtx(ctx, e.cfg.CallTimeout)
	_, err = first.call(cctx, st, e.cfg.Canary, false, nil)
	cancel()
	if err != nil {
		first.close(ctx)
		_ = compiled.Close(ctx)
		return nil, fmt.Errorf("%w: canary batch: %w", ErrRefused, err)
	}
	v.pool = make(chan *instance, max(e.cfg.PoolSize, 1))
	v.refill = make(chan struct{}, 1)
	if e.cfg.Isolate {
		first.close(ctx) // it has priced the canary: no longer pristine
	} else {
		v.pool <- first
	}
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	v.stop = stop
	v.fillers.Add(1)
	go v.fill(fctx)
	v.kick()
	return v, nil
}

// fill keeps v's pool full in the background so batches find warm
// instances.
func (v *version) fill(ctx context.Context) {
	defer v.fillers.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.refill:
		}
		for len(v.pool) < cap(v.pool) && ctx.Err() == nil {
			in, err := v.newInstance(ctx, false)
			if err != nil {
				if ctx.Err() == nil {
					v.e.cfg.Logger.Error("warm plugin instance", "plugin_sha256", v.id.SHA256, "err", err)
				}
				break
			}
			select {
			case v.pool <- in:
			default:
				in.close(ctx)
			}
		}
	}
}

func (v *version) kick() {
	select {
	case v.refill <- struct{}{}:
	default:
	}
}

// get returns a warm instance, or a new one when the pool is empty.
func (v *version) get(ctx context.Context) (*instance, error) {
	select {
	case in := <-v.pool:
		if v.e.cfg.Isolate {
			v.kick() // this instance will not come back
		}
		return in, nil
	default:
	}
	v.e.stats.poolMisses.Add(1)
	v.kick()
	return v.newInstance(ctx, false)
}

// put returns a healthy instance to the pool.
func (v *version) put(ctx context.Context, in *instance) {
	if v.e.cfg.Isolate {
		go in.close(context.WithoutCancel(ctx))
		return
	}
	select {
	case v.pool <- in:
	default:
		in.close(ctx)
	}
}

// retire stops v once its last batch is done and frees its instances.
func (v *version) retire() {
	v.stop()
	go func() {
		v.fillers.Wait()
		v.users.Wait()
		v.drain()
	}()
}

func (v *version) drain() {
	ctx := context.Background()
	for {
		select {
		case in := <-v.pool:
			in.close(ctx)
		default:
			_ = v.compiled.Close(ctx)
			return
		}
	}
}

// acquire returns the live version (or the shadow) with a batch counted
// in flight; release with v.users.Done().
func (e *Engine) acquire(shadow bool) (*version, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return nil, ErrClosed
	}
	v := e.live
	if shadow {
		v = e.shadow
	}
	if v == nil {
		return nil, ErrNoPlugin
	}
	v.users.Add(1)
	return v, nil
}

// Price implements [pricing.Pricer]: one guest call prices the whole
// batch. On any error (trap, timeout, bad output, bad input, licence
// exhausted) it returns no charges; the caller holds the batch and
// retries, and the live plugin keeps serving.
func (e *Engine) Price(ctx context.Context, recs []pricing.Record) (pricing.Result, error) {
	return e.PriceAppend(ctx, recs, make([]pricing.Charge, 0, len(recs)))
}

// PriceAppend implements [pricing.Appender]: [Engine.Price] with the
// charges appended to dst, so a caller that reuses its buffer allocates
// nothing per batch. On error dst's contents are untouched.
func (e *Engine) PriceAppend(ctx context.Context, recs []pricing.Record, dst []pricing.Charge) (pricing.Result, error) {
	v, err := e.acquire(false)
	if err != nil {
		return pricing.Result{}, err
	}
	defer v.users.Done()
	charges, err := e.priceWith(ctx, v, recs, false, false, dst)
	if err != nil {
		return pricing.Result{}, fmt.Errorf("price batch of %d records with plugin %s: %w", len(recs), short(v.id.SHA256), err)
	}
	res := pricing.Result{Charges: charges, PluginSHA256: v.id.SHA256}
	e.offerShadow(recs, pricing.Result{Charges: charges[len(dst):], PluginSHA256: v.id.SHA256})
	return res, nil
}

// PriceEvent prices one streamed record with the plugin's
// kmeter_on_event handler, or with kmeter_price when the plugin has none.
func (e *Engine) PriceEvent(ctx context.Context, rec pricing.Record) (pricing.Charge, string, error) {
	v, err := e.acquire(false)
	if err != nil {
		return pricing.Charge{}, "", err
	}
	defer v.users.Done()
	cs, err := e.priceWith(ctx, v, []pricing.Record{rec}, true, false, make([]pricing.Charge, 0, 1))
	if err != nil {
		return pricing.Charge{}, "", fmt.Errorf("price event with plugin %s: %w", short(v.id.SHA256), err)
	}
	return cs[0], v.id.SHA256, nil
}

// priceWith prices recs on one instance of v. Shadow batches (counted
// separately by the caller) leave the live counters alone.
func (e *Engine) priceWith(ctx context.Context, v *version, recs []pricing.Record, event, shadow bool, dst []pricing.Charge) ([]pricing.Charge, error) {
	if len(recs) > e.cfg.MaxRecords {
		return dst, fmt.Errorf("%d records, more than MaxRecords %d: split the batch", len(recs), e.cfg.MaxRecords)
	}
	start := time.Now()
	in, err := v.get(ctx)
	if err != nil {
		if !shadow {
			e.stats.failed(err)
		}
		return dst, err
	}
	if err := v.takeCall(); err != nil {
		v.put(ctx, in)
		if !shadow {
			e.stats.failed(err)
		}
		return dst, err
	}
	cctx, cancel := e.guestCtx(ctx, e.cfg.CallTimeout)
	var st *callState
	if v.usesHost {
		st = &callState{sha: v.id.SHA256, logger: e.cfg.Logger}
	}
	out, err := in.call(cctx, st, recs, event, dst)
	cancel()
	if err != nil {
		// The instance may hold broken state or be closed already.
		in.close(context.WithoutCancel(ctx))
		v.kick()
		if !shadow {
			e.stats.failed(err)
		}
		return dst, err
	}
	v.put(ctx, in)
	if !shadow {
		e.stats.ok(len(recs), time.Since(start))
	}
	return out, nil
}

// takeCall charges one guest call to v's licence.
func (v *version) takeCall() error {
	err := v.calls.Take()
	if err == nil {
		return nil
	}
	l, _ := v.id.Licence.(licence.Licence)
	err = fmt.Errorf("%w: licence of %q from publisher %q: %w; ask the publisher to renew the licence (raise max_calls) and load the re-signed module",
		ErrLicenceExhausted, l.Licensee, l.Publisher, err)
	if !v.exhausted.Swap(true) {
		v.e.cfg.Logger.Error("plugin licence exhausted: every batch fails until a renewed module is loaded", "plugin_sha256", v.id.SHA256, "max_calls", v.id.MaxCalls, "err", err)
	}
	return err
}

// Close stops the engine and frees every instance. Batches in flight
// finish first. It is idempotent.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		live, shadow := e.live, e.shadow
		e.live, e.shadow = nil, nil
		e.mu.Unlock()
		for _, v := range []*version{live, shadow} {
			if v != nil {
				v.stop()
				v.fillers.Wait()
				v.users.Wait()
				v.drain()
			}
		}
		close(e.shadowQ)
		e.bg.Wait()
		ctx := context.Background()
		var errs []error
		if e.rt != nil {
			errs = append(errs, e.rt.Close(ctx))
		}
		if e.cache != nil {
			errs = append(errs, e.cache.Close(ctx))
		}
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

var _ pricing.Appender = (*Engine)(nil)

package plugin

import (
	"context"
	"fmt"

	"github.com/kmeter/kmeter/internal/audit"
	"github.com/kmeter/kmeter/internal/pricing"
)

// ShadowReport compares one batch priced by the live plugin with the
// same batch priced by the shadow candidate. The candidate's charges are
// never billed.
type ShadowReport struct {
	LiveSHA256      string
	CandidateSHA256 string
	Records         int
	// Differing is the number of records whose charge differs (amount,
	// vendor share or currency).
	Differing int
	// LiveTotalMicro and CandidateTotalMicro sum AmountMicro over the
	// batch, whatever the currencies.
	LiveTotalMicro      int64
	CandidateTotalMicro int64
	// Err is set when the candidate failed the batch.
	Err error
}

type shadowJob struct {
	recs []pricing.Record
	live pricing.Result
}

// SetShadow loads module as a shadow candidate: from now on every batch
// the live plugin prices is also priced by the candidate in the
// background and compared, and Config.OnShadow receives the report. The
// candidate never bills. Promote it with [Engine.Load], drop it with
// [Engine.ClearShadow].
func (e *Engine) SetShadow(ctx context.Context, module []byte) (Identity, error) {
	v, err := e.prepare(ctx, module, "")
	if err != nil {
		e.stats.loadFailures.Add(1)
		return Identity{}, fmt.Errorf("load shadow plugin: %w", err)
	}
	// A candidate runs guest code on real usage, so it is on the record
	// even though it never bills.
	entry := audit.Entry{Event: audit.EventLoad, SHA256: v.id.SHA256, Signer: v.id.Signer, Licensee: licensee(v.id), Reason: "shadow candidate: prices in the background, never bills"}
	if err := e.record(ctx, entry); err != nil {
		v.retire()
		e.stats.loadFailures.Add(1)
		return Identity{}, fmt.Errorf("load shadow plugin %s: %w", short(v.id.SHA256), err)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		v.retire()
		return Identity{}, ErrClosed
	}
	old := e.shadow
	e.shadow = v
	e.mu.Unlock()
	if old != nil {
		old.retire()
	}
	return v.id, nil
}

// ClearShadow stops shadow pricing.
func (e *Engine) ClearShadow() {
	e.mu.Lock()
	old := e.shadow
	e.shadow = nil
	e.mu.Unlock()
	if old != nil {
		old.retire()
	}
}

// offerShadow queues a priced batch for comparison when a shadow is set.
// It never blocks the live path: when the comparison worker is busy the
// batch is skipped and counted as dropped.
func (e *Engine) offerShadow(recs []pricing.Record, live pricing.Result) {
	e.mu.RLock()
	has := e.shadow != nil && !e.closed
	if !has {
		e.mu.RUnlock()
		return
	}
	if len(e.shadowQ) == cap(e.shadowQ) { // busy: skip the copies below
		e.stats.shadowDropped.Add(1)
		e.mu.RUnlock()
		return
	}
	// The worker gets its own copies of the records and charges: callers
	// may reuse theirs once Price or PriceAppend returns.
	live.Charges = append([]pricing.Charge(nil), live.Charges...)
	select {
	case e.shadowQ <- shadowJob{recs: append([]pricing.Record(nil), recs...), live: live}:
	default:
		e.stats.shadowDropped.Add(1)
	}
	e.mu.RUnlock()
}

func (e *Engine) shadowLoop() {
	defer e.bg.Done()
	for job := range e.shadowQ {
		e.compareShadow(job)
	}
}

func (e *Engine) compareShadow(job shadowJob) {
	v, err := e.acquire(true)
	if err != nil {
		return // shadow cleared meanwhile
	}
	defer v.users.Done()
	rep := ShadowReport{LiveSHA256: job.live.PluginSHA256, CandidateSHA256: v.id.SHA256, Records: len(job.recs)}
	cs, err := e.priceWith(context.Background(), v, job.recs, false, true, make([]pricing.Charge, 0, len(job.recs)))
	for _, c := range job.live.Charges {
		rep.LiveTotalMicro += c.AmountMicro
	}
	if err != nil {
		rep.Err = err
		rep.Differing = len(job.recs)
	} else {
		for i, c := range cs {
			rep.CandidateTotalMicro += c.AmountMicro
			if c != job.live.Charges[i] {
				rep.Differing++
			}
		}
	}
	e.stats.shadowBatches.Add(1)
	if rep.Differing > 0 {
		e.stats.shadowDiffs.Add(1)
	}
	if e.cfg.OnShadow != nil {
		e.cfg.OnShadow(rep)
	}
}

package handlers

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"rollbot/state"
)

// ItemState is where one verification item stands.
type ItemState string

const (
	ItemPending ItemState = "pending"
	ItemPass    ItemState = "pass"
	ItemFail    ItemState = "fail"
	ItemSkipped ItemState = "not configured"
)

// VerifyItem is one row of the runbook §5 checklist.
type VerifyItem struct {
	Name   string
	State  ItemState
	Detail string
	At     time.Time // when it turned green
}

// Verification is the checklist and its verdict.
type Verification struct {
	Items    []VerifyItem
	Started  time.Time
	Finished time.Time
	Done     bool
}

// Passed reports whether every configured item passed.
func (v *Verification) Passed() bool {
	for _, it := range v.Items {
		if it.State != ItemPass && it.State != ItemSkipped {
			return false
		}
	}
	return true
}

// verifyStep is runbook §5: post the checklist, poll every item until all
// pass or the timeout, tick items live with their times, end with a
// verdict. A pass runs the post-rollback actions (§6) while the incident
// is still owned, then completes it; a failure goes to the failure path.
func (e *Engine) verifyStep(ctx context.Context, o *owned) error {
	in, svc := o.in, o.svc
	if in.Steps["verify"] == "passed" { // taken over after the verdict
		return e.complete(ctx, o)
	}
	if err := e.recordOwned(ctx, o, "verify", "verifying for up to "+window(e.opt.VerifyTimeout)); err != nil {
		return err
	}
	v := &Verification{Started: e.now(), Items: []VerifyItem{
		{Name: "All pods healthy"},
		{Name: "Health checks passing"},
		{Name: "Error rate < baseline"},
		{Name: "Latency p95 normal"},
		{Name: "Critical user flows working"},
	}}
	for i := range v.Items {
		v.Items[i].State = ItemPending
	}
	if !svc.HasHealth {
		v.Items[1].State, v.Items[1].Detail = ItemSkipped, "no health_urls configured"
	}
	if !svc.HasSmoke {
		v.Items[4].State, v.Items[4].Detail = ItemSkipped, "no smoke_test configured"
	}
	if svc.Metrics == nil {
		v.Items[2].State, v.Items[2].Detail = ItemFail, "no metrics source configured: check the error rate by hand"
		v.Items[3].State, v.Items[3].Detail = ItemFail, "no metrics source configured: check latency by hand"
	}
	ts := e.post(ctx, in.Channel, in.ThreadTS, verifyMsg(in, v))
	e.setMessage(ctx, o, "verify", ts)
	live := newLiveMessage(ctx, e.chat, in.Channel, ts, e.opt.UpdateInterval, nil)

	since := e.now()
	base := &baselines{errRatio: math.NaN(), p95: math.NaN()}
	deadline := since.Add(e.opt.VerifyTimeout)
	// A rollback of a GitOps-owned workload is watched for the bad
	// version coming back (someone resumed the sync) all through.
	watch, said := in.OwnerPause != nil || in.Steps["owner"] == ownerOverridden, false
	for {
		e.verifyRound(ctx, svc, in, v, since, base)
		if watch {
			e.watchBadVersion(ctx, o, v, &said)
		}
		if v.Passed() || !e.now().Before(deadline) || ctx.Err() != nil {
			break
		}
		live.Set(verifyMsg(in, v))
		t := time.NewTimer(e.opt.VerifyInterval)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if ctx.Err() != nil { // over budget or interrupted: show where it stood
		live.Close(verifyMsg(in, v))
		return ctx.Err()
	}
	for i := range v.Items {
		if v.Items[i].State == ItemPending {
			v.Items[i].State = ItemFail
			if v.Items[i].Detail == "" {
				v.Items[i].Detail = "no answer before the timeout"
			}
		}
	}
	v.Done, v.Finished = true, e.now()
	live.Close(verifyMsg(in, v))

	if !v.Passed() {
		return failf("%s", verifySummary(v))
	}
	if err := e.recordOwned(ctx, o, "verify", "verified: "+verifySummary(v)); err != nil {
		return err
	}
	if err := e.setStep(ctx, o, "verify", "passed"); err != nil {
		return err
	}
	return e.complete(ctx, o)
}

func verifySummary(v *Verification) string {
	var parts []string
	for _, it := range v.Items {
		s := it.Name + " " + string(it.State)
		if it.Detail != "" && it.State != ItemPass {
			s += " (" + it.Detail + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// baselines are the numbers from before the bad deploy that verification
// compares against. A query that fails is tried again next round, so one
// blip of the metrics source does not fail the verification.
type baselines struct {
	errRatio float64 // NaN until known
	p95      float64 // NaN until known
	p95Err   error
}

// refresh fetches whichever baseline is not known yet, each query under
// its own timeout.
func (e *Engine) refreshBaselines(ctx context.Context, svc *Service, deployedAt time.Time, b *baselines) {
	if math.IsNaN(b.errRatio) && !deployedAt.IsZero() {
		qctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
		m, err := svc.Metrics.ErrorRatio(qctx, deployedAt.Add(-svc.BaselineWindow), deployedAt)
		cancel()
		if err == nil && !m.NoData {
			b.errRatio = m.Value
		}
	}
	if math.IsNaN(b.p95) {
		qctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
		v, _, err := e.baselineP95(qctx, svc, deployedAt)
		cancel()
		if b.p95Err = err; err == nil {
			b.p95 = v
		}
	}
}

// verifyRound evaluates every item that has not passed yet, concurrently.
func (e *Engine) verifyRound(ctx context.Context, svc *Service, in *state.Incident, v *Verification, since time.Time, base *baselines) {
	if svc.Metrics != nil && (v.Items[2].State == ItemPending || v.Items[3].State == ItemPending) {
		e.refreshBaselines(ctx, svc, in.DeployedAt, base)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	set := func(i int, ok bool, detail string) {
		mu.Lock()
		defer mu.Unlock()
		v.Items[i].Detail = detail
		if ok {
			v.Items[i].State, v.Items[i].At = ItemPass, e.now()
		}
	}
	run := func(i int, f func(context.Context) (bool, string)) {
		if v.Items[i].State != ItemPending {
			return
		}
		wg.Go(func() {
			qctx, cancel := context.WithTimeout(ctx, e.opt.QueryTimeout)
			defer cancel()
			ok, d := f(qctx)
			set(i, ok, d)
		})
	}
	run(0, func(ctx context.Context) (bool, string) {
		snap, err := svc.Platform.Snapshot(ctx)
		if err != nil {
			return false, e.userText(err, "read platform state", "incident", in.ID)
		}
		h := snap.Health
		if snap.Current.Artifact != in.Target.Artifact && snap.Current.ID != in.Target.ID {
			return false, "running " + snap.Current.Label() + ", expected " + in.Target.Label()
		}
		detail := fmt.Sprintf("%d/%d ready, %d restarts", h.Ready, h.Desired, h.Restarts)
		if h.Detail != "" {
			detail = h.Detail
		}
		return h.Known && h.Desired > 0 && h.Ready >= h.Desired && !snap.RolloutInProgress, detail
	})
	run(1, func(ctx context.Context) (bool, string) {
		ok, d, err := svc.Health.Health(ctx)
		if err != nil {
			return false, e.userText(err, "health check", "incident", in.ID)
		}
		return ok, d
	})
	run(2, func(ctx context.Context) (bool, string) {
		m, err := svc.Metrics.ErrorRatio(ctx, since, e.now())
		if err != nil {
			return false, e.userText(err, "query error rate", "incident", in.ID)
		}
		if m.NoData || math.IsNaN(m.Value) {
			return false, "waiting for data since the rollback: " + firstNonEmpty(m.Reason, "no samples yet")
		}
		limit := svc.Thresholds.ErrorRate
		ref := pct(limit) + " threshold"
		if !math.IsNaN(base.errRatio) && base.errRatio > limit {
			limit, ref = base.errRatio, pct(base.errRatio)+" baseline"
		}
		return m.Value <= limit, pct(m.Value) + " (limit " + ref + ")"
	})
	run(3, func(ctx context.Context) (bool, string) {
		if math.IsNaN(base.p95) {
			return false, "no baseline p95 yet: " + e.userText(base.p95Err, "query baseline latency", "incident", in.ID)
		}
		m, err := svc.Metrics.LatencyP95(ctx, since, e.now())
		if err != nil {
			return false, e.userText(err, "query latency", "incident", in.ID)
		}
		if m.NoData || math.IsNaN(m.Value) {
			return false, "waiting for data since the rollback: " + firstNonEmpty(m.Reason, "no samples yet")
		}
		limit := svc.Thresholds.LatencyFactor * base.p95
		return m.Value <= limit, fmt.Sprintf("%s (limit %s = %g× baseline)", ms(m.Value), ms(limit), svc.Thresholds.LatencyFactor)
	})
	run(4, func(ctx context.Context) (bool, string) {
		ok, d, err := svc.Health.Smoke(ctx)
		if err != nil {
			return false, e.userText(err, "smoke test", "incident", in.ID)
		}
		return ok, d
	})
	wg.Wait()
}

// retryVerify re-runs the verification after a failed one.
func (e *Engine) retryVerify(ctx context.Context, a Action) {
	in, svc, ok := e.incidentFor(ctx, a)
	if !ok {
		return
	}
	if !e.allowed(ctx, svc.Approvers, a.UserID) {
		e.ephemeral(ctx, a.ChannelID, a.UserID, notAllowedMsg(svc.Name, "re-run verification", who(svc.Approvers)))
		return
	}
	in, ok = e.decideWork(ctx, a, in.ID, []state.Status{state.VerifyFailed}, state.Verifying, func(in *state.Incident) {
		delete(in.Steps, "verify")
		in.HeldUntil = time.Time{}
	}, "re-run verification")
	if !ok {
		return
	}
	e.record(ctx, in.ID, a.UserID, "verify", "re-running verification")
	e.work(in, svc, "")
}

package handlers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// status answers `/rollback status [service]`.
// Without a service it lists the open rollbacks of the services this
// channel sees.
func (e *Engine) status(ctx context.Context, sc SlashCommand, cmd Command, visible []*Service) {
	all, err := e.store.Active(ctx)
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "read incidents")))
		return
	}
	var active []*state.Incident
	for _, in := range all {
		if slices.ContainsFunc(visible, func(s *Service) bool { return s.Name == in.Service }) {
			active = append(active, in)
		}
	}
	sort.Slice(active, func(i, j int) bool { return active[i].CreatedAt.After(active[j].CreatedAt) })
	if cmd.Service == "" {
		locks, err := e.store.DeployLocks(ctx, names(visible))
		if err != nil {
			e.log.Warn("read deploy locks", "err", err)
		}
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, statusMsg(active, names(visible), locks))
		return
	}
	svc := e.services[cmd.Service]
	var mine []*state.Incident
	for _, in := range active {
		if in.Service == svc.Name {
			mine = append(mine, in)
		}
	}
	lock, _ := e.store.LockHolder(ctx, svc.Name)
	deployLock, err := e.store.DeployLockOf(ctx, svc.Name)
	if err != nil {
		e.log.Warn("read deploy lock", "service", svc.Name, "err", err)
	}
	qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
	snap, err := svc.Platform.Snapshot(qctx)
	cancel()
	snapErr := ""
	if err != nil {
		snapErr = e.userText(err, "read platform state", "service", svc.Name)
	}
	e.ephemeral(ctx, sc.ChannelID, sc.UserID, serviceStatusMsg(svc.Name, svc.Platform.Kind(), svc.Platform.Target(), snap, snapErr, lock, deployLock, mine))
}

// history answers `/rollback history <service>`.
func (e *Engine) history(ctx context.Context, sc SlashCommand, cmd Command) {
	svc := e.services[cmd.Service]
	qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
	snap, err := svc.Platform.Snapshot(qctx)
	cancel()
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "read platform history", "service", svc.Name)))
		return
	}
	marks, _ := e.store.Marks(ctx, svc.Name)
	past, _ := e.store.Recent(ctx, svc.Name, 5)
	e.ephemeral(ctx, sc.ChannelID, sc.UserID, historyMsg(svc.Name, svc.Platform.Target(), snap, marks, past))
}

// timeline answers `/rollback timeline [RB-n] [--markdown]`: the newest
// incident of this channel when none is named.
func (e *Engine) timeline(ctx context.Context, sc SlashCommand, cmd Command) {
	id := cmd.Incident
	if id == "" {
		recent, err := e.store.Recent(ctx, "", 50)
		if err != nil {
			e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "read incidents")))
			return
		}
		for _, in := range recent {
			if in.Channel == sc.ChannelID {
				id = in.ID
				break
			}
		}
		if id == "" {
			e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("no rollback has run in this channel yet; name one: `/rollback timeline RB-3`"))
			return
		}
	}
	in, err := e.store.Get(ctx, id)
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("there is no incident "+id+"; `/rollback status` lists the open ones"))
		return
	}
	events, err := e.store.Timeline(ctx, id)
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "read timeline")))
		return
	}
	if cmd.Markdown {
		md := state.Markdown(in, events, func(a string) string {
			if strings.HasPrefix(a, "U") {
				return "<@" + a + ">"
			}
			return a
		})
		// The step times go before the event table, which a long
		// incident may have clipped in Slack.
		steps := strings.TrimPrefix(stepTimesMarkdown(in, e.now()), "\n") + "\n## Events\n\n"
		if i := strings.Index(md, "| Time (UTC) |"); i >= 0 {
			md = md[:i] + steps + md[i:]
		} else {
			md += "\n" + steps
		}
		ev, kept, evErr := e.store.Evidence(ctx, id)
		if evErr != nil {
			md += "\n## Evidence kept before the rollback\n\nCould not be read from rollbot's store (" + platforms.SeeLog(ctx, e.log, "read evidence for the export", evErr, "incident", id) + ").\n"
		} else if kept {
			md += state.EvidenceMarkdown(ev)
		}
		e.post(ctx, sc.ChannelID, in.ThreadTS, markdownMsg(in, md))
		if kept || evErr != nil || len(md) > maxMarkdownInMessage {
			// The whole export (with the evidence, or a long timeline) is
			// longer than a message: it goes to the thread as a file.
			title, comment := in.ID+" timeline (Markdown)", "The full Markdown export of "+in.ID+"."
			if kept {
				title, comment = in.ID+" timeline and evidence (Markdown)", "The full Markdown export of "+in.ID+", with the evidence kept before the rollback."
			}
			f := File{Name: in.ID + "-timeline.md", Title: title, Content: []byte(md), Comment: comment}
			if err := e.chat.Upload(ctx, sc.ChannelID, in.ThreadTS, f); err != nil {
				e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg("the full Markdown export could not be uploaded ("+e.userText(err, "upload export")+"); the message above shows its start"))
			}
		}
		return
	}
	e.post(ctx, sc.ChannelID, "", withBudgets(timelineMsg(in, events, cmd.Page), in, e.now()))
}

// Supervise runs on every replica until ctx ends. Every third of the
// lease (at most 2s) it looks at the incidents that are not finished:
//   - a working incident whose owner's lease expired (the replica died or
//     hung) is taken over, fenced, and resumed from its recorded step;
//   - a wait that outlived its budget (nobody confirmed, the DB approvals
//     never came, a failed rollback's hold on the service ran out) is
//     closed, its buttons removed, and the service released.
//
// Every replica does this; the compare-and-set of each move makes sure one
// of them acts.
func (e *Engine) Supervise(ctx context.Context) {
	// Every third of the lease, at most 2s: an expired lease is noticed
	// within 2s (takeover ≤ lease + 2s), and listing the open incidents is
	// one small read.
	e.scheduleDrillReminders(ctx)
	t := time.NewTicker(max(min(e.opt.Lease/3, 2*time.Second), 200*time.Millisecond))
	defer t.Stop()
	for {
		e.superviseOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (e *Engine) superviseOnce(ctx context.Context) {
	active, err := e.store.Active(ctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("list open incidents", "err", err)
		}
		return
	}
	for _, in := range active {
		svc := e.services[in.Service]
		switch {
		case svc == nil:
			continue
		case in.Status.Working():
			e.takeOver(ctx, in, svc)
		case in.Status.Waiting():
			if in.Show != "" {
				e.takeOverShowing(ctx, in, svc)
			}
			e.expire(ctx, in)
		}
	}
}

// takeOver resumes a working incident whose lease has expired.
func (e *Engine) takeOver(ctx context.Context, in *state.Incident, svc *Service) {
	holder, err := e.store.LeaseHolder(ctx, in.ID)
	if err != nil || holder != "" {
		return
	}
	cur, _, err := e.store.Takeover(ctx, in.ID, e.opt.Replica, e.opt.Lease)
	if err != nil {
		return // alive after all, or another replica was first
	}
	was := lastOwner(cur)
	e.metrics.LeaseTakeover()
	e.log.Warn("took over an incident whose owner stopped", "incident", cur.ID, "from", was, "status", string(cur.Status))
	e.store.AppendOwned(ctx, cur.ID, state.ClaimOf(cur), state.Event{Actor: "rollbot", Step: "takeover",
		Detail: fmt.Sprintf("resumed by %s after %s stopped at %s", e.opt.Replica, firstNonEmpty(was, "a replica"), cur.Status), Time: e.now()})
	e.work(cur, svc, firstNonEmpty(was, "a replica"))
}

// takeOverShowing shows the message a wait owes (the decision buttons,
// the DB approval request) when the replica that moved the incident into
// the wait stopped before it was shown: its lease for showing expired.
func (e *Engine) takeOverShowing(ctx context.Context, in *state.Incident, svc *Service) {
	holder, err := e.store.LeaseHolder(ctx, in.ID)
	if err != nil || holder != "" {
		return
	}
	cur, claim, err := e.store.Takeover(ctx, in.ID, e.opt.Replica, e.opt.Lease)
	if err != nil {
		return
	}
	was := firstNonEmpty(lastOwner(cur), "a replica")
	e.metrics.LeaseTakeover()
	e.log.Warn("took over a wait whose message was never shown", "incident", cur.ID, "from", was, "status", string(cur.Status), "show", cur.Show)
	e.store.AppendOwned(ctx, cur.ID, claim, state.Event{Actor: "rollbot", Step: "takeover",
		Detail: fmt.Sprintf("resumed by %s after %s stopped at %s, before showing the %s", e.opt.Replica, was, cur.Status, strings.ReplaceAll(cur.Show, "_", " ")), Time: e.now()})
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		ctx, cancel := e.fresh()
		defer cancel()
		if cur.ThreadTS != "" {
			e.post(ctx, cur.Channel, cur.ThreadTS, resumedMsg(cur, e.opt.Replica, was))
		}
		e.showWait(ctx, cur, svc)
	}()
}

// expire closes a wait that outlived its budget.
func (e *Engine) expire(ctx context.Context, in *state.Incident) {
	var why string
	now := e.now()
	switch in.Status {
	case state.AwaitingConfirm, state.AwaitingDBApprove:
		since := in.StepStarted
		if since.IsZero() {
			since = in.UpdatedAt
		}
		if now.Sub(since) < e.opt.Budgets.Confirm {
			return
		}
		why = "nobody decided within " + window(e.opt.Budgets.Confirm)
		cur, err := e.store.Advance(ctx, in.ID, e.endMove(in, []state.Status{in.Status}, nil))
		if err != nil {
			return
		}
		if cur.Status == state.DrillRestoring {
			// A drill's bad version does not stay: this replica puts
			// back what the drill found, holding the service until then.
			e.record(ctx, in.ID, "rollbot", "expire", why+": no rollback; rollbot puts back "+cur.Drill.Original.Label())
			e.store.ClearApprovals(ctx, in.ID, dbStep)
			e.update(ctx, cur.Channel, cur.Messages["assessment"], decidedMsg(cur, e.assessmentOf(cur)))
			if ts := cur.Messages["db"]; ts != "" {
				e.update(ctx, cur.Channel, ts, dbClosedMsg(cur, "Expired: "+why+". The database was not touched."))
			}
			e.post(ctx, cur.Channel, cur.ThreadTS, simple(fmt.Sprintf(":hourglass: Drill %s expired: %s. %s", cur.ID, why, restoringText(cur))))
			e.work(cur, e.services[cur.Service], "")
			return
		}
		e.record(ctx, in.ID, "rollbot", "expire", why+": nothing was changed; the service is released")
		e.store.ClearApprovals(ctx, in.ID, dbStep)
		e.store.ReleaseLock(ctx, cur.Service, cur.Lock)
		e.update(ctx, cur.Channel, cur.Messages["assessment"], decidedMsg(cur, e.assessmentOf(cur)))
		if ts := cur.Messages["db"]; ts != "" {
			e.update(ctx, cur.Channel, ts, dbClosedMsg(cur, "Expired: "+why+". The database was not touched."))
		}
		e.post(ctx, cur.Channel, cur.ThreadTS, simple(fmt.Sprintf(":hourglass: %s expired: %s. Nothing was changed and %s is released; run `/rollback %s` again if it is still needed.", cur.ID, why, cur.Service, cur.Service)))
	case state.AwaitingSwitch:
		since := in.StepStarted
		if since.IsZero() {
			since = in.UpdatedAt
		}
		if now.Sub(since) < e.opt.Budgets.Hold {
			return
		}
		why = "nobody confirmed the endpoint switch within " + window(e.opt.Budgets.Hold)
		cur, err := e.store.Advance(ctx, in.ID, state.Move{From: []state.Status{in.Status}, To: state.Closed})
		if err != nil {
			return
		}
		e.record(ctx, in.ID, "rollbot", "expire", why+": the database was restored, the app was not rolled back; closed and the service released")
		e.store.ReleaseLock(ctx, cur.Service, cur.Lock)
		if ts := cur.Messages[endpointStep]; ts != "" {
			e.update(ctx, cur.Channel, ts, dbClosedMsg(cur, "Expired: "+why+"."))
		}
		e.post(ctx, cur.Channel, cur.ThreadTS, simple(fmt.Sprintf(":hourglass: %s closed: %s. The database was restored (see the database step above) but the app was *not* rolled back; %s is released. Once the app uses the restored database, run `/rollback %s` again to roll back the app.", cur.ID, why, cur.Service, cur.Service)))
	case state.RollbackFailed, state.VerifyFailed:
		if in.HeldUntil.IsZero() || now.Before(in.HeldUntil) {
			return
		}
		why = "nobody ran a fallback or ended the rollback by " + clock(in.HeldUntil)
		cur, err := e.store.Advance(ctx, in.ID, state.Move{From: []state.Status{in.Status}, To: state.Closed})
		if err != nil {
			return
		}
		e.record(ctx, in.ID, "rollbot", "expire", why+"; closed and the service released")
		e.store.ReleaseLock(ctx, cur.Service, cur.Lock)
		e.post(ctx, cur.Channel, cur.ThreadTS, simple(fmt.Sprintf(":hourglass: %s closed: %s. %s is released; the fallback buttons above no longer act. The platform is as the last message says.", cur.ID, why, cur.Service)))
	}
}

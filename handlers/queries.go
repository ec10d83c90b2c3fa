package handlers

import (
	"context"
	"sort"
	"strings"

	"rollbot/state"
)

// status answers `/rollback status [service]`.
func (e *Engine) status(ctx context.Context, sc SlashCommand, cmd Command) {
	active, err := e.store.Active(ctx)
	if err != nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(e.userText(err, "read incidents")))
		return
	}
	sort.Slice(active, func(i, j int) bool { return active[i].CreatedAt.After(active[j].CreatedAt) })
	if cmd.Service == "" {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, statusMsg(active, e.serviceNames()))
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
	qctx, cancel := context.WithTimeout(ctx, 2*e.opt.QueryTimeout)
	snap, err := svc.Platform.Snapshot(qctx)
	cancel()
	snapErr := ""
	if err != nil {
		snapErr = e.userText(err, "read platform state", "service", svc.Name)
	}
	e.ephemeral(ctx, sc.ChannelID, sc.UserID, serviceStatusMsg(svc.Name, svc.Platform.Kind(), svc.Platform.Target(), snap, snapErr, lock, mine))
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
		e.post(ctx, sc.ChannelID, in.ThreadTS, markdownMsg(in, md))
		return
	}
	e.post(ctx, sc.ChannelID, "", timelineMsg(in, events))
}

// Resume runs when the bot starts: incidents whose step was acting on a
// system when the bot stopped are reported in their thread as interrupted,
// never silently dropped; ones waiting for a button keep waiting (their
// state is in Redis, so the buttons still work).
func (e *Engine) Resume(ctx context.Context) error {
	active, err := e.store.Active(ctx)
	if err != nil {
		return err
	}
	for _, in := range active {
		if !in.Status.InFlight() {
			continue
		}
		was := in.Status
		e.record(ctx, in.ID, "rollbot", "restart", "rollbot restarted while the incident was "+string(was)+"; marked interrupted")
		cur, err := e.store.Transition(ctx, in.ID, []state.Status{was}, state.Interrupted, nil)
		if err != nil {
			e.log.Warn("mark interrupted", "incident", in.ID, "err", err)
			continue
		}
		e.store.ReleaseLock(ctx, cur.Service, cur.Lock)
		e.post(ctx, cur.Channel, cur.ThreadTS, interruptedMsg(cur, was))
		e.log.Info("reported interrupted incident", "incident", cur.ID, "service", cur.Service, "was", string(was))
	}
	return nil
}

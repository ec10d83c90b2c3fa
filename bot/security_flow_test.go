package bot

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// copyTo posts a copy of a stored message, buttons included, into channel
// (as a forwarded or copied message would carry them) and returns the
// copy's ts: its buttons hold the original incident's id.
func (h *harness) copyTo(channel string, m slackemu.Message) string {
	h.t.Helper()
	var blocks slack.Blocks
	if err := json.Unmarshal(m.Blocks, &blocks); err != nil {
		h.t.Fatal(err)
	}
	api := slack.New(slackemu.BotToken, slack.OptionAPIURL(h.emu.APIURL()))
	_, ts, err := api.PostMessageContext(h.ctx(), channel, slack.MsgOptionText(m.Text, false), slack.MsgOptionBlocks(blocks.BlockSet...))
	if err != nil {
		h.t.Fatalf("copy the message into %s: %v", channel, err)
	}
	return ts
}

// waitCount waits until n messages in #general (slackemu.ChannelGeneral) match pred.
func (h *harness) waitCount(what string, n int, pred func(slackemu.Message) bool) {
	h.t.Helper()
	var got int
	if err := wait.Until(context.Background(), 20*time.Second, what, func() (bool, error) {
		got = 0
		for _, m := range h.emu.Messages(slackemu.ChannelGeneral) {
			if pred(m) {
				got++
			}
		}
		return got >= n, nil
	}); err != nil {
		h.t.Fatalf("%v: %d of %d\n%s", err, got, n, h.dump())
	}
}

func (h *harness) incident(id string) *state.Incident {
	h.t.Helper()
	in, err := h.store.Get(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return in
}

// timelineHas reports whether the incident's timeline has an event whose
// detail contains s.
func (h *harness) timelineHas(id, s string) bool {
	h.t.Helper()
	evs, err := h.store.Timeline(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range evs {
		if strings.Contains(e.Detail, s) {
			return true
		}
	}
	return false
}

// A rollback button clicked outside the incident's channel does nothing:
// the clicker is told where it belongs, the timeline records the refusal,
// and the same button in the incident's channel still works.
func TestClickFromAnotherChannelIsRefused(t *testing.T) {
	light(t)
	svc, s := simService(t, "myapp", 5*time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	copyTS := h.copyTo(slackemu.ChannelGeneral, a)

	if err := h.emu.ClickButton(h.ctx(), slackemu.UserBob, slackemu.ChannelGeneral, copyTS, handlers.ActConfirm); err != nil {
		t.Fatal(err)
	}
	h.waitFor("refusal", func(m slackemu.Message) bool {
		return m.Channel == slackemu.ChannelGeneral && m.Ephemeral && m.EphemeralFor == slackemu.UserBob &&
			strings.Contains(m.PlainText(), "belongs to rollback RB-1 in <#"+slackemu.ChannelIncident+">")
	})
	if in := h.incident("RB-1"); in.Status != state.AwaitingConfirm || in.DecidedBy != "" {
		t.Fatalf("after the click elsewhere: status %s, decided by %q", in.Status, in.DecidedBy)
	}
	if got := current(t, s); got != "app:v3" {
		t.Fatalf("the service was rolled back to %s by a click in another channel", got)
	}
	if !h.timelineHas("RB-1", "refused: "+handlers.ActConfirm+" clicked in channel "+slackemu.ChannelGeneral) {
		t.Error("the refusal is not on the timeline")
	}
	// Cancel from the copy is refused the same way.
	if err := h.emu.ClickButton(h.ctx(), slackemu.UserAlice, slackemu.ChannelGeneral, copyTS, handlers.ActCancel); err != nil {
		t.Fatal(err)
	}
	h.waitFor("cancel refusal", func(m slackemu.Message) bool {
		return m.Channel == slackemu.ChannelGeneral && m.EphemeralFor == slackemu.UserAlice && strings.Contains(m.PlainText(), "belongs to rollback RB-1")
	})
	if in := h.incident("RB-1"); in.Status != state.AwaitingConfirm {
		t.Fatalf("cancelled from another channel: %s", in.Status)
	}

	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("verified", textHas("Rollback verified"))
}

// "Done" on a post-rollback item needs one of the service's approvers or
// the requester, and the incident's channel.
func TestPostActionDoneNeedsApproverAndChannel(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", 5*time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	post := h.waitFor("post-rollback checklist", hasAction(handlers.ActPostDone))

	// Eve is in no group and did not ask for the rollback.
	h.click(slackemu.UserEve, post.TS, handlers.ActPostDone)
	h.waitFor("refusal", ephemeralFor(slackemu.UserEve, "not allowed to tick post-rollback items"))
	if done := h.incident("RB-1").Done; done["rootcause"] != "" {
		t.Fatalf("Eve ticked an item: %q", done["rootcause"])
	}
	if !h.timelineHas("RB-1", "refused: not allowed to tick") {
		t.Error("the refusal is not on the timeline")
	}

	// An approver, but from a copy in another channel.
	copyTS := h.copyTo(slackemu.ChannelGeneral, post)
	if err := h.emu.ClickButton(h.ctx(), slackemu.UserBob, slackemu.ChannelGeneral, copyTS, handlers.ActPostDone); err != nil {
		t.Fatal(err)
	}
	h.waitFor("channel refusal", func(m slackemu.Message) bool {
		return m.Channel == slackemu.ChannelGeneral && m.EphemeralFor == slackemu.UserBob && strings.Contains(m.PlainText(), "belongs to rollback RB-1")
	})
	if done := h.incident("RB-1").Done; done["rootcause"] != "" {
		t.Fatalf("ticked from another channel: %q", done["rootcause"])
	}

	// Bob, an approver, in the incident's channel: ticked.
	h.click(slackemu.UserBob, post.TS, handlers.ActPostDone)
	h.waitFor("ticked item", func(m slackemu.Message) bool {
		return m.TS == post.TS && strings.Contains(m.PlainText(), "done by <@"+slackemu.UserBob+">")
	})
}

// The DB approval modal is opened only for a click in the incident's
// channel, so the incident and message in its private metadata are always
// the incident's own: a DB approver clicking a copy elsewhere gets no
// modal and approves nothing.
func TestDBApproveFromAnotherChannelOpensNoModal(t *testing.T) {
	light(t)
	h, db, m := dbHarness(t, false, fastEngine())
	copyTS := h.copyTo(slackemu.ChannelGeneral, m)
	if err := h.emu.ClickButton(h.ctx(), slackemu.UserDana, slackemu.ChannelGeneral, copyTS, handlers.ActDBApprove); err != nil {
		t.Fatal(err)
	}
	h.waitFor("refusal", func(msg slackemu.Message) bool {
		return msg.Channel == slackemu.ChannelGeneral && msg.EphemeralFor == slackemu.UserDana && strings.Contains(msg.PlainText(), "belongs to rollback RB-1")
	})
	for _, v := range h.emu.Views() {
		if v.User == slackemu.UserDana {
			t.Fatalf("a modal opened for the click in another channel: %+v", v)
		}
	}
	if err := h.emu.ClickButton(h.ctx(), slackemu.UserDana, slackemu.ChannelGeneral, copyTS, handlers.ActDBRefuse); err != nil {
		t.Fatal(err)
	}
	h.waitCount("the second refusal", 2, func(msg slackemu.Message) bool {
		return msg.Channel == slackemu.ChannelGeneral && msg.EphemeralFor == slackemu.UserDana && strings.Contains(msg.PlainText(), "belongs to rollback RB-1")
	})
	if in := h.incident("RB-1"); in.Status != state.AwaitingDBApprove {
		t.Fatalf("status after clicks elsewhere: %s", in.Status)
	}
	// In the incident's channel the approval goes through, bound to it.
	if ack := h.approve(slackemu.UserDana, m, "payments"); len(ack.Errors) != 0 {
		t.Fatalf("approval refused: %+v", ack)
	}
	h.waitFor("verified", textHas("Rollback verified"))
	if db.downs != 1 {
		t.Fatalf("down migrations run: %d, want 1", db.downs)
	}
}

package slackemu

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"
	"rollbot/testkit/wait"
)

// recorder keeps what a test bot received.
type recorder struct {
	mu   sync.Mutex
	reqs []socketmode.Request
	evts []socketmode.Event
}

func (r *recorder) add(evt socketmode.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, *evt.Request)
	r.evts = append(r.evts, evt)
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

func (r *recorder) events() []socketmode.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]socketmode.Event(nil), r.evts...)
}

// waitLen polls until the recorder holds n requests.
func (r *recorder) waitLen(t *testing.T, n int) {
	t.Helper()
	wait.For(t, 10*time.Second, fmt.Sprintf("%d requests", n), func() (bool, error) {
		return r.len() >= n, fmt.Errorf("got %d", r.len())
	})
}

func TestEventsRedelivery(t *testing.T) {
	s := newServer(t, Options{AckTimeout: 300 * time.Millisecond})
	rec := &recorder{}
	startBot(t, s, func(b *testBot, evt socketmode.Event) {
		rec.add(evt)
		if evt.Request.RetryAttempt >= 1 { // ignore the first delivery
			_ = b.sm.Ack(*evt.Request)
		}
	})
	ctx := ctxFor(t, 30*time.Second)
	if err := s.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	msg, err := s.PostUserMessage(ctx, UserAlice, ChannelIncident, "<@U0ROLLBOT> status checkout")
	if err != nil {
		t.Fatalf("app_mention: %v", err)
	}
	evts := rec.events()
	if len(evts) != 2 {
		t.Fatalf("deliveries = %d, want 2", len(evts))
	}
	var eventIDs []string
	for i, e := range evts {
		if e.Type != socketmode.EventTypeEventsAPI {
			t.Fatalf("delivery %d type %s", i, e.Type)
		}
		outer := e.Data.(slackevents.EventsAPIEvent)
		mention, ok := outer.InnerEvent.Data.(*slackevents.AppMentionEvent)
		if !ok || mention.User != UserAlice || mention.Channel != ChannelIncident || mention.TimeStamp != msg.TS || !strings.Contains(mention.Text, "status checkout") {
			t.Errorf("delivery %d inner event %#v", i, outer.InnerEvent.Data)
		}
		eventIDs = append(eventIDs, outer.Data.(*slackevents.EventsAPICallbackEvent).EventID)
	}
	if evts[0].Request.RetryAttempt != 0 || evts[1].Request.RetryAttempt != 1 || evts[1].Request.RetryReason != "timeout" {
		t.Errorf("retry fields: %+v / %+v", evts[0].Request, evts[1].Request)
	}
	if evts[0].Request.EnvelopeID == evts[1].Request.EnvelopeID || eventIDs[0] != eventIDs[1] || eventIDs[0] == "" {
		t.Errorf("envelope ids %s %s, event ids %v", evts[0].Request.EnvelopeID, evts[1].Request.EnvelopeID, eventIDs)
	}

	// Never acked: three redeliveries, then ErrNotAcked. Slash commands are
	// not redelivered.
	s2 := newServer(t, Options{AckTimeout: 100 * time.Millisecond, MaxRedeliveries: 3})
	rec2 := &recorder{}
	startBot(t, s2, func(_ *testBot, evt socketmode.Event) { rec2.add(evt) })
	if err := s2.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s2.SendEvent(ctx, map[string]any{"type": "app_mention", "user": UserBob, "text": "<@U0ROLLBOT>", "channel": ChannelGeneral}); !errors.Is(err, ErrNotAcked) {
		t.Errorf("unacked event: %v", err)
	}
	if n := rec2.len(); n != 4 {
		t.Errorf("deliveries of an unacked event = %d, want 4", n)
	}
	if err := s2.SlashCommand(ctx, UserBob, ChannelGeneral, "/rollback", "x"); !errors.Is(err, ErrNotAcked) {
		t.Errorf("unacked slash command: %v", err)
	}
	if n := rec2.len(); n != 5 {
		t.Errorf("deliveries after an unacked command = %d, want 5", n)
	}
}

func TestDuplicateEnvelope(t *testing.T) {
	s := newServer(t, Options{})
	rec := &recorder{}
	startBot(t, s, func(b *testBot, evt socketmode.Event) {
		rec.add(evt)
		_ = b.sm.Ack(*evt.Request)
	})
	ctx := ctxFor(t, 30*time.Second)
	if err := s.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s.DuplicateNextEnvelope()
	if err := s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "checkout"); err != nil {
		t.Fatal(err)
	}
	rec.waitLen(t, 2)
	evts := rec.events()
	a, b := evts[0].Data.(slack.SlashCommand), evts[1].Data.(slack.SlashCommand)
	if a.TriggerID != b.TriggerID || a.Text != "checkout" || b.Text != "checkout" || evts[0].Request.EnvelopeID == evts[1].Request.EnvelopeID {
		t.Errorf("duplicate: %+v / %+v", evts[0].Request, evts[1].Request)
	}
	// Only the next envelope is doubled.
	if err := s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "again"); err != nil {
		t.Fatal(err)
	}
	rec.waitLen(t, 3)
	if err := s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "third"); err != nil {
		t.Fatal(err)
	}
	rec.waitLen(t, 4)
	if n := rec.len(); n != 4 {
		t.Errorf("deliveries = %d, want 4", n)
	}
}

func TestOneOfDelivery(t *testing.T) {
	s := newServer(t, Options{})
	var recs [2]*recorder
	for i := range recs {
		recs[i] = &recorder{}
		rec := recs[i]
		startBot(t, s, func(b *testBot, evt socketmode.Event) {
			rec.add(evt)
			_ = b.sm.Ack(*evt.Request)
		})
	}
	ctx := ctxFor(t, 30*time.Second)
	if err := s.WaitConnected(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if err := s.SlashCommand(ctx, UserBob, ChannelIncident, "/rollback", "svc"); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := recs[0].len(), recs[1].len(); a+b != 6 || a != 3 || b != 3 {
		t.Errorf("deliveries per connection = %d, %d; want 3, 3 (each envelope once)", a, b)
	}
}

func TestRefreshConnections(t *testing.T) {
	s := newServer(t, Options{})
	startBot(t, s, func(b *testBot, evt socketmode.Event) { _ = b.sm.Ack(*evt.Request) })
	ctx := ctxFor(t, 30*time.Second)
	if err := s.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s.RefreshConnections()
	wait.For(t, 10*time.Second, "the client to reconnect after disconnect/refresh_requested", func() (bool, error) {
		return s.ConnectionsAccepted() >= 2, nil
	})
	if err := s.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SlashCommand(ctx, UserBob, ChannelIncident, "/rollback", "svc"); err != nil {
		t.Fatalf("after refresh: %v", err)
	}
}

func TestResponseURL(t *testing.T) {
	s := newServer(t, Options{})
	rec := &recorder{}
	startBot(t, s, func(b *testBot, evt socketmode.Event) {
		rec.add(evt)
		if evt.Type == socketmode.EventTypeSlashCommand && evt.Data.(slack.SlashCommand).Text == "ack-reply" {
			_ = b.sm.Ack(*evt.Request, map[string]any{"text": "Working on it :hourglass_flowing_sand:"})
			return
		}
		_ = b.sm.Ack(*evt.Request)
	})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 30*time.Second)
	if err := s.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// A slash command ack with text is an ephemeral reply to the invoker.
	if err := s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "ack-reply"); err != nil {
		t.Fatal(err)
	}
	m, err := s.WaitForMessage(ctx, func(m Message) bool { return strings.HasPrefix(m.Text, "Working on it") })
	if err != nil || !m.Ephemeral || m.EphemeralFor != UserAlice {
		t.Fatalf("ack reply: %+v %v", m, err)
	}

	if err := s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "x"); err != nil {
		t.Fatal(err)
	}
	cmdURL := rec.events()[1].Data.(slack.SlashCommand).ResponseURL
	if _, _, err := api.PostMessageContext(ctx, "", slack.MsgOptionResponseURL(cmdURL, slack.ResponseTypeEphemeral), slack.MsgOptionText("just you", false)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.PostMessageContext(ctx, "", slack.MsgOptionResponseURL(cmdURL, slack.ResponseTypeInChannel),
		slack.MsgOptionText("everyone", false),
		slack.MsgOptionBlocks(slack.NewActionBlock("", slack.NewButtonBlockElement("ok", "1", txt("OK"))))); err != nil {
		t.Fatal(err)
	}
	eph, _ := s.WaitForMessage(ctx, func(m Message) bool { return m.Text == "just you" })
	pub, _ := s.WaitForMessage(ctx, func(m Message) bool { return m.Text == "everyone" })
	if !eph.Ephemeral || eph.EphemeralFor != UserAlice || pub.Ephemeral {
		t.Errorf("ephemeral %+v / in_channel %+v", eph, pub)
	}

	// From a button: replace_original, then delete_original.
	if err := s.ClickButton(ctx, UserBob, ChannelIncident, pub.TS, "ok"); err != nil {
		t.Fatal(err)
	}
	cb := rec.events()[2].Data.(slack.InteractionCallback)
	if _, _, err := api.PostMessageContext(ctx, "", slack.MsgOptionReplaceOriginal(cb.ResponseURL), slack.MsgOptionText("replaced", false)); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Message(ChannelIncident, pub.TS); m.Text != "replaced" || !m.Edited || len(m.Blocks) != 0 {
		t.Errorf("after replace_original: %+v", m)
	}
	if _, _, err := api.PostMessageContext(ctx, "", slack.MsgOptionDeleteOriginal(cb.ResponseURL)); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Message(ChannelIncident, pub.TS); !m.Deleted {
		t.Errorf("after delete_original: %+v", m)
	}
	if rc := s.CallsTo("response_url"); len(rc) != 4 || rc[2].Params["replace_original"] != "true" || rc[3].Params["delete_original"] != "true" || rc[1].Params["response_type"] != "in_channel" {
		t.Errorf("response_url calls: %+v", rc)
	}
	// Clicking a button that is not there fails.
	if err := s.ClickButton(ctx, UserBob, ChannelIncident, eph.TS, "nope"); err == nil {
		t.Error("click on a missing button succeeded")
	}
	// A response_url works five times.
	for i := 0; i < 3; i++ {
		_, _, err := api.PostMessageContext(ctx, "", slack.MsgOptionResponseURL(cmdURL, slack.ResponseTypeEphemeral), slack.MsgOptionText("more", false))
		if err != nil {
			t.Fatalf("use %d: %v", i+3, err)
		}
	}
	if _, _, err := api.PostMessageContext(ctx, "", slack.MsgOptionResponseURL(cmdURL, slack.ResponseTypeEphemeral), slack.MsgOptionText("sixth", false)); err == nil {
		t.Error("sixth use of a response_url succeeded")
	}
}

func TestViewsLifecycle(t *testing.T) {
	s := newServer(t, Options{TriggerTTL: time.Minute})
	rec := &recorder{}
	startBot(t, s, func(b *testBot, evt socketmode.Event) {
		rec.add(evt)
		cb, ok := evt.Data.(slack.InteractionCallback)
		if ok && cb.Type == slack.InteractionTypeViewSubmission && cb.View.CallbackID == "first" {
			next := slack.ModalViewRequest{Type: slack.VTModal, Title: txt("Step 2"), Submit: txt("Done"), CallbackID: "second",
				Blocks: slack.Blocks{BlockSet: []slack.Block{section("done?")}}}
			_ = b.sm.Ack(*evt.Request, slack.NewPushViewSubmissionResponse(&next))
			return
		}
		if ok && cb.Type == slack.InteractionTypeViewSubmission {
			_ = b.sm.Ack(*evt.Request, slack.NewClearViewSubmissionResponse())
			return
		}
		_ = b.sm.Ack(*evt.Request)
	})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 30*time.Second)
	if err := s.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SlashCommand(ctx, UserDana, ChannelIncident, "/rollback", "db"); err != nil {
		t.Fatal(err)
	}
	trig := rec.events()[0].Data.(slack.SlashCommand).TriggerID
	modal := slack.ModalViewRequest{Type: slack.VTModal, Title: txt("Step 1"), Submit: txt("Next"), CallbackID: "first", NotifyOnClose: true,
		Blocks: slack.Blocks{BlockSet: []slack.Block{slack.NewInputBlock("name", txt("Name"), nil, slack.NewPlainTextInputBlockElement(nil, "v"))}}}
	bad := modal
	bad.Title = txt("A title that is far too long for Slack")
	if _, err := api.OpenViewContext(ctx, trig, bad); slackErr(err) != "invalid_arguments" {
		t.Errorf("long title: %v", err)
	}
	resp, err := api.OpenViewContext(ctx, trig, modal)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ID == "" || resp.Hash == "" || resp.CallbackID != "first" || len(resp.Blocks.BlockSet) != 1 {
		t.Errorf("views.open answer %+v", resp.View)
	}
	if _, err := api.OpenViewContext(ctx, trig, modal); slackErr(err) != "exchanged_trigger_id" {
		t.Errorf("reused trigger: %v", err)
	}
	if _, err := api.OpenViewContext(ctx, "1.2.unknown", modal); slackErr(err) != "invalid_trigger_id" {
		t.Errorf("unknown trigger: %v", err)
	}
	// views.update with a stale hash conflicts; with the right one it works.
	upd := modal
	upd.Title = txt("Step 1 (edited)")
	if _, err := api.UpdateViewContext(ctx, upd, "", "stale", resp.ID); slackErr(err) != "hash_conflict" {
		t.Errorf("stale hash: %v", err)
	}
	if _, err := api.UpdateViewContext(ctx, upd, "", resp.Hash, resp.ID); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.CurrentView(UserDana); v.Title != "Step 1 (edited)" || v.ID != resp.ID {
		t.Errorf("after update: %+v", v)
	}
	// Another user cannot submit Dana's view.
	if _, err := s.SubmitView(ctx, UserErin, resp.ID, nil); err == nil {
		t.Error("erin submitted dana's view")
	}
	ack, err := s.SubmitView(ctx, UserDana, resp.ID, map[string]map[string]string{"name": {"v": "dana"}})
	if err != nil || ack.ResponseAction != "push" {
		t.Fatalf("push ack %+v %v", ack, err)
	}
	top, _ := s.CurrentView(UserDana)
	if top.CallbackID != "second" || top.PreviousViewID != resp.ID || top.RootViewID != resp.ID {
		t.Errorf("pushed view %+v", top)
	}
	sub := rec.events()[1].Data.(slack.InteractionCallback)
	if sub.View.State.Values["name"]["v"].Value != "dana" {
		t.Errorf("submitted state %+v", sub.View.State)
	}
	if _, err := s.SubmitView(ctx, UserDana, top.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, open := s.CurrentView(UserDana); open {
		t.Error("clear left a view open")
	}
	views := s.Views()
	if len(views) != 2 || views[0].Open || views[1].Open {
		t.Errorf("views %+v", views)
	}
}

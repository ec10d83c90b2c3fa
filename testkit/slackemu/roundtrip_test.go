package slackemu

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// rollbackBot is a small app in the style of rollbot: /rollback posts a
// confirmation with buttons; approve edits the message, reason opens a
// modal whose submission is validated with inline errors.
type rollbackBot struct {
	mu        sync.Mutex
	commands  []slack.SlashCommand
	actions   []slack.InteractionCallback
	submitted []slack.InteractionCallback
	errs      []error
}

func (r *rollbackBot) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *rollbackBot) handle(b *testBot, evt socketmode.Event) {
	switch evt.Type {
	case socketmode.EventTypeSlashCommand:
		cmd := evt.Data.(slack.SlashCommand)
		// Recorded before the ack: the test reads it once the ack is in.
		r.mu.Lock()
		r.commands = append(r.commands, cmd)
		r.mu.Unlock()
		if err := b.sm.Ack(*evt.Request); err != nil {
			r.fail(err)
		}
		approve := slack.NewButtonBlockElement("approve", "op-1", txt("Approve")).WithStyle(slack.StylePrimary)
		reject := slack.NewButtonBlockElement("reject", "op-1", txt("Reject")).WithStyle(slack.StyleDanger).
			WithConfirm(slack.NewConfirmationBlockObject(txt("Reject?"), md("The rollback of *"+cmd.Text+"* stops."), txt("Reject"), txt("Cancel")))
		reason := slack.NewButtonBlockElement("reason", "op-1", txt("Add reason"))
		_, _, err := b.api.PostMessage(cmd.ChannelID, slack.MsgOptionText("Rollback of "+cmd.Text+" requested", false),
			slack.MsgOptionBlocks(
				slack.NewSectionBlock(md(fmt.Sprintf("<@%s> wants to roll back *%s*", cmd.UserID, cmd.Text)), nil, nil),
				slack.NewActionBlock("", approve, reject, reason),
			))
		if err != nil {
			r.fail(err)
		}
	case socketmode.EventTypeInteractive:
		cb := evt.Data.(slack.InteractionCallback)
		switch cb.Type {
		case slack.InteractionTypeBlockActions:
			r.mu.Lock()
			r.actions = append(r.actions, cb)
			r.mu.Unlock()
			if err := b.sm.Ack(*evt.Request); err != nil {
				r.fail(err)
			}
			act := cb.ActionCallback.BlockActions[0]
			switch act.ActionID {
			case "approve":
				_, _, _, err := b.api.UpdateMessage(cb.Channel.ID, cb.Container.MessageTs,
					slack.MsgOptionText("approved", false),
					slack.MsgOptionBlocks(slack.NewSectionBlock(md(":white_check_mark: Approved by <@"+cb.User.ID+">"), nil, nil)))
				if err != nil {
					r.fail(err)
				}
			case "reason":
				_, err := b.api.OpenView(cb.TriggerID, slack.ModalViewRequest{
					Type: slack.VTModal, Title: txt("Rollback reason"), Submit: txt("Save"), Close: txt("Cancel"),
					CallbackID: "reason", PrivateMetadata: cb.Container.MessageTs,
					Blocks: slack.Blocks{BlockSet: []slack.Block{
						slack.NewInputBlock("why", txt("Why?"), nil, slack.NewPlainTextInputBlockElement(txt("at least 10 characters"), "text")),
					}},
				})
				if err != nil {
					r.fail(err)
				}
			}
		case slack.InteractionTypeViewSubmission:
			r.mu.Lock()
			r.submitted = append(r.submitted, cb)
			r.mu.Unlock()
			why := cb.View.State.Values["why"]["text"].Value
			if len(why) < 10 {
				if err := b.sm.Ack(*evt.Request, slack.NewErrorsViewSubmissionResponse(map[string]string{"why": "Say a bit more (10 characters)."})); err != nil {
					r.fail(err)
				}
				return
			}
			if err := b.sm.Ack(*evt.Request); err != nil {
				r.fail(err)
			}
			if _, _, err := b.api.PostMessage(ChannelIncident, slack.MsgOptionText("Reason: "+why, false),
				slack.MsgOptionTS(cb.View.PrivateMetadata)); err != nil {
				r.fail(err)
			}
		}
	}
}

// first returns the first recorded payload of a kind, failing the test
// (never panicking while holding the lock) when there is none.
func first[T any](t *testing.T, r *rollbackBot, what string, list *[]T) T {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(*list) == 0 {
		var zero T
		t.Fatalf("the bot recorded no %s", what)
		return zero
	}
	return (*list)[0]
}

func (r *rollbackBot) errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// TestSlackGoRoundTrip drives the real slack-go socketmode client through
// slash command → ack → postMessage with buttons → block_actions →
// chat.update → views.open → view_submission with inline errors, then
// drops the connections and checks the client reconnects and keeps working.
func TestSlackGoRoundTrip(t *testing.T) {
	s := newServer(t, Options{})
	bot := &rollbackBot{}
	startBot(t, s, bot.handle)
	ctx := ctxFor(t, 60*time.Second)
	if err := s.WaitConnected(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// Slash command as alice.
	if err := s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "checkout"); err != nil {
		t.Fatalf("slash command: %v", err)
	}
	cmd := first(t, bot, "slash command", &bot.commands)
	if cmd.UserID != UserAlice || cmd.UserName != "alice" || cmd.Command != "/rollback" || cmd.Text != "checkout" ||
		cmd.ChannelID != ChannelIncident || cmd.ChannelName != "incident-rollbacks" || cmd.TeamID != TeamID ||
		cmd.TriggerID == "" || !strings.HasPrefix(cmd.ResponseURL, s.base+"/response/") || cmd.APIAppID != AppID {
		t.Errorf("slash command payload as parsed by slack-go: %+v", cmd)
	}

	msg, err := s.WaitForMessage(ctx, func(m Message) bool { return strings.Contains(m.PlainText(), "wants to roll back *checkout*") })
	if err != nil {
		t.Fatalf("bot message: %v (bot errors %v)", err, bot.errors())
	}
	if got := strings.Join(msg.ActionIDs(), ","); got != "approve,reject,reason" {
		t.Errorf("action ids = %q", got)
	}
	if msg.User != BotUserID || msg.BotID != BotID || msg.Channel != ChannelIncident {
		t.Errorf("message author/channel: %+v", msg)
	}

	// Bob clicks Approve.
	if err := s.ClickButton(ctx, UserBob, ChannelIncident, msg.TS, "approve"); err != nil {
		t.Fatalf("click approve: %v", err)
	}
	cb := first(t, bot, "block_actions", &bot.actions)
	act := cb.ActionCallback.BlockActions
	if cb.User.ID != UserBob || cb.User.Name != "bob" || len(act) != 1 || act[0].ActionID != "approve" || act[0].Value != "op-1" ||
		act[0].BlockID == "" || act[0].Text.Text != "Approve" || cb.Container.MessageTs != msg.TS ||
		cb.Container.ChannelID != ChannelIncident || cb.Channel.ID != ChannelIncident || cb.Message.Timestamp != msg.TS ||
		cb.TriggerID == "" || cb.ResponseURL == "" || cb.Team.ID != TeamID || cb.APIAppID != AppID {
		t.Errorf("block_actions payload as parsed by slack-go: %+v", cb)
	}
	if len(cb.Message.Blocks.BlockSet) != 2 {
		t.Errorf("payload message has %d blocks, want 2", len(cb.Message.Blocks.BlockSet))
	}
	updated, err := s.WaitForMessage(ctx, func(m Message) bool { return m.TS == msg.TS && m.Edited })
	if err != nil {
		t.Fatalf("updated message: %v (bot errors %v)", err, bot.errors())
	}
	if !strings.Contains(updated.PlainText(), "Approved by <@U0BOB>") || len(updated.ActionIDs()) != 0 {
		t.Errorf("updated message = %q actions %v", updated.PlainText(), updated.ActionIDs())
	}

	// A second message to get the reason button again; click it as alice.
	if err := s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "payments"); err != nil {
		t.Fatal(err)
	}
	msg2, err := s.WaitForMessage(ctx, func(m Message) bool { return strings.Contains(m.PlainText(), "*payments*") })
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ClickButton(ctx, UserAlice, ChannelIncident, msg2.TS, "reason"); err != nil {
		t.Fatal(err)
	}
	view := waitView(t, s, UserAlice)
	if view.CallbackID != "reason" || view.Title != "Rollback reason" || view.PrivateMetadata != msg2.TS {
		t.Errorf("view = %+v", view)
	}

	// The client refuses an empty required field without calling the app.
	ack, err := s.SubmitView(ctx, UserAlice, view.ID, nil)
	if err != nil || !ack.FromClient || ack.Errors["why"] == "" {
		t.Errorf("empty submission: ack %+v err %v", ack, err)
	}
	// Too short: the app answers with inline errors; the view stays open.
	ack, err = s.SubmitView(ctx, UserAlice, view.ID, map[string]map[string]string{"why": {"text": "bad"}})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if ack.FromClient || ack.ResponseAction != "errors" || ack.Errors["why"] != "Say a bit more (10 characters)." {
		t.Errorf("ack = %+v", ack)
	}
	if v, ok := s.CurrentView(UserAlice); !ok || v.ID != view.ID || v.Errors["why"] == "" {
		t.Errorf("view after errors: %+v open=%v", v, ok)
	}
	sub := first(t, bot, "view_submission", &bot.submitted)
	if sub.View.ID != view.ID || sub.View.CallbackID != "reason" || sub.User.ID != UserAlice || sub.View.State == nil {
		t.Errorf("view_submission payload: %+v", sub)
	}
	// Long enough: closes and the bot replies in the thread.
	ack, err = s.SubmitView(ctx, UserAlice, view.ID, map[string]map[string]string{"why": {"text": "error rate 30% since v2"}})
	if err != nil || ack.ResponseAction != "" {
		t.Fatalf("submit: ack %+v err %v", ack, err)
	}
	if _, open := s.CurrentView(UserAlice); open {
		t.Error("view still open after an empty ack")
	}
	reply, err := s.WaitForMessage(ctx, func(m Message) bool { return m.Text == "Reason: error rate 30% since v2" })
	if err != nil {
		t.Fatal(err)
	}
	if reply.ThreadTS != msg2.TS {
		t.Errorf("reply thread_ts = %q, want %q", reply.ThreadTS, msg2.TS)
	}

	// Drop every socket: slack-go reconnects and the next command works.
	before := s.ConnectionsAccepted()
	old := s.ConnectionIDs()
	s.DropConnections()
	// slack-go may already be back on a new connection; none of the
	// dropped ones may remain.
	for _, id := range s.ConnectionIDs() {
		if slices.Contains(old, id) {
			t.Fatalf("connection %d still open after the drop (open before: %v)", id, old)
		}
	}
	if err := s.WaitConnected(ctx, 1); err != nil {
		t.Fatalf("no reconnect: %v", err)
	}
	if s.ConnectionsAccepted() <= before {
		t.Errorf("accepted %d connections, want more than %d", s.ConnectionsAccepted(), before)
	}
	if err := s.SlashCommand(ctx, UserBob, ChannelIncident, "/rollback", "search"); err != nil {
		t.Fatalf("slash command after reconnect: %v", err)
	}
	if _, err := s.WaitForMessage(ctx, func(m Message) bool { return strings.Contains(m.PlainText(), "*search*") }); err != nil {
		t.Fatal(err)
	}
	if errs := bot.errors(); len(errs) > 0 {
		t.Errorf("bot errors: %v", errs)
	}
	opens := s.CallsTo("apps.connections.open")
	if len(opens) < 2 || opens[0].Params["token"] != "" && opens[0].Params["token"] != "[redacted]" {
		t.Errorf("apps.connections.open calls: %+v", opens)
	}
	for _, c := range s.Calls() {
		b, _ := json.Marshal(c.Params)
		if strings.Contains(string(b), BotToken) || strings.Contains(string(b), AppToken) {
			t.Errorf("call %s records a token: %s", c.Method, b)
		}
	}
}

// waitView waits for the user's open modal (views.open runs after the ack).
func waitView(t *testing.T, s *Server, user string) View {
	t.Helper()
	v, err := s.WaitForView(ctxFor(t, 10*time.Second), func(v View) bool { return v.User == user && v.Open })
	if err != nil {
		t.Fatalf("no view opened for %s: %v; calls %+v", user, err, s.CallsTo("views.open"))
	}
	return v
}

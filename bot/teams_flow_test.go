package bot

import (
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/testkit/slackemu"
)

func (h *harness) slashIn(channel, user, text string) {
	h.t.Helper()
	if err := h.emu.SlashCommand(h.ctx(), user, channel, "/rollback", text); err != nil {
		h.t.Fatalf("/rollback %s in %s: %v", text, channel, err)
	}
}

// ephemeralIn waits for the reply only user sees in channel, containing s.
func (h *harness) ephemeralIn(channel, user, s string) slackemu.Message {
	h.t.Helper()
	return h.waitFor("reply in "+channel+" containing "+s, func(m slackemu.Message) bool {
		return m.Channel == channel && m.Ephemeral && m.EphemeralFor == user && strings.Contains(m.PlainText(), s)
	})
}

func inChannel(channel string, pred func(slackemu.Message) bool) func(slackemu.Message) bool {
	return func(m slackemu.Message) bool { return m.Channel == channel && pred(m) }
}

// Two teams' services bound to two channels: each channel sees only its
// own (help, suggestions, commands); the shared incident channel sees
// both; a channel bound to no service is refused.
func TestChannelsPerTeam(t *testing.T) {
	light(t)
	web, _ := simService(t, "web", 10*time.Millisecond)
	web.Channels = []string{slackemu.ChannelTeamWeb, slackemu.ChannelIncident}
	pay, paySim := simService(t, "payments", 10*time.Millisecond)
	pay.Channels = []string{"#payments-incidents", slackemu.ChannelIncident} // by name works too
	h := newHarness(t, []*handlers.Service{web, pay}, fastEngine())

	// The web team's channel: help and suggestions list web only.
	h.slashIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "help")
	help := h.ephemeralIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "Services in this channel")
	if !strings.Contains(help.PlainText(), "`web`") || strings.Contains(help.PlainText(), "payments") {
		t.Errorf("help in #web-incidents lists other teams' services:\n%s", help.PlainText())
	}
	h.slashIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "paymnts")
	unknown := h.ephemeralIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "does not know a service called `paymnts`")
	if strings.Contains(unknown.PlainText(), "payments") {
		t.Errorf("#web-incidents suggests another team's service:\n%s", unknown.PlainText())
	}
	h.slashIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "wbe")
	h.ephemeralIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "Did you mean `web`?")
	h.slashIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "payments")
	h.ephemeralIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "`payments` is not handled in this channel; its team runs it in #payments-incidents, <#C0INCIDENT>")
	h.slashIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "status")
	st := h.ephemeralIn(slackemu.ChannelTeamWeb, slackemu.UserAlice, "web")
	if strings.Contains(st.PlainText(), "payments") {
		t.Errorf("status in #web-incidents shows payments:\n%s", st.PlainText())
	}

	// The payments team's channel: only payments.
	h.slashIn(slackemu.ChannelTeamPay, slackemu.UserBob, "help")
	help = h.ephemeralIn(slackemu.ChannelTeamPay, slackemu.UserBob, "Services in this channel")
	if !strings.Contains(help.PlainText(), "`payments`") || strings.Contains(help.PlainText(), "`web`") {
		t.Errorf("help in #payments-incidents:\n%s", help.PlainText())
	}
	h.slashIn(slackemu.ChannelTeamPay, slackemu.UserBob, "web --dry-run")
	h.ephemeralIn(slackemu.ChannelTeamPay, slackemu.UserBob, "`web` is not handled in this channel")

	// The shared channel sees both.
	h.slashIn(slackemu.ChannelIncident, slackemu.UserAlice, "help")
	help = h.ephemeralIn(slackemu.ChannelIncident, slackemu.UserAlice, "Services in this channel")
	wantAll(t, "help in the shared channel", help.PlainText(), "`payments`", "`web`")

	// A channel no service is bound to.
	h.slashIn(slackemu.ChannelGeneral, slackemu.UserAlice, "web")
	h.ephemeralIn(slackemu.ChannelGeneral, slackemu.UserAlice, "rollbot only acts in incident channels")

	// A real rollback in the team's channel runs there, end to end.
	h.slashIn(slackemu.ChannelTeamPay, slackemu.UserAlice, "payments")
	a := h.waitFor("assessment in #payments-incidents", inChannel(slackemu.ChannelTeamPay, hasAction(handlers.ActConfirm)))
	if err := h.emu.ClickButton(h.ctx(), slackemu.UserBob, slackemu.ChannelTeamPay, a.TS, handlers.ActConfirm); err != nil {
		t.Fatal(err)
	}
	h.waitFor("verified in #payments-incidents", inChannel(slackemu.ChannelTeamPay, textHas("Rollback verified")))
	if got := current(t, paySim); got != "app:v2" {
		t.Fatalf("payments runs %s after the rollback, want app:v2", got)
	}
	for _, m := range h.emu.Messages(slackemu.ChannelTeamWeb) {
		if strings.Contains(m.PlainText(), "Rollback of payments") {
			t.Errorf("the payments rollback showed in #web-incidents: %s", m.PlainText())
		}
	}
}

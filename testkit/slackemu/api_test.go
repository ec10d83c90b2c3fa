package slackemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
)

func slackErr(err error) string {
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err
	}
	if err == nil {
		return ""
	}
	return "non-slack error: " + err.Error()
}

func TestTokens(t *testing.T) {
	s := newServer(t, Options{})
	ctx := ctxFor(t, 30*time.Second)
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"bot token on auth.test", func() error { _, err := apiClient(s, BotToken).AuthTestContext(ctx); return err }, ""},
		{"unknown token", func() error { _, err := apiClient(s, "xoxb-not-the-token").AuthTestContext(ctx); return err }, "invalid_auth"},
		{"no token", func() error { _, err := apiClient(s, "").AuthTestContext(ctx); return err }, "not_authed"},
		{"app token on chat.postMessage", func() error {
			_, _, err := apiClient(s, AppToken).PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("hi", false))
			return err
		}, "not_allowed_token_type"},
		{"bot token on apps.connections.open", func() error {
			_, _, err := slack.New(BotToken, slack.OptionAPIURL(s.APIURL()), slack.OptionAppLevelToken(BotToken)).StartSocketModeContext(ctx)
			return err
		}, "not_allowed_token_type"},
		{"app token on apps.connections.open", func() error {
			_, u, err := apiClient(s, BotToken).StartSocketModeContext(ctx)
			if err == nil && !strings.HasPrefix(u, "ws://127.0.0.1:") {
				return fmt.Errorf("url %q", u)
			}
			return err
		}, ""},
		{"bad app token on views.open (bearer)", func() error {
			_, err := apiClient(s, "xoxb-wrong").OpenViewContext(ctx, "1.2.x", slack.ModalViewRequest{Type: slack.VTModal, Title: txt("x")})
			return err
		}, "invalid_auth"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := slackErr(tc.call()); got != tc.want {
				t.Errorf("error = %q, want %q", got, tc.want)
			}
		})
	}
	auth, err := apiClient(s, BotToken).AuthTestContext(ctx)
	if err != nil || auth.UserID != BotUserID || auth.BotID != BotID || auth.TeamID != TeamID || auth.Team != TeamDomain {
		t.Errorf("auth.test = %+v, %v", auth, err)
	}
	// Bearer header works for form methods as well.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.APIURL()+"auth.test", nil)
	req.Header.Set("Authorization", "Bearer "+BotToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 200 || body["ok"] != true {
		t.Errorf("bearer auth.test: %d %v", resp.StatusCode, body)
	}
	for _, c := range s.Calls() {
		if c.Params["token"] != "" && c.Params["token"] != "[redacted]" {
			t.Errorf("call %s kept token %q", c.Method, c.Params["token"])
		}
	}
	if got := s.CallsTo("auth.test"); len(got) < 3 || got[1].Error != "invalid_auth" {
		t.Errorf("recorded auth.test calls: %+v", got)
	}
}

func section(text string) slack.Block { return slack.NewSectionBlock(md(text), nil, nil) }

func table(rows int) *slack.TableBlock {
	tb := slack.NewTableBlock("")
	for i := 0; i < rows; i++ {
		tb.AddRow(slack.NewTableRawTextCell(fmt.Sprint("r", i)), slack.NewTableRawTextCell("x"))
	}
	return tb
}

func TestBlockValidation(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 30*time.Second)
	many := func(n int) []slack.Block {
		var bs []slack.Block
		for i := 0; i < n; i++ {
			bs = append(bs, section(fmt.Sprint("block ", i)))
		}
		return bs
	}
	button := func(text string) slack.Block {
		return slack.NewActionBlock("", slack.NewButtonBlockElement("b", "v", txt(text)))
	}
	tests := []struct {
		name    string
		blocks  []slack.Block
		want    string
		wantMsg string
	}{
		{"50 blocks", many(50), "", ""},
		{"51 blocks", many(51), "invalid_blocks", "no more than 50 items allowed [json-pointer:/blocks]"},
		{"section text 3000", []slack.Block{section(strings.Repeat("a", 3000))}, "", ""},
		{"section text 3001", []slack.Block{section(strings.Repeat("a", 3001))}, "invalid_blocks", "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"},
		{"one table", []slack.Block{table(3)}, "", ""},
		{"two tables", []slack.Block{table(2), table(2)}, "invalid_blocks", "only one table block is allowed per message [json-pointer:/blocks/1]"},
		{"table 101 rows", []slack.Block{table(101)}, "invalid_blocks", "no more than 100 items allowed [json-pointer:/blocks/0/rows]"},
		{"header 151", []slack.Block{slack.NewHeaderBlock(txt(strings.Repeat("h", 151)))}, "invalid_blocks", "must be less than 151 characters [json-pointer:/blocks/0/text/text]"},
		{"header mrkdwn", []slack.Block{slack.NewHeaderBlock(md("*h*"))}, "invalid_blocks", "must be one of plain_text [json-pointer:/blocks/0/text/type]"},
		{"button text 76", []slack.Block{button(strings.Repeat("b", 76))}, "invalid_blocks", "must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]"},
		{"11 fields", []slack.Block{slack.NewSectionBlock(nil, func() []*slack.TextBlockObject {
			var fs []*slack.TextBlockObject
			for i := 0; i < 11; i++ {
				fs = append(fs, md("f"))
			}
			return fs
		}(), nil)}, "invalid_blocks", "no more than 10 items allowed [json-pointer:/blocks/0/fields]"},
		{"duplicate block_id", []slack.Block{slack.NewDividerBlock(), slack.NewActionBlock("x", slack.NewButtonBlockElement("a", "v", txt("A"))), slack.NewContextBlock("x", md("c"))}, "invalid_blocks", "duplicate block_id: x [json-pointer:/blocks/2/block_id]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := api.PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("t", false), slack.MsgOptionBlocks(tc.blocks...))
			if got := slackErr(err); got != tc.want {
				t.Fatalf("error = %q, want %q", got, tc.want)
			}
			if tc.wantMsg == "" {
				return
			}
			var se slack.SlackErrorResponse
			errors.As(err, &se)
			found := false
			for _, m := range se.ResponseMetadata.Messages {
				found = found || m == "[ERROR] "+tc.wantMsg
			}
			if !found {
				t.Errorf("messages %q lack %q", se.ResponseMetadata.Messages, tc.wantMsg)
			}
		})
	}
	// Blocks that are not JSON at all.
	resp, err := http.PostForm(s.APIURL()+"chat.postMessage", url.Values{"token": {BotToken}, "channel": {ChannelIncident}, "blocks": {"[{"}})
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if body["error"] != "invalid_blocks_format" {
		t.Errorf("broken JSON blocks: %v", body)
	}
	// Nothing was stored by the failed posts: 3 valid ones only.
	if n := len(s.Messages(ChannelIncident)); n != 3 {
		t.Errorf("stored %d messages, want 3", n)
	}
}

func TestBlockIDsAssigned(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 30*time.Second)
	_, ts, err := api.PostMessageContext(ctx, ChannelIncident, slack.MsgOptionBlocks(
		section("no id"), slack.NewActionBlock("", slack.NewButtonBlockElement("go", "1", txt("Go"))),
		slack.NewSectionBlock(md("kept"), nil, nil, slack.SectionBlockOptionBlockID("mine")),
	))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := s.Message(ChannelIncident, ts)
	if !ok {
		t.Fatal("message not stored")
	}
	var blocks []map[string]any
	if err := json.Unmarshal(m.Blocks, &blocks); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for i, b := range blocks {
		id, _ := b["block_id"].(string)
		if id == "" {
			t.Errorf("block %d has no block_id", i)
		}
		ids[id] = true
	}
	if blocks[2]["block_id"] != "mine" || len(ids) != 3 {
		t.Errorf("block ids %v", ids)
	}
	// The API answer carries the same block IDs (slack-go parses them).
	_, _, msg, err := api.PostMessageWithResponseContext(ctx, ChannelIncident, slack.MsgOptionBlocks(section("again")))
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Blocks.BlockSet) != 1 || msg.Blocks.BlockSet[0].ID() == "" {
		t.Errorf("response message blocks %+v", msg.Blocks.BlockSet)
	}
}

func TestMonotonicTS(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 60*time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]bool{}
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := 0; i < 25; i++ {
				_, ts, err := api.PostMessageContext(ctx, ChannelGeneral, slack.MsgOptionText("m", false))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got[ts] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(got) != 100 {
		t.Fatalf("%d distinct ts for 100 posts", len(got))
	}
	msgs := s.Messages(ChannelGeneral)
	prev := 0.0
	for i, m := range msgs {
		sec, frac, ok := strings.Cut(m.TS, ".")
		if !ok || len(frac) != 6 || len(sec) != 10 {
			t.Fatalf("ts %q is not Slack-shaped", m.TS)
		}
		f, _ := strconv.ParseFloat(m.TS, 64)
		if i > 0 && !(m.TS > msgs[i-1].TS) {
			t.Fatalf("ts not increasing: %s after %s", m.TS, msgs[i-1].TS)
		}
		if time.Since(time.Unix(int64(f), 0)) > time.Minute {
			t.Fatalf("ts %s is not now", m.TS)
		}
		prev = f
	}
	_ = prev
}

func TestRateLimit(t *testing.T) {
	s := newServer(t, Options{})
	ctx := ctxFor(t, 30*time.Second)

	s.RateLimit("chat.postMessage", time.Second, 1)
	_, _, err := apiClient(s, BotToken).PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("a", false))
	var rl *slack.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != time.Second {
		t.Fatalf("without retries: err = %v, want RateLimitedError(1s)", err)
	}
	if _, _, err := apiClient(s, BotToken).PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("b", false)); err != nil {
		t.Fatalf("limit of 1 should be used up: %v", err)
	}

	// With retries, slack-go waits Retry-After and tries again.
	s.RateLimit("chat.postMessage", 2*time.Second, 1)
	_, _, err = apiClient(s, BotToken, slack.OptionRetry(2)).PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("c", false))
	if err != nil {
		t.Fatalf("with retries: %v", err)
	}
	calls := s.CallsTo("chat.postMessage")
	if len(calls) != 4 || calls[2].Error != "ratelimited" || calls[3].Error != "" || calls[3].Params["text"] != "c" {
		t.Fatalf("calls %+v", calls)
	}
	if gap := calls[3].Time.Sub(calls[2].Time); gap < 2*time.Second {
		t.Errorf("slack-go retried after %v, before Retry-After (2s)", gap)
	}
}

func TestFailAndDelay(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 30*time.Second)
	s.FailMethod("chat.update", "internal_error", 2)
	_, ts, err := api.PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("x", false))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"internal_error", "internal_error", ""} {
		_, _, _, err := api.UpdateMessageContext(ctx, ChannelIncident, ts, slack.MsgOptionText(fmt.Sprint("y", i), false))
		if got := slackErr(err); got != want {
			t.Errorf("update %d: %q, want %q", i, got, want)
		}
	}
	s.FailMethod("*", "fatal_error", -1)
	if _, err := api.AuthTestContext(ctx); slackErr(err) != "fatal_error" {
		t.Errorf("wildcard fault: %v", err)
	}
	s.FailMethod("*", "", 0)
	if _, err := api.AuthTestContext(ctx); err != nil {
		t.Errorf("after clearing: %v", err)
	}

	s.DelayMethod("users.info", 5*time.Second)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := api.GetUserInfoContext(short, UserAlice); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("delayed call: %v, want deadline exceeded", err)
	}
	s.DelayMethod("users.info", 0)
	if _, err := api.GetUserInfoContext(ctx, UserAlice); err != nil {
		t.Errorf("after clearing delay: %v", err)
	}
}

func TestWorkspaceMethods(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 30*time.Second)
	u, err := api.GetUserInfoContext(ctx, UserDana)
	if err != nil {
		t.Fatal(err)
	}
	if u.ID != UserDana || u.Name != "dana" || u.RealName != "Dana Diaz" || u.Profile.DisplayName != "dana" || u.TZ != "Europe/London" || u.IsBot {
		t.Errorf("users.info dana = %+v", u)
	}
	if _, err := api.GetUserInfoContext(ctx, "U0NOBODY"); slackErr(err) != "user_not_found" {
		t.Errorf("unknown user: %v", err)
	}
	for group, want := range map[string]string{GroupOnCall: "U0ALICE,U0BOB", GroupDBA: "U0DANA,U0ERIN"} {
		ids, err := api.GetUserGroupMembersContext(ctx, group)
		if err != nil || strings.Join(ids, ",") != want {
			t.Errorf("usergroups.users.list %s = %v, %v", group, ids, err)
		}
	}
	if _, err := api.GetUserGroupMembersContext(ctx, "S0NONE"); slackErr(err) != "no_such_subteam" {
		t.Errorf("unknown group: %v", err)
	}
	ch, err := api.GetConversationInfoContext(ctx, &slack.GetConversationInfoInput{ChannelID: ChannelIncident})
	if err != nil || ch.Name != "incident-rollbacks" || !ch.IsMember || !ch.IsChannel {
		t.Errorf("conversations.info = %+v, %v", ch, err)
	}
	if _, err := api.GetConversationInfoContext(ctx, &slack.GetConversationInfoInput{ChannelID: "C0NONE"}); slackErr(err) != "channel_not_found" {
		t.Errorf("unknown channel: %v", err)
	}
	_, ts, err := api.PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("react to me", false))
	if err != nil {
		t.Fatal(err)
	}
	ref := slack.NewRefToMessage(ChannelIncident, ts)
	if err := api.AddReactionContext(ctx, "eyes", ref); err != nil {
		t.Fatal(err)
	}
	if err := api.AddReactionContext(ctx, "eyes", ref); slackErr(err) != "already_reacted" {
		t.Errorf("second reaction: %v", err)
	}
	if m, _ := s.Message(ChannelIncident, ts); strings.Join(m.Reactions, ",") != "eyes" {
		t.Errorf("reactions = %v", m.Reactions)
	}
	// Ephemeral, delete, a DM by user ID, a thread reply to a reply.
	ets, err := api.PostEphemeralContext(ctx, ChannelIncident, UserEve, slack.MsgOptionText("only eve", false))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Message(ChannelIncident, ets); !m.Ephemeral || m.EphemeralFor != UserEve {
		t.Errorf("ephemeral = %+v", m)
	}
	if _, _, err := api.DeleteMessageContext(ctx, ChannelIncident, ts); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Message(ChannelIncident, ts); !m.Deleted {
		t.Error("deleted message not marked")
	}
	if _, _, err := api.DeleteMessageContext(ctx, ChannelIncident, ts); slackErr(err) != "message_not_found" {
		t.Errorf("double delete: %v", err)
	}
	dm, _, err := api.PostMessageContext(ctx, UserBob, slack.MsgOptionText("psst", false))
	if err != nil || dm != "D0BOB" {
		t.Errorf("DM channel = %q, %v", dm, err)
	}
	if _, _, err := api.PostMessageContext(ctx, "C0NONE", slack.MsgOptionText("x", false)); slackErr(err) != "channel_not_found" {
		t.Errorf("unknown channel post: %v", err)
	}
	if _, _, err := api.PostMessageContext(ctx, ChannelIncident); slackErr(err) != "no_text" {
		t.Errorf("empty post: %v", err)
	}
}

func TestScheduleMessage(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 30*time.Second)
	at := time.Now().Add(time.Hour).Unix()
	ch, id, err := api.ScheduleMessageContext(ctx, ChannelIncident, strconv.FormatInt(at, 10), slack.MsgOptionText("verify again", false))
	if err != nil || ch != ChannelIncident || !strings.HasPrefix(id, "Q") {
		t.Fatalf("schedule: %q %q %v", ch, id, err)
	}
	sch := s.Scheduled()
	if len(sch) != 1 || sch[0].ID != id || sch[0].PostAt.Unix() != at || sch[0].Text != "verify again" || sch[0].Posted {
		t.Errorf("scheduled = %+v", sch)
	}
	past := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10)
	if _, _, err := api.ScheduleMessageContext(ctx, ChannelIncident, past, slack.MsgOptionText("x", false)); slackErr(err) != "time_in_past" {
		t.Errorf("past: %v", err)
	}
	// A message due in a second is posted by the server.
	soon := strconv.FormatInt(time.Now().Add(1500*time.Millisecond).Unix(), 10)
	if _, _, err := api.ScheduleMessageContext(ctx, ChannelIncident, soon, slack.MsgOptionText("due now", false)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitForMessage(ctx, func(m Message) bool { return m.Text == "due now" }); err != nil {
		t.Fatalf("scheduled message not posted: %v", err)
	}
}

func TestMoreWorkspaceMethods(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 30*time.Second)
	users, err := api.GetUsersContext(ctx)
	if err != nil || len(users) != 6 {
		t.Fatalf("users.list: %d users, %v", len(users), err)
	}
	u, err := api.GetUserByEmailContext(ctx, "erin@acme.example")
	if err != nil || u.ID != UserErin {
		t.Errorf("users.lookupByEmail: %+v %v", u, err)
	}
	members, _, err := api.GetUsersInConversationContext(ctx, &slack.GetUsersInConversationParameters{ChannelID: ChannelIncident})
	if err != nil || len(members) != 6 {
		t.Errorf("conversations.members: %v %v", members, err)
	}
	team, err := api.GetTeamInfoContext(ctx)
	if err != nil || team.ID != TeamID || team.Domain != TeamDomain {
		t.Errorf("team.info: %+v %v", team, err)
	}
	resp, err := http.PostForm(s.APIURL()+"admin.users.remove", url.Values{"token": {BotToken}})
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if body["error"] != "unknown_method" {
		t.Errorf("unknown method: %v", body)
	}
}

package slackemu

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
)

func TestMrkdwn(t *testing.T) {
	r := mrkdwnRenderer{viewer: UserBob, loc: time.UTC}
	tests := []struct {
		in      string
		want    []string // substrings of the output
		notWant []string
	}{
		{in: "*bold* and _italic_ and ~gone~", want: []string{"<b>bold</b>", "<i>italic</i>", "<s>gone</s>"}},
		{in: "snake_case_name and 2*3*4", want: []string{"snake_case_name", "2*3*4"}, notWant: []string{"<i>", "<b>"}},
		{in: "*a* *b*", want: []string{"<b>a</b> <b>b</b>"}},
		{in: "run `kubectl get *pods*` now", want: []string{`<code class="sk-code">kubectl get *pods*</code>`}, notWant: []string{"<b>"}},
		{in: "```line 1\n*line* 2```", want: []string{"<pre class=\"sk-pre\">line 1\n*line* 2</pre>"}},
		{in: "<https://grafana.example/d/x?a=1&amp;b=2|the dashboard>", want: []string{`<a href="https://grafana.example/d/x?a=1&amp;b=2" target="_blank" rel="noopener">the dashboard</a>`}},
		{in: "<https://example.com>", want: []string{`>https://example.com</a>`}},
		{in: "<@U0ALICE> and <@U0BOB>", want: []string{`<span class="mention" title="U0ALICE">@alice</span>`, `<span class="mention me" title="U0BOB">@bob</span>`}},
		{in: "ping <!subteam^S0ONCALL|@oncall> in <#C0GENERAL>", want: []string{"@oncall</span>", "#general</span>", `class="mention me"`}},
		{in: ":white_check_mark: done :hourglass_flowing_sand: :no_such_emoji:", want: []string{"✅", "⏳", ":no_such_emoji:"}},
		{in: ":x: :warning:", want: []string{"❌", "⚠️"}},
		{in: "a &lt;b&gt; &amp; c", want: []string{"a &lt;b&gt; &amp; c"}, notWant: []string{"&amp;lt;"}},
		{in: "<script>alert(1)</script>", want: []string{"&lt;script&gt;"}, notWant: []string{"<script"}},
		{in: "<javascript:alert(1)|click>", notWant: []string{"href", "<a "}},
		{in: "> quoted *text*\nafter", want: []string{`<blockquote class="sk-quote">quoted <b>text</b></blockquote>after`}},
		{in: "line1\nline2", want: []string{"line1<br>line2"}},
		{in: "<!date^0^{date_num} {time}|fallback>", want: []string{"1970-01-01 00:00"}},
		{in: "<!here> heads up", want: []string{"@here</span>"}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got := r.render(tc.in)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("render(%q) = %q, lacks %q", tc.in, got, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("render(%q) = %q, has %q", tc.in, got, w)
				}
			}
		})
	}
}

func getPage(t *testing.T, s *Server, as, channel string) string {
	t.Helper()
	resp, err := http.Get(s.PageURL() + "?as=" + as + "&channel=" + channel)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("page: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

// TestPageHTML checks the server-rendered page: Block Kit, threads,
// ephemeral messages per viewer, reactions, scheduled messages, escaping.
func TestPageHTML(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 30*time.Second)
	rich := slack.NewRichTextBlock("",
		slack.NewRichTextSection(
			slack.NewRichTextSectionTextElement("Steps for ", nil),
			slack.NewRichTextSectionUserElement(UserDana, nil),
			slack.NewRichTextSectionTextElement(" (bold)", &slack.RichTextSectionTextStyle{Bold: true}),
			slack.NewRichTextSectionEmojiElement("rocket", 0, nil),
		),
		slack.NewRichTextList(slack.RTEListOrdered, 0,
			slack.NewRichTextSection(slack.NewRichTextSectionTextElement("drain traffic", nil)),
			slack.NewRichTextSection(slack.NewRichTextSectionTextElement("restore snapshot", nil)),
		),
	)
	tbl := slack.NewTableBlock("")
	tbl.AddRow(slack.NewTableRawTextCell("Check"), slack.NewTableRawTextCell("Value"))
	tbl.AddRow(slack.NewTableRawTextCell("p95 latency"), slack.NewTableRawNumberCell(412.5))
	_, parent, err := api.PostMessageContext(ctx, ChannelIncident, slack.MsgOptionBlocks(
		slack.NewHeaderBlock(txt("Verification :mag:")),
		rich, tbl,
		slack.NewSectionBlock(md("<img src=x onerror=alert(1)> & co"), nil, nil),
	))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.PostMessageContext(ctx, ChannelIncident, slack.MsgOptionTS(parent), slack.MsgOptionText("a reply in the thread", false)); err != nil {
		t.Fatal(err)
	}
	if _, err := api.PostEphemeralContext(ctx, ChannelIncident, UserAlice, slack.MsgOptionText("psst alice", false)); err != nil {
		t.Fatal(err)
	}
	if _, err := api.PostEphemeralContext(ctx, ChannelIncident, UserBob, slack.MsgOptionText("psst bob", false)); err != nil {
		t.Fatal(err)
	}
	if err := api.AddReactionContext(ctx, "eyes", slack.NewRefToMessage(ChannelIncident, parent)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("<script>alert(1)</script>", false)); err != nil {
		t.Fatal(err)
	}
	at := strconv.FormatInt(time.Now().Add(2*time.Hour).Unix(), 10)
	if _, _, err := api.ScheduleMessageContext(ctx, ChannelIncident, at, slack.MsgOptionText("re-check error rate", false)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PostUserMessage(ctx, UserEve, ChannelIncident, "what is going on <@U0ALICE>?"); err != nil {
		t.Fatal(err)
	}

	page := getPage(t, s, UserAlice, ChannelIncident)
	for _, want := range []string{
		"Local Slack emulator", `<table class="sk-table">`, "<th>Check</th>", `text-align:right">412.5</td>`,
		"🔍", "🚀", `<b> (bold)</b>`, `<ol class="sk-list"`, "<li>restore snapshot</li>", "@dana",
		"Only visible to you", "psst alice", "only visible to @bob", "1 reply", "a reply in the thread",
		`class="reaction"`, "👀", "Scheduled", "re-check error rate", "Eve Ellis", `class="mention me" title="U0ALICE">@alice`,
		"rollbot offline",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page as alice lacks %q", want)
		}
	}
	for _, bad := range []string{"psst bob", "<script>alert", "<img src=x"} {
		if strings.Contains(page, bad) {
			t.Errorf("page as alice contains %q", bad)
		}
	}
	if p := getPage(t, s, UserBob, ChannelIncident); !strings.Contains(p, "psst bob") || strings.Contains(p, "psst alice") {
		t.Error("bob's page shows the wrong ephemeral messages")
	}
}

// TestPageEvents reads the SSE stream: a first state, then a new state
// when a message arrives.
func TestPageEvents(t *testing.T) {
	s := newServer(t, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/ui/events?as="+UserBob+"&channel="+ChannelIncident, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	next := func() pageState {
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("read stream: %v", err)
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var st pageState
				if err := json.Unmarshal([]byte(data), &st); err != nil {
					t.Fatal(err)
				}
				return st
			}
		}
	}
	first := next()
	if !strings.Contains(string(first.Messages), "No messages yet") || !strings.Contains(string(first.Status), "offline") {
		t.Errorf("first state: %+v", first)
	}
	if _, _, err := apiClient(s, BotToken).PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("fresh *news*", false)); err != nil {
		t.Fatal(err)
	}
	second := next()
	if !strings.Contains(string(second.Messages), "fresh <b>news</b>") {
		t.Errorf("second state lacks the message: %s", second.Messages)
	}
}

// TestPageActions posts to the page's endpoints like its script does.
func TestPageActions(t *testing.T) {
	s := newServer(t, Options{AckTimeout: 500 * time.Millisecond})
	send := func(body string) map[string]any {
		t.Helper()
		resp, err := http.Post(s.base+"/ui/send", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	// No app connected: Slack's dispatch_failed.
	out := send(`{"as":"U0ALICE","channel":"C0INCIDENT","text":"/rollback checkout"}`)
	if out["ok"] != false || !strings.Contains(out["error"].(string), `/rollback failed with the error "dispatch_failed"`) {
		t.Errorf("slash command without app: %v", out)
	}
	// A plain message with mentions is stored with Slack's encoding.
	out = send(`{"as":"U0BOB","channel":"C0INCIDENT","text":"hey @rollbot & @oncall <3"}`)
	if out["ok"] != true {
		t.Fatalf("plain message: %v", out)
	}
	msgs := s.Messages(ChannelIncident)
	if len(msgs) != 1 || msgs[0].User != UserBob || msgs[0].Text != "hey <@U0ROLLBOT> &amp; <!subteam^S0ONCALL|@oncall> &lt;3" {
		t.Errorf("stored %+v", msgs)
	}
	if out := send(`{"as":"U0NOBODY","channel":"C0INCIDENT","text":"x"}`); out["ok"] != false {
		t.Errorf("unknown user accepted: %v", out)
	}
}

package slackemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// chromiumPath finds Debian's chromium; a missing browser fails the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("chromium not found: install the Debian package chromium (listed in .ci/apt-packages)")
	return ""
}

// newBrowser starts headless Chromium for the test and returns a tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("hide-scrollbars", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1400, 1000)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// step bounds one browser action so a broken page fails fast.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// lateEnter is the character half of an Enter key on its own (kb.Encode
// gives a key down, a character and a key up).
func lateEnter() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, k := range kb.Encode('\n') {
			if k.Type == kb.KeyChar {
				if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, *k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func evalString(t *testing.T, ctx context.Context, js string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// screenshot saves a PNG of the page under the test's artifact directory
// and, when ROLLBOT_SCREENSHOT_DIR names a directory, copies it there for
// people to look at.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	if dir := os.Getenv("ROLLBOT_SCREENSHOT_DIR"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Logf("copy screenshot to %s: %v", dir, err)
		} else {
			t.Logf("screenshot copied to %s", filepath.Join(dir, name))
		}
	}
}

// demoBot answers /rollback like rollbot would: a rich request message
// with a primary and a danger button (with a confirm dialog) and a modal.
type demoBot struct {
	mu   sync.Mutex
	errs []error
}

func (d *demoBot) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.errs = append(d.errs, err)
}

func (d *demoBot) handle(b *testBot, evt socketmode.Event) {
	switch evt.Type {
	case socketmode.EventTypeSlashCommand:
		cmd := evt.Data.(slack.SlashCommand)
		_ = b.sm.Ack(*evt.Request)
		svc := strings.TrimSpace(cmd.Text)
		tbl := slack.NewTableBlock("")
		tbl.AddRow(slack.NewTableRawTextCell("Revision"), slack.NewTableRawTextCell("Image"), slack.NewTableRawTextCell("Deployed"), slack.NewTableRawTextCell("Error rate"))
		tbl.AddRow(slack.NewTableRawTextCell("r42 (current)"), slack.NewTableRawTextCell(svc+":v2.4.0"), slack.NewTableRawTextCell("12 min ago"), slack.NewTableRawTextCell("31.0% :x:"))
		tbl.AddRow(slack.NewTableRawTextCell("r41 (target)"), slack.NewTableRawTextCell(svc+":v2.3.9"), slack.NewTableRawTextCell("3 days ago"), slack.NewTableRawTextCell("0.2% :white_check_mark:"))
		approve := slack.NewButtonBlockElement("approve", "op-7", txt("Approve rollback")).WithStyle(slack.StylePrimary)
		cancel := slack.NewButtonBlockElement("cancel", "op-7", txt("Cancel rollback")).WithStyle(slack.StyleDanger).
			WithConfirm(slack.NewConfirmationBlockObject(txt("Cancel the rollback?"),
				md("*"+svc+"* stays on r42 and the incident stays open."), txt("Cancel rollback"), txt("Keep it")).WithStyle(slack.StyleDanger))
		reason := slack.NewButtonBlockElement("reason", "op-7", txt("Add a reason"))
		_, _, err := b.api.PostMessage(cmd.ChannelID,
			slack.MsgOptionText("Rollback of "+svc+" requested", false),
			slack.MsgOptionBlocks(
				slack.NewHeaderBlock(txt(":rewind: Rollback requested: "+svc)),
				slack.NewSectionBlock(md(fmt.Sprintf(":warning: <@%s> wants to roll back *%s* from `v2.4.0` to `v2.3.9`. An approval from <!subteam^%s> is needed.", cmd.UserID, svc, GroupOnCall)), nil, nil),
				slack.NewSectionBlock(nil, []*slack.TextBlockObject{
					md("*Service*\n" + svc), md("*Environment*\nproduction"),
					md("*Requested by*\n<@" + cmd.UserID + ">"), md("*Status*\n:hourglass_flowing_sand: waiting for approval"),
				}, nil),
				tbl,
				slack.NewContextBlock("", md("Incident INC-1042 · error ratio 31% over 5 min · <https://grafana.example/d/checkout|dashboard>")),
				slack.NewDividerBlock(),
				slack.NewActionBlock("decision", approve, cancel, reason),
			))
		if err != nil {
			d.fail(err)
		}
		if _, err := b.api.PostEphemeral(cmd.ChannelID, cmd.UserID, slack.MsgOptionText("Only you see this: you cannot approve your own rollback, ask someone in <!subteam^"+GroupOnCall+">.", false)); err != nil {
			d.fail(err)
		}
	case socketmode.EventTypeInteractive:
		cb := evt.Data.(slack.InteractionCallback)
		switch cb.Type {
		case slack.InteractionTypeBlockActions:
			_ = b.sm.Ack(*evt.Request)
			act := cb.ActionCallback.BlockActions[0]
			switch act.ActionID {
			case "cancel", "approve":
				verdict := ":x: Rollback *cancelled* by <@" + cb.User.ID + ">. checkout stays on r42."
				if act.ActionID == "approve" {
					verdict = ":white_check_mark: Rollback *approved* by <@" + cb.User.ID + ">. Rolling back to r41 :hourglass_flowing_sand:"
				}
				_, _, _, err := b.api.UpdateMessage(cb.Channel.ID, cb.Container.MessageTs,
					slack.MsgOptionText(verdict, false),
					slack.MsgOptionBlocks(
						slack.NewHeaderBlock(txt(":rewind: Rollback request: checkout")),
						slack.NewSectionBlock(md(verdict), nil, nil),
						slack.NewContextBlock("", md("Decided at <!date^"+fmt.Sprint(time.Now().Unix())+"^{time}|now> · op-7")),
					))
				if err != nil {
					d.fail(err)
				}
			case "reason":
				_, err := b.api.OpenView(cb.TriggerID, slack.ModalViewRequest{
					Type: slack.VTModal, Title: txt("Rollback reason"), Submit: txt("Save"), Close: txt("Cancel"),
					CallbackID: "reason", PrivateMetadata: cb.Container.MessageTs,
					Blocks: slack.Blocks{BlockSet: []slack.Block{
						slack.NewSectionBlock(md("Why roll back *checkout*? The reason goes to the incident timeline."), nil, nil),
						slack.NewInputBlock("why", txt("Reason"), txt("At least 10 characters."),
							slack.NewPlainTextInputBlockElement(txt("e.g. error rate 31% since v2.4.0"), "text")),
					}},
				})
				if err != nil {
					d.fail(err)
				}
			}
		case slack.InteractionTypeViewSubmission:
			why := cb.View.State.Values["why"]["text"].Value
			if len(why) < 10 {
				_ = b.sm.Ack(*evt.Request, slack.NewErrorsViewSubmissionResponse(map[string]string{"why": "Please say a bit more: at least 10 characters."}))
				return
			}
			_ = b.sm.Ack(*evt.Request)
			if _, _, err := b.api.PostMessage(ChannelIncident, slack.MsgOptionTS(cb.View.PrivateMetadata),
				slack.MsgOptionText(":memo: Reason from <@"+cb.User.ID+">: "+why, false)); err != nil {
				d.fail(err)
			}
		}
	}
}

// TestBrowser drives the page in headless Chromium: alice types
// /rollback in the composer, the bot answers with a danger button that has
// a confirm dialog; bob clicks it, accepts the dialog and sees the bot's
// chat.update; then a modal with an inline error is submitted.
func TestBrowser(t *testing.T) {
	s := newServer(t, Options{TriggerTTL: 10 * time.Second})
	bot := &demoBot{}
	startBot(t, s, bot.handle)
	if err := s.WaitConnected(ctxFor(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	ctx := newBrowser(t)

	// Alice types the slash command.
	step(t, ctx, "open page as alice",
		chromedp.Navigate(s.PageURL()+"?as="+UserAlice),
		chromedp.WaitVisible(chromedp.CSS("#composer-input")),
		chromedp.Poll[chromedp.Void](`document.querySelector("#bot-status").textContent.includes("rollbot connected")`),
	)
	step(t, ctx, "type /rollback",
		chromedp.SendKeys(chromedp.CSS("#composer-input"), "/rollback checkout\n"),
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="cancel"]`)),
	)
	if got := evalString(t, ctx, `document.querySelector("#composer-input").value`); got != "" {
		t.Errorf("composer not cleared: %q", got)
	}
	// chromedp sends Enter's character apart from the key; when the send
	// is quick, it reaches the composer after it was cleared (CI saw "\n").
	step(t, ctx, "a late Enter character", lateEnter())
	if got := evalString(t, ctx, `document.querySelector("#composer-input").value`); got != "" {
		t.Errorf("composer after the Enter key's character arrived late: %q", got)
	}
	msgText := evalString(t, ctx, `document.querySelector("#messages").innerText`)
	for _, want := range []string{"Rollback requested: checkout", "@alice wants to roll back", "@oncall",
		"Only visible to you", "⚠️", "⏳", "Revision", "r41 (target)", "dashboard"} {
		if !strings.Contains(msgText, want) {
			t.Errorf("page lacks %q:\n%s", want, msgText)
		}
	}
	if n := evalString(t, ctx, `String(document.querySelectorAll("#messages table.sk-table tr").length)`); n != "3" {
		t.Errorf("table rows rendered: %s", n)
	}

	// Bob opens the page, clicks the danger button, sees the confirm dialog.
	step(t, ctx, "open page as bob",
		chromedp.Navigate(s.PageURL()+"?as="+UserBob),
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="cancel"]`)),
	)
	if strings.Contains(evalString(t, ctx, `document.querySelector("#messages").innerText`), "Only visible to you") {
		t.Error("bob sees alice's ephemeral message")
	}
	step(t, ctx, "click the danger button",
		chromedp.Click(chromedp.CSS(`button[data-action="cancel"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-dialog .confirm-ok`)),
	)
	dlg := evalString(t, ctx, `document.querySelector("#confirm-dialog").innerText`)
	if !strings.Contains(dlg, "Cancel the rollback?") || !strings.Contains(dlg, "stays on r42") || !strings.Contains(dlg, "Keep it") {
		t.Errorf("confirm dialog text: %q", dlg)
	}
	if len(s.CallsTo("chat.update")) != 0 {
		t.Error("the click went through before the confirm dialog was accepted")
	}
	screenshot(t, ctx, "slackemu-confirm.png")
	step(t, ctx, "accept the confirm dialog",
		chromedp.Click(chromedp.CSS(`#confirm-dialog .confirm-ok`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#confirm-dialog`)),
		chromedp.Poll[chromedp.Void](`document.querySelector("#messages").innerText.includes("cancelled by")`),
	)
	after := evalString(t, ctx, `document.querySelector("#messages").innerText`)
	if !strings.Contains(after, "Rollback cancelled by @bob") || !strings.Contains(after, "(edited)") {
		t.Errorf("updated message not shown:\n%s", after)
	}
	if n := evalString(t, ctx, `String(document.querySelectorAll('button[data-action="cancel"]').length)`); n != "0" {
		t.Errorf("buttons left after the update: %s", n)
	}
	m, _ := s.WaitForMessage(ctxFor(t, 5*time.Second), func(m Message) bool { return strings.Contains(m.Text, "cancelled") })
	if !m.Edited || !strings.Contains(m.PlainText(), "<@U0BOB>") {
		t.Errorf("stored message after the click: %+v", m)
	}

	// A second request; bob adds a reason in a modal.
	if err := s.SlashCommand(ctxFor(t, 10*time.Second), UserAlice, ChannelIncident, "/rollback", "payments"); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "open the modal",
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="reason"]:not([disabled])`)),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('button[data-action="reason"]').length == 1`),
		chromedp.Click(chromedp.CSS(`button[data-action="reason"]`)),
		chromedp.WaitVisible(chromedp.CSS(`.modal input[data-block="why"]`)),
		chromedp.SendKeys(chromedp.CSS(`.modal input[data-block="why"]`), "too short"),
		chromedp.Click(chromedp.CSS(`.modal .modal-submit`)),
		chromedp.WaitVisible(chromedp.CSS(`.modal .has-error .sk-error`)),
	)
	if e := evalString(t, ctx, `document.querySelector(".modal .sk-error").innerText`); !strings.Contains(e, "at least 10 characters") {
		t.Errorf("inline error: %q", e)
	}
	if v := evalString(t, ctx, `document.querySelector('.modal input[data-block="why"]').value`); v != "too short" {
		t.Errorf("typed value lost on re-render: %q", v)
	}
	screenshot(t, ctx, "slackemu-modal.png")
	step(t, ctx, "fix and submit",
		chromedp.SendKeys(chromedp.CSS(`.modal input[data-block="why"]`), ": p99 latency doubled"),
		chromedp.Click(chromedp.CSS(`.modal .modal-submit`)),
		chromedp.WaitNotPresent(chromedp.CSS(`.modal`)),
		chromedp.Poll[chromedp.Void](`document.querySelector("#messages").innerText.includes("p99 latency doubled")`),
	)
	if txt := evalString(t, ctx, `document.querySelector(".thread").innerText`); !strings.Contains(txt, "1 reply") || !strings.Contains(txt, "Reason from @bob") {
		t.Errorf("thread reply: %q", txt)
	}
	// The page's composer also posts plain messages with mentions.
	step(t, ctx, "post a message",
		chromedp.SendKeys(chromedp.CSS("#composer-input"), "thanks @alice, watching the dashboards :eyes:\n"),
		chromedp.Poll[chromedp.Void](`document.querySelector("#messages").innerText.includes("watching the dashboards")`),
	)
	screenshot(t, ctx, "slackemu-screenshot.png")

	// The other Block Kit pieces, in #general, as dana.
	postGallery(t, s)
	step(t, ctx, "open #general as dana",
		chromedp.Navigate(s.PageURL()+"?as="+UserDana+"&channel="+ChannelGeneral),
		chromedp.WaitVisible(chromedp.CSS(".sk-rich")),
	)
	gallery := evalString(t, ctx, `document.querySelector("#messages").innerText`)
	for _, want := range []string{"Database restore plan", "drain writes", "412.5", "🚀", "1 reply", "Only visible to you", "Scheduled for"} {
		if !strings.Contains(gallery+evalString(t, ctx, `document.querySelector("#scheduled").innerText`), want) {
			t.Errorf("#general lacks %q:\n%s", want, gallery)
		}
	}
	screenshot(t, ctx, "slackemu-blocks.png")
	bot.mu.Lock()
	defer bot.mu.Unlock()
	if len(bot.errs) > 0 {
		t.Errorf("bot errors: %v", bot.errs)
	}
}

// postGallery posts rich_text, a table with numbers, a quote, a thread, a
// reaction, an ephemeral message and a scheduled one in #general.
func postGallery(t *testing.T, s *Server) {
	t.Helper()
	api := apiClient(s, BotToken)
	ctx := ctxFor(t, 10*time.Second)
	rich := slack.NewRichTextBlock("",
		slack.NewRichTextSection(
			slack.NewRichTextSectionEmojiElement("rocket", 0, nil),
			slack.NewRichTextSectionTextElement(" Database restore plan for ", nil),
			slack.NewRichTextSectionTextElement("orders-db", &slack.RichTextSectionTextStyle{Code: true}),
			slack.NewRichTextSectionTextElement(", owner ", nil),
			slack.NewRichTextSectionUserElement(UserDana, nil),
		),
		slack.NewRichTextList(slack.RTEListOrdered, 0,
			slack.NewRichTextSection(slack.NewRichTextSectionTextElement("drain writes", &slack.RichTextSectionTextStyle{Bold: true})),
			slack.NewRichTextSection(slack.NewRichTextSectionTextElement("restore the 14:00 snapshot", nil)),
			slack.NewRichTextSection(slack.NewRichTextSectionTextElement("compare row counts", nil)),
		),
		&slack.RichTextQuote{Type: slack.RTEQuote, Elements: []slack.RichTextSectionElement{slack.NewRichTextSectionTextElement("Restores take about 20 minutes for 50 GB.", &slack.RichTextSectionTextStyle{Italic: true})}},
	)
	tbl := slack.NewTableBlock("")
	tbl.AddRow(slack.NewTableRawTextCell("Check"), slack.NewTableRawTextCell("Before"), slack.NewTableRawTextCell("After"))
	tbl.AddRow(slack.NewTableRawTextCell("p95 latency (ms)"), slack.NewTableRawNumberCell(412.5), slack.NewTableRawNumberCell(88))
	tbl.AddRow(slack.NewTableRawTextCell("error ratio"), slack.NewTableRawNumberCell(0.31), slack.NewTableRawNumberCell(0.002))
	_, ts, err := api.PostMessageContext(ctx, ChannelGeneral, slack.MsgOptionText("restore plan", false), slack.MsgOptionBlocks(rich, tbl,
		slack.NewContextBlock("", md(":information_source: Posted by rollbot for <@"+UserDana+"> and <@"+UserErin+">"))))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.PostMessageContext(ctx, ChannelGeneral, slack.MsgOptionTS(ts), slack.MsgOptionText(":white_check_mark: Snapshot found: `orders-db-2024-05-01T14:00`", false)); err != nil {
		t.Fatal(err)
	}
	if err := api.AddReactionContext(ctx, "eyes", slack.NewRefToMessage(ChannelGeneral, ts)); err != nil {
		t.Fatal(err)
	}
	if _, err := api.PostEphemeralContext(ctx, ChannelGeneral, UserDana, slack.MsgOptionText("You are the DBA on duty: approve the restore in #incident-rollbacks.", false)); err != nil {
		t.Fatal(err)
	}
	at := fmt.Sprint(time.Now().Add(30 * time.Minute).Unix())
	if _, _, err := api.ScheduleMessageContext(ctx, ChannelGeneral, at, slack.MsgOptionText("Reminder: re-check orders-db replication lag", false)); err != nil {
		t.Fatal(err)
	}
}

package bot

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"rollbot/platforms/probe"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"rollbot/handlers"
	"rollbot/testkit/slackemu"
)

// secretsConfig names secrets through every *_env field of the config.
const secretsConfig = `
incident_channels: [C0INCIDENT]
services:
  myapp:
    platform: simulated
    simulated: {versions: [{artifact: "app:v1"}]}
    approvers: {groups: [S0ONCALL]}
    metrics:
      prometheus: {url: "http://prom:9090", selector: 'job="myapp"', token_env: RB_TEST_PROM_TOKEN}
    database:
      driver: postgres
      dsn_env: RB_TEST_SHOP_DSN
      tool: django
      down:
        kind: command
        command: [migrate, down]
        secret_env:
          DATABASE_URL: {env: RB_TEST_MIGRATE_DSN}
      approvers: {groups: [S0DBA]}
  web:
    platform: simulated
    simulated: {versions: [{artifact: "app:v1"}]}
    approvers: {groups: [S0ONCALL]}
    metrics:
      scrape: {url: "http://web:8080/metrics", token_env: RB_TEST_SCRAPE_TOKEN}
    registry: {repository: "registry.example.com/team/web", username_env: RB_TEST_REG_USER, password_env: RB_TEST_REG_PASS}
`

// leak is each secret as it may appear in a log line or a message.
type leak struct{ what, value string }

func secretsFixture(t *testing.T) ([]string, []leak) {
	t.Helper()
	c, err := ParseConfig([]byte(secretsConfig))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"RB_TEST_PROM_TOKEN":   "prom-token-0123456789",
		"RB_TEST_SCRAPE_TOKEN": "scrape-token-abcdefgh",
		"RB_TEST_SHOP_DSN":     "postgres://reader:rd-pw-7777@db:5432/shop?sslmode=disable",
		"RB_TEST_MIGRATE_DSN":  "host=db user=migrator password=mig-pw-8888 dbname=shop",
		"RB_TEST_REG_PASS":     "registry-pass-3333",
		GateTokenVar:           "gate-token-4444-abcdefgh",
	}
	e := Env{BotToken: "xoxb-bot-token-1111", AppToken: "xapp-app-token-2222", APIURL: DefaultSlackAPIURL,
		RedisURL: "redis://:r3d%40s%2Fpw%3A9@redis:6379/0"}
	secrets := Secrets(c, e, func(k string) string { return env[k] })
	return secrets, []leak{
		{"metrics token_env value", "prom-token-0123456789"},
		{"scrape token_env value", "scrape-token-abcdefgh"},
		{"database dsn_env value", env["RB_TEST_SHOP_DSN"]},
		{"the password inside dsn_env", "rd-pw-7777"},
		{"down secret_env value", env["RB_TEST_MIGRATE_DSN"]},
		{"the password inside a key=value DSN", "mig-pw-8888"},
		{"REDIS_URL", e.RedisURL},
		{"the Redis password percent-encoded, as in REDIS_URL", "r3d%40s%2Fpw%3A9"},
		{"the Redis password decoded", "r3d@s/pw:9"},
		{"the bot token", e.BotToken},
		{"registry password_env value", "registry-pass-3333"},
		{"the deploy gate token", "gate-token-4444-abcdefgh"},
	}
}

// Every value rollbot knows to be secret is redacted from log lines.
func TestSecretsAreRedactedFromLogs(t *testing.T) {
	light(t)
	secrets, leaks := secretsFixture(t)
	for _, l := range leaks {
		t.Run(l.what, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(NewRedactHandler(slog.NewJSONHandler(&buf, nil), secrets...))
			log.Error("dial failed: "+l.value, "err", errors.New("connect "+l.value+": refused"), "value", l.value)
			out := buf.String()
			if strings.Contains(out, l.value) || strings.Count(out, redactedMark) != 3 {
				t.Fatalf("log line: %s", out)
			}
		})
	}
}

// The same values are redacted from every message posted to Slack, in the
// text and the blocks, on the local Slack server.
func TestSecretsAreRedactedFromSlack(t *testing.T) {
	light(t)
	secrets, leaks := secretsFixture(t)
	emu, err := slackemu.New(slackemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	api := slack.New(slackemu.BotToken, slack.OptionAPIURL(emu.APIURL()))
	chat := newRedactChat(&slackChat{api: api}, NewRedactor(secrets...))
	ctx := context.Background()
	for _, l := range leaks {
		t.Run(l.what, func(t *testing.T) {
			m := func(s string) handlers.Msg {
				return handlers.Msg{Text: s + " " + l.value, Blocks: []slack.Block{
					slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "*"+s+"* `"+l.value+"`", false, false), nil, nil)}}
			}
			ts, err := chat.Post(ctx, slackemu.ChannelIncident, "", m("posted"))
			if err != nil {
				t.Fatal(err)
			}
			if err := chat.Update(ctx, slackemu.ChannelIncident, ts, m("updated")); err != nil {
				t.Fatal(err)
			}
			if err := chat.Ephemeral(ctx, slackemu.ChannelIncident, slackemu.UserAlice, m("ephemeral")); err != nil {
				t.Fatal(err)
			}
			if err := chat.Schedule(ctx, slackemu.ChannelIncident, time.Now().Add(time.Hour), m("scheduled")); err != nil {
				t.Fatal(err)
			}
			got, ok := emu.Message(slackemu.ChannelIncident, ts)
			if !ok || !got.Edited || !strings.Contains(got.PlainText(), "updated") || !strings.Contains(string(got.Blocks), redactedMark) {
				t.Fatalf("updated message: %+v", got)
			}
			for _, msg := range emu.Messages(slackemu.ChannelIncident) {
				if strings.Contains(msg.Text+string(msg.Blocks), l.value) {
					t.Errorf("message %s shows the secret: %s", msg.TS, msg.PlainText())
				}
			}
			for _, s := range emu.Scheduled() {
				if strings.Contains(s.Text+string(s.Blocks), l.value) {
					t.Errorf("scheduled message shows the secret")
				}
			}
		})
	}
}

// A smoke test's output reaches the incident thread scrubbed: the bot's
// known secrets and credentials the smoke test prints itself.
func TestSmokeOutputInSlackIsRedacted(t *testing.T) {
	light(t)
	secrets, _ := secretsFixture(t)
	svc, _ := simService(t, "myapp", 5*time.Millisecond)
	svc.HasHealth = false
	svc.Health = &probe.Probes{SmokeCommand: []string{"sh", "-c", `echo "GET /checkout as reader rd-pw-7777"
echo "> Authorization: Bearer eyJhbGciOi.smoke-own-token"
echo "redis: r3d%40s%2Fpw%3A9"
echo "checkout failed"; exit 1`}, SmokeTimeout: 10 * time.Second}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.stop()
	h.opts.Secrets = secrets
	h.start()

	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("smoke output", textHas("checkout failed"))
	var all string
	for _, m := range h.emu.Messages(slackemu.ChannelIncident) {
		all += m.Text + string(m.Blocks)
	}
	for _, s := range []string{"rd-pw-7777", "smoke-own-token", "eyJhbGciOi", "r3d%40s%2Fpw%3A9"} {
		if strings.Contains(all, s) {
			t.Errorf("Slack shows %q:\n%s", s, h.dump())
		}
	}
	if !strings.Contains(all, redactedMark) {
		t.Errorf("no redaction mark in the smoke output:\n%s", h.dump())
	}
}

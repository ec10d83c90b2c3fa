package bot

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/amtest"
	"rollbot/testkit/nettest"
	"rollbot/testkit/promtest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

const alertToken = "am-token-0123456789abcdef"

// TestAlertmanagerOpensOneAssessment: a real Prometheus rule fires on the
// sample app's 5xx ratio; the real Alertmanager (Debian's
// prometheus-alertmanager) delivers the group to the bot's receiver with
// its bearer token, and repeats it; the assessment with the Roll back
// button appears once in the incident channel and nothing is rolled back
// until a person decides. When the errors stop, the rule resolves and
// Alertmanager's resolved notification updates that message.
func TestAlertmanagerOpensOneAssessment(t *testing.T) {
	heavy(t)
	app := promtest.StartSampleApp(t, promtest.BuildSampleApp(t), "-self-load", "40")
	app.SetMode(t, "error_ratio", "0.5")

	svc, s := simService(t, "myapp", 20*time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.stop()
	ops := nettest.FreeAddr(t)
	h.opts.OpsAddr = ops
	h.opts.Alertmanager = &AlertmanagerConfig{Routes: []AlertRoute{{Match: map[string]string{"alertname": "HighErrorRate", "job": "sampleapp"}, Service: "myapp", Channel: slackemu.ChannelIncident}}}
	h.opts.AlertToken = alertToken
	h.start()

	am := amtest.Start(t, fmt.Sprintf(`
route:
  receiver: rollbot
  group_by: [alertname, job]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 3s
receivers:
- name: rollbot
  webhook_configs:
  - url: http://%s/alertmanager
    send_resolved: true
    http_config:
      authorization:
        type: Bearer
        credentials: %s
`, ops, alertToken))
	promtest.StartWith(t, promtest.Options{
		Targets:       []promtest.Target{{Job: "sampleapp", Addr: app.Addr}},
		Alertmanagers: []string{am.Addr},
		Rules: `groups:
- name: rollbot-test
  rules:
  - alert: HighErrorRate
    expr: sum by (job) (rate(http_requests_total{code=~"5.."}[5s])) / sum by (job) (rate(http_requests_total[5s])) > 0.1
    labels: {severity: page}
    annotations: {summary: "more than 10% of requests fail"}
`,
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := h.emu.WaitForMessage(ctx, hasAction(handlers.ActConfirm))
	if err != nil {
		t.Fatalf("no assessment from the alert: %v\nalertmanager:\n%s\nbot log:\n%s", err, am.LogTail(20), h.logs.String())
	}
	wantAll(t, "assessment", a.PlainText(), "Rollback of myapp (RB-1)", "Opened by the Alertmanager alert *HighErrorRate*, firing since",
		"alert HighErrorRate: more than 10% of requests fail")
	// Alertmanager repeats the group (repeat_interval 3s): still one message.
	wait.For(t, time.Minute, "a repeated notification of the group", func() (bool, error) {
		return strings.Count(h.logs.String(), `"outcome":"duplicate"`) >= 1, nil
	})
	roots := 0
	for _, m := range h.emu.Messages(slackemu.ChannelIncident) {
		if m.ThreadTS == "" || m.ThreadTS == m.TS {
			roots++
		}
	}
	if roots != 1 {
		t.Errorf("%d messages in the channel; want the one assessment:\n%s", roots, h.dump())
	}
	// It never acts alone.
	in, err := h.store.Get(context.Background(), "RB-1")
	if err != nil || in.Status != state.AwaitingConfirm || in.RequestedBy != handlers.AlertRequester {
		t.Fatalf("incident %+v %v; want it awaiting a person's confirmation", in, err)
	}
	if got := current(t, s); got != "app:v3" {
		t.Errorf("the service runs %s; nothing should have changed", got)
	}

	// The errors stop: the rule resolves, and so does the message.
	app.SetMode(t, "error_ratio", "0")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel2()
	resolved, err := h.emu.WaitForMessage(ctx2, func(m slackemu.Message) bool {
		return m.TS == a.TS && strings.Contains(m.PlainText(), "resolved at")
	})
	if err != nil {
		t.Fatalf("the assessment was not updated on resolution: %v\nalertmanager:\n%s", err, am.LogTail(20))
	}
	if len(resolved.ActionIDs()) == 0 {
		t.Error("the buttons went away on resolution; a person may still roll back")
	}
	h.wantSteps("RB-1", "request", "assess", "alert")

	// A wrong token is refused, and no token is ever logged.
	for _, tok := range []string{"", "Bearer wrong-token-abcdef0123"} {
		req, _ := http.NewRequest("POST", "http://"+ops+"/alertmanager", bytes.NewReader([]byte(`{}`)))
		if tok != "" {
			req.Header.Set("Authorization", tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("token %q: HTTP %d, want 401", tok, resp.StatusCode)
		}
	}
	logs := h.logs.String()
	if strings.Contains(logs, alertToken) || strings.Contains(logs, "wrong-token-abcdef0123") {
		t.Error("a bearer token is in the bot's log")
	}
	if !strings.Contains(logs, "request without the right bearer token refused") {
		t.Error("the refused requests are not logged")
	}
}

// Ten notifications of one alert group at once (as from several
// Alertmanager peers, each to another bot replica on the same Redis):
// one incident, one assessment; another group of the same service is
// told that rollback is already running.
func TestAlertReceiverOneIncidentPerGroup(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", 20*time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.stop()
	ops := nettest.FreeAddr(t)
	h.opts.OpsAddr = ops
	h.opts.Alertmanager = &AlertmanagerConfig{}
	h.opts.AlertToken = alertToken
	h.start()
	payload := func(group string) []byte {
		return []byte(`{"version":"4","groupKey":` + strconv.Quote(group) + `,"status":"firing","receiver":"rollbot",
"groupLabels":{"alertname":"HighErrorRate"},"commonLabels":{"alertname":"HighErrorRate","service":"myapp"},
"commonAnnotations":{"summary":"5xx above 10%"},"alerts":[{"status":"firing","labels":{"alertname":"HighErrorRate","service":"myapp"},"startsAt":"2026-12-03T07:00:00Z"}]}`)
	}
	post := func(body []byte) int {
		req, _ := http.NewRequest("POST", "http://"+ops+"/alertmanager", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alertToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	codes := make(chan int, 10)
	for range 10 {
		go func() { codes <- post(payload(`{}:{alertname="HighErrorRate"}`)) }()
	}
	for range 10 {
		if c := <-codes; c != http.StatusOK {
			t.Errorf("HTTP %d", c)
		}
	}
	h.waitFor("assessment", hasAction(handlers.ActConfirm))
	if c := post(payload(`{}:{alertname="OtherAlert"}`)); c != http.StatusOK {
		t.Errorf("second group: HTTP %d", c)
	}
	h.waitFor("the second group told a rollback runs", textHas("A rollback of *myapp* is already running: *RB-1*, started by an Alertmanager alert"))
	roots := 0
	for _, m := range h.emu.Messages(slackemu.ChannelIncident) {
		if strings.Contains(m.PlainText(), "Rollback of myapp") {
			roots++
		}
	}
	if roots != 1 {
		t.Errorf("%d assessments; want one:\n%s", roots, h.dump())
	}
	if _, err := h.store.Get(context.Background(), "RB-3"); err == nil {
		t.Error("a third incident was opened")
	}
}

// An alert with no route channel goes to the service's own incident
// channel (services.<name>.channels), not the first of incident_channels,
// where /rollback may not see that service; a channel given by name is
// passed over for the first one given by id, since a click carries the
// channel's id and a click outside the incident's channel is refused.
// The assessment's Roll back button works there.
func TestAlertGoesToTheServicesChannel(t *testing.T) {
	light(t)
	web, _ := simService(t, "web", 20*time.Millisecond)
	web.Channels = []string{slackemu.ChannelTeamWeb}
	pay, _ := simService(t, "payments", 20*time.Millisecond)
	pay.Channels = []string{"#payments-incidents", slackemu.ChannelTeamPay}
	h := newHarness(t, []*handlers.Service{web, pay}, fastEngine())
	h.stop()
	ops := nettest.FreeAddr(t)
	h.opts.OpsAddr = ops
	h.opts.Alertmanager = &AlertmanagerConfig{}
	h.opts.AlertToken = alertToken
	h.start()
	post := func(service string) {
		body := `{"version":"4","groupKey":"{}:{service=\"` + service + `\"}","status":"firing","receiver":"rollbot",
"commonLabels":{"alertname":"HighErrorRate","service":"` + service + `"},"alerts":[{"status":"firing","labels":{"alertname":"HighErrorRate","service":"` + service + `"},"startsAt":"2026-12-03T07:00:00Z"}]}`
		req, _ := http.NewRequest("POST", "http://"+ops+"/alertmanager", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alertToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("alert for %s: HTTP %d", service, resp.StatusCode)
		}
	}
	for _, c := range []struct{ service, channel, id string }{{"web", slackemu.ChannelTeamWeb, "RB-1"}, {"payments", slackemu.ChannelTeamPay, "RB-2"}} {
		post(c.service)
		a := h.waitFor("assessment of "+c.service, func(m slackemu.Message) bool {
			return strings.Contains(m.PlainText(), "Rollback of "+c.service) && slices.Contains(m.ActionIDs(), handlers.ActConfirm)
		})
		if a.Channel != c.channel {
			t.Errorf("the alert for %s was posted in %s, want its channel %s", c.service, a.Channel, c.channel)
		}
		if err := h.emu.ClickButton(h.ctx(), slackemu.UserBob, a.Channel, a.TS, handlers.ActConfirm); err != nil {
			t.Fatal(err)
		}
		h.waitStatus(c.id, state.Completed)
	}
	if n := len(h.emu.Messages(slackemu.ChannelIncident)); n != 0 {
		t.Errorf("%d messages in the shared incident channel; the alerts belong to the teams' channels:\n%s", n, h.dump())
	}
}

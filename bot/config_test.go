package bot

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestExampleConfigIsValid(t *testing.T) {
	light(t)
	c, err := LoadConfig("../deploy/rollbot.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("the shipped example config is invalid:\n%v", err)
	}
	// 5 services, and checkout in two environments.
	if len(c.Services) != 7 || c.Services["myapp"].Kubernetes.Namespace != "prod" || c.Services["checkout@staging"].Kubernetes.Namespace != "staging" {
		t.Fatalf("example config decoded wrong: %+v", c.Services["myapp"])
	}
}

// Each broken config names the field that is wrong and what to do.
func TestConfigErrorsNameTheField(t *testing.T) {
	light(t)
	base := `
incident_channels: [C0INCIDENT]
services:
  myapp:
    platform: simulated
    simulated: {versions: [{artifact: "app:v1"}]}
    approvers: {groups: [S0ONCALL]}
`
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown field with its line", base + "    treshold: {}\n", "line 8: field treshold not found"},
		{"no channels", strings.Replace(base, "incident_channels: [C0INCIDENT]", "", 1), "incident_channels: at least one"},
		{"verify budget shorter than its polling", "verify_timeout: 5m\nbudgets: {verify: 4m}\n" + base, "budgets.verify (4m0s) must be at least verify_timeout (5m0s) + verify_soak (3m0s) + 1m"},
		{"verify budget shorter than timeout and the default soak", "verify_timeout: 5m\nbudgets: {verify: 8m}\n" + base, "budgets.verify (8m0s) must be at least verify_timeout (5m0s) + verify_soak (3m0s) + 1m"},
		{"verify budget shorter than a service's soak", "verify_timeout: 5m\nverify_soak: 1m\nbudgets: {verify: 9m}\n" + base + "    verify_soak: 10m\n", "budgets.verify (9m0s) must be at least verify_timeout (5m0s) + verify_soak (10m0s) + 1m"},
		{"negative soak", "verify_soak: -1s\n" + base, "verify_soak: must not be negative"},
		{"negative service soak", base + "    verify_soak: -1s\n", "services.myapp.verify_soak: must not be negative"},
		{"negative recent window", "verify_recent: -1s\n" + base, "verify_recent: must not be negative"},
		{"negative service recent window", base + "    verify_recent: -1s\n", "services.myapp.verify_recent: must not be negative"},
		{"budget shorter than two leases", "lease: 20s\nbudgets: {assess: 30s}\n" + base, "budgets.assess (30s) must be at least twice the lease (20s)"},
		{"lease too short", "lease: 1s\n" + base, "lease: at least 3s"},
		{"lock shorter than two leases", "lease: 20s\nlock_ttl: 30s\n" + base, "lock_ttl (30s) must be at least twice the lease (20s)"},
		{"bad platform", strings.Replace(base, "platform: simulated", "platform: nomad", 1), `services.myapp.platform: "nomad" is not one of`},
		{"section for another platform", base + "    swarm: {service: web}\n", `services.myapp.swarm: set, but platform is "simulated"`},
		{"missing section", strings.Replace(base, `    simulated: {versions: [{artifact: "app:v1"}]}`+"\n", "", 1), "services.myapp.simulated: required for platform simulated"},
		{"bad approver id", strings.Replace(base, "S0ONCALL", "oncall", 1), `services.myapp.approvers.groups[0]: "oncall" is not a Slack user group id`},
		{"no approvers", strings.Replace(base, "approvers: {groups: [S0ONCALL]}", "approvers: {}", 1), "services.myapp.approvers: list the users or user groups"},
		{"threshold out of range", base + "    thresholds: {error_rate: 5}\n", "services.myapp.thresholds.error_rate: a ratio between 0 and 1"},
		{"postmortem too late", base + "postmortem_after: 48h\n", "postmortem_after: at most 24h"},
		{"adapter field", base + "    metrics: {prometheus: {url: 'ftp://x'}}\n", "services.myapp.metrics.prometheus.url: scheme must be http or https"},
		{"bad service name", strings.Replace(base, "  myapp:", "  My_App:", 1), "services.My_App: service names are lowercase"},
		{"scrape history shorter than the window", base + "    metrics: {scrape: {url: 'http://app/metrics', history: 2m}}\n", "services.myapp.metrics.scrape.history (2m0s) must be at least windows.assess (5m0s)"},
		{"scrape history field", base + "    metrics: {scrape: {url: 'http://app/metrics', history: -1s}}\n", "services.myapp.metrics.scrape.history: must not be negative"},
		{"registry credentials half set", base + "    registry: {username_env: REG_USER}\n", "services.myapp.registry.username_env, password_env: set both"},
		{"registry repository with a tag", base + "    registry: {repository: 'reg.example.com/app:v1@sha256:00'}\n", "services.myapp.registry.repository: a repository like"},
		{"verdict neighbour unknown", base + "    verdict: {neighbours: {services: [paymnets]}}\n", `services.myapp.verdict.neighbours.services[0]: "paymnets" is not a configured service`},
		{"verdict neighbour is itself", base + "    verdict: {neighbours: {services: [myapp]}}\n", `services.myapp.verdict.neighbours.services[0]: "myapp" is this service`},
		{"verdict selectors without prometheus", base + "    verdict: {neighbours: {selectors: ['job=\"payments\"']}}\n", "services.myapp.verdict.neighbours.selectors: need metrics.prometheus"},
		{"verdict selector with braces", base + "    metrics: {prometheus: {url: 'http://prom:9090'}}\n    verdict: {neighbours: {selectors: ['{job=\"payments\"}']}}\n", "services.myapp.verdict.neighbours.selectors[0]: label matchers without braces"},
		{"verdict budget too long", base + "    verdict: {budget: 5m}\n", "services.myapp.verdict.budget: at most 1m"},
		{"verdict negative step", base + "    verdict: {step: -1s}\n", "services.myapp.verdict.step: must not be negative"},
		{"impersonate key not a Slack id", strings.Replace(base, "platform: simulated\n    simulated: {versions: [{artifact: \"app:v1\"}]}", "platform: kubernetes\n    kubernetes: {namespace: prod, deployment: myapp, impersonate: {'@oncall': {user: oncall-bot}}}", 1),
			`services.myapp.kubernetes.impersonate.@oncall: "@oncall" is neither a Slack user id (U… or W…) nor a Slack user-group id (S…)`},
		{"alert route channel by name", base + "alertmanager: {routes: [{match: {alertname: X}, service: myapp, channel: incident-rollbacks}]}\n", `alertmanager.routes[0].channel: "incident-rollbacks" is not a channel id (C…)`},
		{"alert route unknown service", base + "alertmanager: {routes: [{match: {alertname: X}, service: myap}]}\n", `alertmanager.routes[0].service: "myap" is not a configured service`},
		{"alerts with only channel names", strings.Replace(base, "[C0INCIDENT]", "[incident-rollbacks]", 1) + "alertmanager: {}\n", "services.myapp: its alerts have no channel to go to"},
		{"health url with credentials", base + "    health_urls: ['http://u:p@x/health']\n", "services.myapp.health_urls[0]: must not contain credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.yaml))
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestEnvValidateNeverShowsSecrets(t *testing.T) {
	light(t)
	secret := "xoxp-user-token-that-must-not-show"
	err := Env{BotToken: secret, AppToken: "xapp-1", APIURL: "https://slack.com/api", RedisURL: "redis://:hunter2hunter2@r:6379"}.Validate()
	if err == nil {
		t.Fatal("a user token and a URL without / were accepted")
	}
	for _, want := range []string{"SLACK_BOT_TOKEN: must be a bot token starting with xoxb-", "SLACK_API_URL: must end with /"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("a secret leaked into the error: %v", err)
	}
}

// The logger's redaction is the last line of defence: whatever carries a
// token (an error, a message, a group) is scrubbed.
func TestRedactHandler(t *testing.T) {
	light(t)
	var buf bytes.Buffer
	tok := "xoxb-1234567890-secret"
	log := slog.New(NewRedactHandler(slog.NewJSONHandler(&buf, nil), tok, "hunter2hunter2"))
	log.With("k", "with "+tok).Error("call failed with "+tok, "err", errors.New("post: token="+tok), slog.Group("g", "dsn", "postgres://u:hunter2hunter2@db/x"))
	out := buf.String()
	if strings.Contains(out, tok) || strings.Contains(out, "hunter2hunter2") {
		t.Fatalf("secret in log: %s", out)
	}
	if strings.Count(out, "[REDACTED]") != 4 {
		t.Fatalf("expected 4 redactions: %s", out)
	}
}

func TestServeRejectsBadEnvWithoutLeaking(t *testing.T) {
	light(t)
	c, err := LoadConfig("../deploy/rollbot.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	err = Serve(context.Background(), c, Env{BotToken: "xoxb-secret-secret", AppToken: "bad", APIURL: DefaultSlackAPIURL}, slog.New(slog.NewTextHandler(&buf, nil)))
	if err == nil || !strings.Contains(err.Error(), "SLACK_APP_TOKEN: must be an app-level token") || !strings.Contains(err.Error(), "REDIS_URL: required") {
		t.Fatalf("Serve error = %v", err)
	}
	if strings.Contains(err.Error()+buf.String(), "xoxb-secret-secret") {
		t.Fatal("token leaked")
	}
}

func TestDownJobNamespaceDefaultsToTheService(t *testing.T) {
	light(t)
	c, err := ParseConfig([]byte(`
incident_channels: [C0INCIDENT]
services:
  shop:
    platform: kubernetes
    kubernetes: {kubeconfig: /k, namespace: prod, deployment: shop}
    approvers: {groups: [S0ONCALL]}
    database:
      driver: postgres
      dsn_env: SHOP_DSN
      tool: django
      down: {kind: kubernetes_job, command: [python, manage.py, migrate], env_from_secret: shop-db}
      approvers: {groups: [S0DBA]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Services["shop"].Database.Down.Namespace; got != "prod" {
		t.Fatalf("down.namespace = %q, want the service's namespace prod", got)
	}
}

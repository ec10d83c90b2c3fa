package compose

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"rollbot/platforms"
)

// botSecrets are variables of the kind the bot's own environment holds.
var botSecrets = map[string]string{
	"SLACK_BOT_TOKEN": "xoxb-env-leak-test-123",
	"SLACK_APP_TOKEN": "xapp-env-leak-test-456",
	"REDIS_URL":       "redis://:hunter2-env-leak@redis:6379/0",
	"ORDERS_DSN":      "postgres://app:pw-env-leak@db/orders",
}

// TestComposeEnvIsAllowlisted: docker-compose gets what it needs to run and
// reach the engine, and none of the bot's secrets.
func TestComposeEnvIsAllowlisted(t *testing.T) {
	environ := []string{"PATH=/usr/bin", "HOME=/home/rollbot", "DOCKER_CONFIG=/etc/docker-cfg",
		"COMPOSE_HTTP_TIMEOUT=120", "DOCKER_HOST=unix:///from/env.sock"}
	for k, v := range botSecrets {
		environ = append(environ, k+"="+v)
	}
	a := &Adapter{cfg: Config{Host: "tcp://engine:2376", TLSCertPath: "/certs"}}
	env := a.composeEnv(environ)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := botSecrets[k]; ok {
			t.Errorf("compose env has %s", k)
		}
		for _, secret := range botSecrets {
			if strings.Contains(v, secret) {
				t.Errorf("compose env %s carries a secret", k)
			}
		}
	}
	for _, want := range []string{"PATH=/usr/bin", "HOME=/home/rollbot", "DOCKER_CONFIG=/etc/docker-cfg",
		"COMPOSE_HTTP_TIMEOUT=120", "DOCKER_CERT_PATH=/certs", "DOCKER_TLS_VERIFY=1"} {
		if !slices.Contains(env, want) {
			t.Errorf("compose env lacks %s: %q", want, env)
		}
	}
	// The configured host comes last, so it wins over the inherited one
	// (os/exec keeps the last value of a duplicate key).
	if i, j := slices.Index(env, "DOCKER_HOST=unix:///from/env.sock"), slices.Index(env, "DOCKER_HOST=tcp://engine:2376"); j < 0 || j < i {
		t.Errorf("configured DOCKER_HOST not last: %q", env)
	}
}

// TestComposeUpDoesNotPassBotSecrets: a real docker-compose up run by the
// adapter, for a service that passes SLACK_BOT_TOKEN, REDIS_URL and a DSN
// through from the environment, starts a container without their values.
// Not parallel: it sets the process environment.
func TestComposeUpDoesNotPassBotSecrets(t *testing.T) {
	const file = `version: "3.7"
services:
  web:
    image: rollbot-sampleapp:%s
    ports: ["127.0.0.1::8080"]
    environment:
      - SLACK_BOT_TOKEN
      - REDIS_URL
      - ORDERS_DSN
      - FROM_INTERPOLATION=${SLACK_APP_TOKEN:-unset}
`
	p := newProject(t, fmt.Sprintf(file, "v1"))
	p.Compose(nil, "up", "-d")
	p.Write(fmt.Sprintf(file, "v2"))
	p.Compose(nil, "up", "-d")
	for k, v := range botSecrets {
		t.Setenv(k, v)
	}
	a := p.adapter(Config{Service: "web", Mode: ModeComposeFile})
	res, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("rollback = %+v, %v", res, err)
	}
	web := p.Container("web")
	if web.Config.Image != good.Ref() {
		t.Fatalf("web runs %s, want %s (docker-compose up did not run)", web.Config.Image, good.Ref())
	}
	if !slices.Contains(web.Config.Env, "FROM_INTERPOLATION=unset") {
		t.Errorf("container env lacks FROM_INTERPOLATION=unset (${SLACK_APP_TOKEN} was interpolated from the bot's environment)")
	}
	for _, kv := range web.Config.Env {
		for k, secret := range botSecrets {
			if strings.Contains(kv, secret) {
				t.Errorf("container got the bot's %s: %s", k, strings.SplitN(kv, "=", 2)[0])
			}
		}
	}
}

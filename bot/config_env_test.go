package bot

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"rollbot/handlers"
)

const envConfig = `
incident_channels: [C0INCIDENT]
services:
  web:
    platform: simulated
    simulated: {versions: [{artifact: "web:v1"}]}
    approvers: {groups: [S0ONCALL]}
    channels: [C0TEAMWEB, C0INCIDENT]
  myapp:
    approvers: {groups: [S0ONCALL]}
    thresholds: {error_rate: 0.02}
    drill: {bad: "myapp:broken"}
    environments:
      staging:
        platform: simulated
        simulated: {versions: [{artifact: "myapp:v1"}]}
        channels: [C0TEAMPAY]
        drills: true
      prod:
        platform: kubernetes
        kubernetes: {namespace: prod, deployment: myapp}
        approvers: {users: [U0BOB]}
`

// A service defined per environment becomes one entry per environment,
// keyed name@env, each with the service's keys unless it sets its own.
func TestEnvironmentsExpand(t *testing.T) {
	light(t)
	c, err := ParseConfig([]byte(envConfig))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range c.Services {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"myapp@prod", "myapp@staging", "web"}; !slices.Equal(keys, want) {
		t.Fatalf("services = %v, want %v", keys, want)
	}
	st, prod := c.Services["myapp@staging"], c.Services["myapp@prod"]
	if st.Platform != "simulated" || st.Base != "myapp" || st.Env != "staging" || !st.Drills || st.Drill == nil || st.Drill.Bad != "myapp:broken" {
		t.Errorf("staging = %+v", st)
	}
	if !slices.Equal(st.Approvers.Groups, []string{"S0ONCALL"}) || *st.Thresholds.ErrorRate != 0.02 || !slices.Equal(st.Channels, []string{"C0TEAMPAY"}) {
		t.Errorf("staging did not inherit the service's keys: %+v", st)
	}
	if prod.Platform != "kubernetes" || prod.Kubernetes.Namespace != "prod" || prod.Drills || len(prod.Channels) != 0 {
		t.Errorf("prod = %+v", prod)
	}
	if len(prod.Approvers.Groups) != 0 || !slices.Equal(prod.Approvers.Users, []string{"U0BOB"}) {
		t.Errorf("prod approvers are its own, not merged: %+v", prod.Approvers)
	}
	svcs, err := BuildServices(t.Context(), &Config{Services: map[string]ServiceConfig{"myapp@staging": st}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if s := svcs[0]; s.Name != "myapp@staging" || s.Env != "staging" || s.BaseName() != "myapp" || s.Drill == nil || s.Drill.Bad != "myapp:broken" || !slices.Equal(s.Channels, []string{"C0TEAMPAY"}) {
		t.Errorf("built service = %+v", s)
	}
	if handlers.ServiceKey("myapp", "") != "myapp" {
		t.Error("a service without environments keeps its name as key")
	}
}

// Services without channels or environments decode as before: keyed by
// their name, answering in incident_channels.
func TestConfigWithoutTeamsUnchanged(t *testing.T) {
	light(t)
	c, err := LoadConfig("../deploy/rollbot.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"myapp", "shop", "billing", "storefront"} {
		s, ok := c.Services[k]
		if !ok || s.Env != "" || s.Base != "" || len(s.Channels) != 0 {
			t.Errorf("service %s changed: %v env %q channels %v", k, ok, s.Env, s.Channels)
		}
	}
	svcs, err := BuildServices(t.Context(), &Config{Services: map[string]ServiceConfig{"shop": c.Services["shop"]}}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if s := svcs[0]; s.Name != "shop" || s.Env != "" || s.Channels != nil || s.Drill != nil {
		t.Errorf("built %+v", s)
	}
}

func TestEnvironmentConfigErrors(t *testing.T) {
	light(t)
	tests := []struct{ name, yaml, want string }{
		{"unknown key in an environment, with its line", strings.Replace(envConfig, "        drills: true", "        drils: true", 1), "field drils not found"},
		{"nested environments", strings.Replace(envConfig, "        drills: true", "        drills: true\n        environments: {x: {}}", 1), "services.myapp.environments.staging.environments: environments do not nest"},
		{"bad environment name", strings.Replace(envConfig, "      prod:", "      Prod!:", 1), "environment names are lowercase"},
		{"environment error names its path", strings.Replace(envConfig, "approvers: {users: [U0BOB]}", "approvers: {users: [bob]}", 1), `services.myapp.environments.prod.approvers.users[0]: "bob" is not a Slack user id`},
		{"missing platform section in an environment", strings.Replace(envConfig, "        kubernetes: {namespace: prod, deployment: myapp}\n", "", 1), "services.myapp.environments.prod.kubernetes: required for platform kubernetes"},
		{"bad channel", strings.Replace(envConfig, "C0TEAMWEB", "not a channel!", 1), `services.web.channels[0]: "not a channel!" is not a channel id`},
		{"drills without a bad version", strings.Replace(envConfig, `    drill: {bad: "myapp:broken"}`+"\n", "", 1), "services.myapp.environments.staging.drill.bad: drills: true needs the artifact"},
		{"drills on a platform that cannot deploy", strings.Replace(envConfig, "        drills: true", "", 1) + "  old:\n    platform: vm\n    vm: {}\n    approvers: {groups: [S0ONCALL]}\n    drills: true\n    drill: {bad: x}\n", "services.old.drills: drills run on platform kubernetes, swarm, simulated"},
		{"no incident channels and a service without channels", strings.Replace(envConfig, "incident_channels: [C0INCIDENT]", "", 1), "incident_channels: at least one channel"},
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

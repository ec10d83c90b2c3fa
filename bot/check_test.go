package bot

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"rollbot/testkit/nettest"
	"rollbot/testkit/redistest"
)

// `rollbot check` names a malformed REDIS_URL by its part and an
// unreachable one by the deployment it names (#12: "a malformed or
// unreachable REDIS_URL is named by rollbot check and at start"), never
// showing its password; a Redis that answers passes.
func TestCheckNamesABadRedisURL(t *testing.T) {
	light(t)
	c, err := ParseConfig([]byte(`
incident_channels: [C0INCIDENT]
services:
  myapp:
    platform: simulated
    simulated: {versions: [{artifact: "app:v1"}]}
    approvers: {groups: [S0ONCALL]}
`))
	if err != nil {
		t.Fatal(err)
	}
	closed := nettest.ClosedAddr(t)
	for _, tc := range []struct{ url, want string }{
		{"redis://:hunter2hunter2@redis:port/0", "REDIS_URL host/port: "},
		{"redis://:hunter2hunter2@redis:6379/0?master_name=", "REDIS_URL master name: "},
		{fmt.Sprintf("redis://:hunter2hunter2@%s/0", closed), "REDIS_URL: cannot reach Redis (single server tcp " + closed + ", db 0)"},
		{fmt.Sprintf("redis://:hunter2hunter2@%s/0?master_name=mymaster", closed), "REDIS_URL: cannot reach Redis (Sentinel master mymaster via " + closed + ", db 0)"},
		{fmt.Sprintf("redis+cluster://:hunter2hunter2@%s", closed), "REDIS_URL: cannot reach Redis (Cluster via " + closed + ")"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			var out strings.Builder
			err := Check(context.Background(), c, "rollbot.yaml", tc.url, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check error = %v; want %q", err, tc.want)
			}
			if strings.Contains(err.Error()+out.String(), "hunter2") {
				t.Fatalf("the password leaked: %v\n%s", err, out.String())
			}
			if out.Len() != 0 {
				t.Errorf("printed %q although REDIS_URL is bad", out.String())
			}
		})
	}
	t.Run("reachable", func(t *testing.T) {
		var out strings.Builder
		if err := Check(context.Background(), c, "rollbot.yaml", redistest.URL(t), &out); err != nil {
			t.Fatalf("Check with a Redis that answers: %v", err)
		}
		if !strings.Contains(out.String(), "rollbot.yaml is valid: 1 service(s)") || !strings.Contains(out.String(), "REDIS_URL is valid and answers: single server tcp ") {
			t.Errorf("output %q", out.String())
		}
	})
	t.Run("config and REDIS_URL both wrong", func(t *testing.T) {
		bad := *c
		bad.IncidentChannels = nil
		err := Check(context.Background(), &bad, "rollbot.yaml", "redis://:hunter2hunter2@"+closed+"/0", &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), "rollbot.yaml is not valid") || !strings.Contains(err.Error(), "cannot reach Redis") {
			t.Fatalf("Check = %v; want both the config's and REDIS_URL's errors", err)
		}
	})
}

package bot

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// Serve names a malformed or unreachable REDIS_URL before anything else
// starts, and never shows its password.
func TestServeNamesABadRedisURL(t *testing.T) {
	c, err := LoadConfig("../deploy/rollbot.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example config has an Alertmanager receiver, whose token Serve
	// checks first.
	t.Setenv("ROLLBOT_ALERTMANAGER_TOKEN", "example-receiver-token-0123456789")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String() // nothing listens there once closed
	l.Close()
	for _, tc := range []struct{ url, want string }{
		{"redis://:hunter2hunter2@redis:port/0", "REDIS_URL host/port: "},
		{"redis://:hunter2hunter2@redis:6379/0?addr=r2:6379", "REDIS_URL addr: "},
		{"redis://:hunter2hunter2@redis:6379/0?master_name=", "REDIS_URL master name: "},
		{fmt.Sprintf("redis://:hunter2hunter2@%s/0", closed), "REDIS_URL: cannot reach Redis (single server tcp " + closed + ", db 0)"},
		{fmt.Sprintf("redis+cluster://:hunter2hunter2@%s", closed), "REDIS_URL: cannot reach Redis (Cluster via " + closed + ")"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			var buf bytes.Buffer
			env := Env{BotToken: "xoxb-1", AppToken: "xapp-1", APIURL: DefaultSlackAPIURL, RedisURL: tc.url}
			err := Serve(context.Background(), c, env, slog.New(slog.NewTextHandler(&buf, nil)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Serve error = %v; want %q", err, tc.want)
			}
			if strings.Contains(err.Error()+buf.String(), "hunter2") {
				t.Fatalf("the password leaked: %v\n%s", err, buf.String())
			}
		})
	}
}

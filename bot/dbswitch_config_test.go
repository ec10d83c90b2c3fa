package bot

import (
	"fmt"
	"strings"
	"testing"
)

// restore.switch is checked at start: each error names the field and the fix.
func TestConfigRestoreSwitch(t *testing.T) {
	light(t)
	yml := func(extra string) string {
		return fmt.Sprintf(`
services:
  shop:
    platform: simulated
    simulated:
      versions: [{artifact: "shop:v1"}, {artifact: "shop:v2", bad: true}]
    metrics: {simulated: true}
    approvers: {groups: [S0ONCALL]}
    database:
      driver: postgres
      dsn_env: SHOP_DSN
      tool: golang-migrate
      approvers: {groups: [S0DBA]}
      restore:
        instance: shop-db
%s
`, extra)
	}
	tests := []struct {
		name, extra, want string
	}{
		{"unknown", "        switch: dns", `database.restore.switch: "dns" is not rename, secret or manual`},
		{"secret without its block", "        switch: secret", "database.restore.secret: required with switch: secret"},
		{"secret on a simulated platform", "        switch: secret\n        secret: {name: shop-db, key: DB_HOST}", "database.restore.switch: secret writes a Secret on the service's Kubernetes cluster, so it needs platform: kubernetes"},
		{"secret block with rename", "        switch: rename\n        secret: {name: shop-db, key: DB_HOST}", "database.restore.secret: only with switch: secret"},
		{"bad secret key", "        switch: secret\n        secret: {name: shop-db, key: 'DB HOST'}", `database.restore.secret.key: "DB HOST" is not a valid Secret key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(yml(tt.extra)))
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
	for _, ok := range []string{"", "        switch: manual", "        switch: rename"} {
		c, err := ParseConfig([]byte(yml(ok)))
		if err == nil {
			err = c.Validate()
		}
		if err != nil && strings.Contains(err.Error(), "restore") {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
}

package bot

import (
	"strings"
	"testing"
)

// database.down.kind kubernetes_job runs on the service's cluster: it is
// valid only for platform kubernetes, and the error says so by its field.
func TestConfigDownJobNeedsKubernetes(t *testing.T) {
	light(t)
	db := `
    database:
      driver: postgres
      dsn_env: SHOP_DB_RO_DSN
      down:
        kind: kubernetes_job
        namespace: prod
        command: [migrate, -path, /migrations, -database, $(DATABASE_URL), down, $(ROLLBOT_STEPS)]
        secret_env:
          DATABASE_URL: {secret: shop-db, key: migrate_url}
      approvers: {groups: [S0DBA]}
`
	kubernetes := `
incident_channels: [C0INCIDENT]
services:
  shop:
    platform: kubernetes
    kubernetes: {namespace: prod, deployment: shop}
    approvers: {groups: [S0ONCALL]}
`
	simulated := `
incident_channels: [C0INCIDENT]
services:
  shop:
    platform: simulated
    simulated: {versions: [{artifact: "app:v1"}]}
    approvers: {groups: [S0ONCALL]}
`
	tests := []struct {
		name, yaml, want string
	}{
		{"kubernetes", kubernetes + db, ""},
		{"another platform", simulated + db,
			`services.shop.database.down.kind: kubernetes_job runs on the service's Kubernetes cluster, so it needs platform: kubernetes (this service's platform is "simulated"); use kind: command`},
		// Without down.namespace the Job runs in the service's namespace.
		{"no namespace", kubernetes + strings.Replace(db, "        namespace: prod\n", "", 1), ""},
		{"secret from the bot's env", kubernetes + strings.Replace(db, "{secret: shop-db, key: migrate_url}", "{env: SHOP_DB_URL}", 1),
			"services.shop.database.down.secret_env.DATABASE_URL: secret and key required"},
		{"fixed image without image", kubernetes + strings.Replace(db, "        namespace: prod\n", "        namespace: prod\n        image_from: fixed\n", 1),
			"services.shop.database.down.image: required with image_from: fixed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

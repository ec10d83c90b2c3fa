package bot

import (
	"strings"
	"testing"
)

// The approval safeguards cannot be configured away: a destructive restore
// needs at least two approvals, and a user-only DB approver list must hold
// someone besides the requester for every approval needed.
func TestConfigApprovalSafety(t *testing.T) {
	light(t)
	const base = `
incident_channels: [C0INCIDENT]
services:
  shop:
    platform: simulated
    simulated: {versions: [{artifact: "app:v1"}]}
    approvers: {groups: [S0ONCALL]}
    database:
      driver: postgres
      dsn_env: SHOP_DSN
      tool: django
`
	const restore = "      restore: {region: eu-west-1, instance: shop-db, method: snapshot}\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"one destructive approval", base + restore + "      approvers: {groups: [S0DBA]}\n      destructive_approvals: 1\n",
			"services.shop.database.destructive_approvals: at least 2"},
		{"two destructive approvals", base + restore + "      approvers: {groups: [S0DBA]}\n      destructive_approvals: 2\n", ""},
		{"unset destructive approvals", base + restore + "      approvers: {groups: [S0DBA]}\n", ""},
		{"down migration, one user", base + "      approvers: {users: [U0ALICE]}\n",
			"services.shop.database.approvers.users: 1 distinct user(s) cannot approve without the requester"},
		{"down migration, the same user twice", base + "      approvers: {users: [U0ALICE, U0ALICE]}\n",
			"services.shop.database.approvers.users: 1 distinct user(s)"},
		{"down migration, two users", base + "      approvers: {users: [U0ALICE, U0BOB]}\n", ""},
		{"restore, two users for two approvals", base + restore + "      approvers: {users: [U0ALICE, U0BOB]}\n",
			"services.shop.database.approvers.users: 2 distinct user(s) cannot approve without the requester: a restore needs 2 approvals (destructive_approvals) from people other than the requester, so list at least 3 users"},
		{"restore, three users", base + restore + "      approvers: {users: [U0ALICE, U0BOB, U0CAROL]}\n", ""},
		{"restore, three users for three approvals", base + restore + "      approvers: {users: [U0ALICE, U0BOB, U0CAROL]}\n      destructive_approvals: 3\n",
			"list at least 4 users"},
		{"a group counts as enough", base + restore + "      approvers: {users: [U0ALICE], groups: [S0DBA]}\n", ""},
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
				t.Fatalf("Validate = %v, want valid", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

package bot

import (
	"strings"
	"testing"
)

// Each step budget is checked against the waits inside its step, one pair
// per row: the adapter's own timeout (or rollbot's bounded reads) and the
// budget that must cover it. The error names both values, the sum the
// budget must reach and what to change.
func TestConfigStepBudgetsCoverTheWaitsInside(t *testing.T) {
	light(t)
	svc := func(platform string) string {
		return "incident_channels: [C0INCIDENT]\nservices:\n  myapp:\n    approvers: {groups: [S0ONCALL]}\n" + platform
	}
	kube := func(extra string) string {
		return svc("    platform: kubernetes\n    kubernetes: {namespace: prod, deployment: myapp" + extra + "}\n")
	}
	simulated := svc("    platform: simulated\n    simulated: {versions: [{artifact: 'app:v1'}]}\n")
	db := func(down, restore string) string {
		return "    database:\n      driver: postgres\n      dsn_env: MYAPP_DSN\n      tool: golang-migrate\n      approvers: {groups: [S0DBA]}\n" +
			"      down: {kind: command, command: [migrate, down]" + down + "}\n" + restore
	}
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"kubernetes rollout_timeout / budgets.rollout",
			"budgets: {rollout: 15m}\n" + kube(", rollout_timeout: 30m"),
			[]string{"budgets.rollout (15m0s) is shorter than services.myapp.kubernetes.rollout_timeout (30m0s) + 30s for rollbot's own records and messages: raise budgets.rollout to at least 30m30s or lower services.myapp.kubernetes.rollout_timeout"}},
		{"kubernetes rollout_timeout / budgets.rollout from step_timeout",
			"step_timeout: 10m\n" + kube(", rollout_timeout: 12m"),
			[]string{"budgets.rollout (10m0s, from step_timeout) is shorter than services.myapp.kubernetes.rollout_timeout (12m0s)", "at least 12m30s"}},
		{"kubernetes progress deadline (rollout_timeout unset) / budgets.rollout",
			"budgets: {rollout: 10m}\n" + kube(""),
			[]string{"budgets.rollout (10m0s) is shorter than the rollout wait (services.myapp.kubernetes.rollout_timeout unset: the Deployment's progress deadline, 10m0s by default, + 1m = 11m0s)", "raise budgets.rollout to at least 11m30s or set services.myapp.kubernetes.rollout_timeout lower"}},
		{"statefulset rollout wait (rollout_timeout unset) / budgets.rollout",
			"budgets: {rollout: 5m}\n" + svc("    platform: kubernetes\n    kubernetes: {namespace: prod, kind: statefulset, name: db}\n"),
			[]string{"budgets.rollout (5m0s) is shorter than the rollout wait (services.myapp.kubernetes.rollout_timeout unset: 10m0s)", "at least 10m30s"}},
		{"swarm timeout / default budgets.rollout",
			svc("    platform: swarm\n    swarm: {service: web, timeout: 20m}\n"),
			[]string{"budgets.rollout (15m0s, the default) is shorter than services.myapp.swarm.timeout (20m0s) + 30s", "raise budgets.rollout to at least 20m30s or lower services.myapp.swarm.timeout"}},
		{"compose stop_timeout + timeout / budgets.rollout",
			"budgets: {rollout: 10m}\n" + svc("    platform: compose\n    compose: {project: shop, service: api, timeout: 10m}\n"),
			[]string{"budgets.rollout (10m0s) is shorter than services.myapp.compose.stop_timeout (10s, the default) + services.myapp.compose.timeout (10m0s) for one container", "at least 10m40s or lower services.myapp.compose.timeout"}},
		{"vm timeout and health_timeout per host / budgets.rollout",
			svc("    platform: vm\n    vm:\n      hosts: [{name: a, addr: a}, {name: b, addr: b}, {name: c, addr: c}]\n      known_hosts: /k\n      unit: app\n      strategy: backup\n      timeout: 1m\n      health_timeout: 2m\n"),
			[]string{"budgets.rollout (15m0s, the default) is shorter than reading the 3 hosts (2 × services.myapp.vm.timeout (1m0s)), then each host in turn: 4 × timeout + services.myapp.vm.health_timeout (2m0s)", "at least 20m30s or lower services.myapp.vm.timeout or services.myapp.vm.health_timeout"}},
		{"vm stop_unit_on_pause with the capture / budgets.rollout",
			"budgets: {rollout: 6m, capture: 5m}\n" + svc("    platform: vm\n    vm:\n      hosts: [{name: a, addr: a}]\n      known_hosts: /k\n      unit: app\n      strategy: backup\n      timeout: 20s\n      health_timeout: 1s\n      stop_unit_on_pause: true\n"),
			[]string{"budgets.rollout (6m0s) is shorter than stopping the unit on the host in turn (3 × services.myapp.vm.timeout (20s) each, stop_unit_on_pause) + budgets.capture (5m0s)", "at least 6m30s"}},
		{"simulated step_delay per pod / budgets.rollout",
			"budgets: {rollout: 2m}\n" + svc("    platform: simulated\n    simulated: {versions: [{artifact: 'app:v1'}], replicas: 4, step_delay: 1m}\n"),
			[]string{"budgets.rollout (2m0s) is shorter than 4 pods × services.myapp.simulated.step_delay (1m0s)", "at least 4m30s or lower services.myapp.simulated.step_delay"}},
		{"capture / budgets.rollout",
			"budgets: {rollout: 5m, capture: 5m}\n" + simulated,
			[]string{"budgets.rollout (5m0s) is shorter than budgets.capture (5m0s) (the evidence kept before the first write) + 30s", "at least 5m30s or lower budgets.capture"}},
		{"database down.timeout / default budgets.db_down",
			simulated + db(", timeout: 30m", ""),
			[]string{"budgets.db_down (20m0s, the default) is shorter than services.myapp.database.down.timeout (30m0s) + budgets.capture (20s, the default) + 30s", "raise budgets.db_down to at least 30m50s or lower services.myapp.database.down.timeout"}},
		{"database down Job timeout / budgets.db_down",
			"budgets: {db_down: 16m}\n" + kube("") + strings.Replace(db("", ""), "kind: command, command: [migrate, down]", "kind: kubernetes_job, command: [migrate, down]", 1),
			[]string{"budgets.db_down (16m0s) is shorter than services.myapp.database.down.timeout (15m0s, the default) + 1m for the Job to start and end + budgets.capture (20s, the default)", "at least 16m50s"}},
		{"RDS restore wait_timeout / default budgets.restore",
			simulated + db("", "      restore: {region: eu-west-1, instance: app-db, switch: manual, wait_timeout: 4h}\n"),
			[]string{"budgets.restore (3h0m0s, the default) is shorter than services.myapp.database.restore.wait_timeout (4h0m0s) + budgets.capture (20s, the default) + 30s", "raise budgets.restore to at least 4h0m50s or lower services.myapp.database.restore.wait_timeout"}},
		{"RDS rename swap wait_timeout / budgets.switch",
			"budgets: {switch: 1h}\n" + simulated + db("", "      restore: {region: eu-west-1, instance: app-db, switch: rename}\n"),
			[]string{"budgets.switch (1h0m0s) is shorter than services.myapp.database.restore.wait_timeout (2h0m0s, the default) for the rename swap + 30s", "raise budgets.switch to at least 2h0m30s or lower services.myapp.database.restore.wait_timeout"}},
		{"secret switch's restart rollout_timeout / budgets.switch",
			"budgets: {switch: 1h, rollout: 3h}\n" + kube(", rollout_timeout: 2h") + db("", "      restore: {region: eu-west-1, instance: app-db, switch: secret, secret: {name: app-db, key: DB_HOST}}\n"),
			[]string{"budgets.switch (1h0m0s) is shorter than the restart's services.myapp.kubernetes.rollout_timeout (2h0m0s)", "at least 2h0m30s"}},
		{"query_timeout reads / budgets.assess",
			"query_timeout: 40s\n" + simulated,
			[]string{"budgets.assess (2m0s, the default) is shorter than 2 × query_timeout (40s) for the platform state, then query_timeout (40s) for the baseline latency + 30s", "raise budgets.assess to at least 2m30s or lower query_timeout"}},
		{"verdict.budget / budgets.assess",
			"budgets: {assess: 1m}\n" + simulated + "    verdict: {budget: 1m}\n",
			[]string{"budgets.assess (1m0s) is shorter than 2 × query_timeout (5s, the default) for the platform state, then services.myapp.verdict.budget (1m0s)", "at least 1m40s or lower services.myapp.verdict.budget"}},
		{"migration check / budgets.assess",
			"query_timeout: 25s\n" + simulated + db("", ""),
			[]string{"budgets.assess (2m0s, the default) is shorter than 2 × query_timeout (25s) for the platform state, then 2 × query_timeout (25s) for the migration check of services.myapp", "at least 2m10s"}},
		{"smoke_test.timeout / default budgets.verify",
			simulated + "    smoke_test: {command: [/bin/true], timeout: 5m}\n",
			[]string{"budgets.verify (10m0s, the default) is shorter than verify_timeout (5m0s) + verify_soak (3m0s) + services.myapp.smoke_test.timeout (5m0s) + 1m", "raise budgets.verify to at least 14m0s or lower services.myapp.smoke_test.timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			var budgetErrs []string
			for _, e := range unjoin(err) {
				if strings.HasPrefix(e.Error(), "budgets.") {
					budgetErrs = append(budgetErrs, e.Error())
				}
			}
			if len(budgetErrs) != 1 {
				t.Fatalf("want one budget error, got %d:\n%s\n(all: %v)", len(budgetErrs), strings.Join(budgetErrs, "\n"), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(budgetErrs[0], w) {
					t.Errorf("error lacks %q:\n%s", w, budgetErrs[0])
				}
			}
			// Raised to what the error asks for, the budget is accepted.
			_, atLeast, _ := strings.Cut(budgetErrs[0], "to at least ")
			atLeast, _, _ = strings.Cut(atLeast, " ")
			field := strings.TrimPrefix(strings.Fields(budgetErrs[0])[0], "budgets.")
			fixed := fixBudget(tt.yaml, field, atLeast)
			c, err = ParseConfig([]byte(fixed))
			if err != nil {
				t.Fatalf("fixed config: %v\n%s", err, fixed)
			}
			for _, e := range unjoin(c.Validate()) {
				if e != nil && strings.HasPrefix(e.Error(), "budgets.") {
					t.Errorf("budgets.%s: %s still refused: %v", field, atLeast, e)
				}
			}
		})
	}
}

// fixBudget sets budgets.<field> to v in a config that may already have a
// one-line budgets mapping.
func fixBudget(yml, field, v string) string {
	lines := strings.Split(yml, "\n")
	out := lines[:0]
	var budgets []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "budgets: {") {
			out = append(out, l)
			continue
		}
		for _, kv := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(l, "budgets: {"), "}"), ",") {
			if k, _, _ := strings.Cut(strings.TrimSpace(kv), ":"); k != field {
				budgets = append(budgets, strings.TrimSpace(kv))
			}
		}
	}
	budgets = append(budgets, field+": "+v)
	return "budgets: {" + strings.Join(budgets, ", ") + "}\n" + strings.Join(out, "\n")
}

// With every adapter at its defaults, the default budgets cover every
// wait: a config that sets no timing is accepted.
func TestConfigDefaultBudgetsCoverTheAdaptersDefaults(t *testing.T) {
	light(t)
	c, err := ParseConfig([]byte(`
incident_channels: [C0INCIDENT]
services:
  kube:
    platform: kubernetes
    kubernetes: {namespace: prod, deployment: kube}
    approvers: {groups: [S0ONCALL]}
    smoke_test: {command: [/bin/true]}
    database:
      driver: postgres
      dsn_env: KUBE_DSN
      tool: django
      approvers: {groups: [S0DBA]}
      down: {kind: kubernetes_job, command: [python, manage.py, migrate]}
      restore: {region: eu-west-1, instance: kube-db, switch: secret, secret: {name: kube-db, key: DB_HOST}}
  swarm:
    platform: swarm
    swarm: {service: web}
    approvers: {groups: [S0ONCALL]}
  compose:
    platform: compose
    compose: {project: shop, service: api}
    approvers: {groups: [S0ONCALL]}
  vm:
    platform: vm
    vm: {hosts: [{name: a, addr: a}, {name: b, addr: b}, {name: c, addr: c}], known_hosts: /k, unit: app, strategy: backup}
    approvers: {groups: [S0ONCALL]}
    database:
      driver: postgres
      dsn_env: VM_DSN
      tool: golang-migrate
      approvers: {groups: [S0DBA]}
      down: {kind: command, command: [migrate, down]}
      restore: {region: eu-west-1, instance: vm-db, switch: rename}
  sim:
    platform: simulated
    simulated: {versions: [{artifact: 'app:v1'}]}
    approvers: {groups: [S0ONCALL]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("the defaults do not fit together:\n%v", err)
	}
}

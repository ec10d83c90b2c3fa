package kube_test

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"
)

// TestSecretSwitch: after a restore, the restored endpoint goes into the
// Secret key the app reads and the Deployment is restarted, on a real
// control plane (kwok pods), as a ServiceAccount with the shipped Role
// plus get/update on Secrets. Run again (a replica resuming the step), it
// neither writes nor restarts a second time.
func TestSecretSwitch(t *testing.T) {
	c := cluster(t)
	ns := kubetest.CreateNamespace(t, c.AdminClient, "switch")
	kubetest.Create(t, c.AdminClient, kubetest.NewDeployment(ns, "shop", v1, 2))
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "shop")
	ctx := context.Background()
	const dbPassword = "s3cret-db-password"
	if _, err := c.AdminClient.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-db"},
		Data:       map[string][]byte{"DB_HOST": []byte("shop-db.old:5432"), "DB_PASSWORD": []byte(dbPassword)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role, err := kubetest.LoadRole(rbacFile)
	if err != nil {
		t.Fatal(err)
	}
	rules := append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "update"}})
	kubeconfig, _ := c.KubeconfigForRules(t, ns, "rollbot-switch", rules)
	svc := kube.Config{Kubeconfig: kubeconfig, Context: "kubetest", Namespace: ns, Deployment: "shop"}
	cs, err := kube.Clientset(svc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := kube.SecretSwitchConfig{Name: "shop-db", Key: "DB_HOST"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sw := kube.NewSecretSwitch(cs, svc, cfg, nil)
	before, err := c.AdminClient.AppsV1().Deployments(ns).Get(ctx, "shop", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var steps, notes []string
	hooks := platforms.SwitchSteps{
		Before: func(_ context.Context, what string) error { steps = append(steps, what); return nil },
		Note:   func(l string) { notes = append(notes, l) },
	}
	got, err := sw.Switch(ctx, "RB-7", "shop-db-rb-7.c0fake.rds.amazonaws.com:5432", hooks)
	if err != nil {
		t.Fatalf("Switch: %v", err)
	}
	sec, err := c.AdminClient.CoreV1().Secrets(ns).Get(ctx, "shop-db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["DB_HOST"]) != "shop-db-rb-7.c0fake.rds.amazonaws.com:5432" || string(sec.Data["DB_PASSWORD"]) != dbPassword {
		t.Errorf("secret after the switch: DB_HOST=%q, password kept=%v", sec.Data["DB_HOST"], string(sec.Data["DB_PASSWORD"]) == dbPassword)
	}
	d := kubetest.WaitRolledOut(t, c.AdminClient, ns, "shop")
	if d.Spec.Template.Annotations[kube.RestartedForAnnotation] != "RB-7" || d.Generation == before.Generation {
		t.Errorf("deployment not restarted: generation %d → %d, annotations %v", before.Generation, d.Generation, d.Spec.Template.Annotations)
	}
	if len(steps) != 2 || !strings.Contains(steps[0], "into key DB_HOST of Secret "+ns+"/shop-db") || !strings.Contains(steps[1], "restarting deployment "+ns+"/shop") {
		t.Errorf("announced writes = %q", steps)
	}
	if !strings.Contains(got, "restarted with it") {
		t.Errorf("result = %q", got)
	}

	// Again: nothing written, no second restart.
	steps = nil
	if _, err := sw.Switch(ctx, "RB-7", "shop-db-rb-7.c0fake.rds.amazonaws.com:5432", hooks); err != nil {
		t.Fatalf("second Switch: %v", err)
	}
	again, _ := c.AdminClient.AppsV1().Deployments(ns).Get(ctx, "shop", metav1.GetOptions{})
	if len(steps) != 0 || again.Generation != d.Generation {
		t.Errorf("second Switch acted again: steps %q, generation %d → %d", steps, d.Generation, again.Generation)
	}
	for _, l := range append(append([]string{got}, notes...), steps...) {
		if strings.Contains(l, dbPassword) {
			t.Errorf("a line shows the Secret's other values: %s", l)
		}
	}

	// A Secret that does not exist: a clear message, nothing restarted.
	missing := kube.NewSecretSwitch(cs, svc, kube.SecretSwitchConfig{Name: "nope", Key: "DB_HOST"}, nil)
	_, err = missing.Switch(ctx, "RB-8", "x:1", platforms.SwitchSteps{})
	if msg, ok := platforms.UserMessage(err); !ok || !strings.Contains(msg, "Secret "+ns+"/nope does not exist: nothing was switched") {
		t.Errorf("missing secret: %v", err)
	}
}

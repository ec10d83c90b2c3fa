package bot

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/state"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/promtest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// deployedAtPlatform is a platform whose Snapshot says the current
// version was deployed at a time the test sets: the scenarios put the
// deploy before, or after, the moment the real sample service starts
// failing.
type deployedAtPlatform struct {
	platforms.Platform
	mu sync.Mutex
	at time.Time
}

func (p *deployedAtPlatform) set(t time.Time) { p.mu.Lock(); p.at = t; p.mu.Unlock() }

func (p *deployedAtPlatform) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	s, err := p.Platform.Snapshot(ctx)
	if s != nil {
		p.mu.Lock()
		s.DeployedAt = p.at
		p.mu.Unlock()
	}
	return s, err
}

// TestDeploymentRelatedVerdictWithPrometheus runs the assessment's
// "Deployment-related?" row against a real Prometheus scraping three real
// sample services (myapp, and its neighbours payments and search, each
// configured as a service of the YAML config), in three scenarios:
//
//  1. myapp's errors start after the deploy, the others stay healthy:
//     likely this deploy;
//  2. the same errors, with the deploy placed 12 s after they started:
//     likely not this deploy;
//  3. a new deploy, after which myapp and payments both fail: likely not
//     this deploy, 2 of 3 services degraded.
func TestDeploymentRelatedVerdictWithPrometheus(t *testing.T) {
	heavyLong(t)
	bin := promtest.BuildSampleApp(t)
	apps := map[string]*promtest.SampleApp{}
	var targets []promtest.Target
	for _, name := range []string{"myapp", "payments", "search"} {
		// 300 ms: every request in the histogram's (0.25, 0.5] bucket, so
		// p95 reads ~488 ms and a neighbour only counts as degraded (2×)
		// when nearly all its requests take over 500 ms. At 60 ms (p95 at
		// the 0.1 bucket's edge) a loaded CI machine delayed a few
		// percent past 100 ms and "search" read 2.2× its baseline.
		apps[name] = promtest.StartSampleApp(t, bin, "-self-load", "50", "-latency", "300ms")
		targets = append(targets, promtest.Target{Job: name, Addr: apps[name].Addr})
	}
	promStart := time.Now()
	p := promtest.Start(t, targets...)

	svcYAML := func(name, verdict string) string {
		return fmt.Sprintf(`
  %s:
    platform: simulated
    simulated: {versions: [{artifact: "app:v1"}, {artifact: "app:v2"}]}
    approvers: {groups: [%s]}
    windows: {assess: 8s, baseline: 20s}
    metrics:
      prometheus: {url: %s, selector: 'job="%s"', timeout: 10s}
%s`, name, slackemu.GroupOnCall, p.URL, name, verdict)
	}
	_, svcs := buildFromYAML(t, svcYAML("myapp", "    verdict: {step: 1s, window: 3s, before: 20s, neighbours: {services: [payments, search]}}\n")+
		svcYAML("payments", "")+svcYAML("search", ""))
	var svc *handlers.Service
	for _, s := range svcs {
		if s.Name == "myapp" {
			svc = s
		}
	}
	if n := svc.Verdict.Neighbours; len(n) != 2 || n[0].Name != "payments" || n[1].Name != "search" || n[0].Metrics == nil {
		t.Fatalf("neighbours from the config: %+v", n)
	}
	platform := &deployedAtPlatform{Platform: svc.Platform}
	svc.Platform = platform
	rdb, prefix := redistest.Client(t)
	ctx := t.Context()
	eng := handlers.New(ctx, quietChat{}, state.New(rdb, prefix), svcs, handlers.Options{QueryTimeout: 10 * time.Second}, slog.New(slog.DiscardHandler))

	assess := func(t *testing.T) *handlers.Assessment {
		t.Helper()
		a := eng.Assess(ctx, svc, "", nil)
		t.Logf("assessed in %s:\n%s  deployment-related: %s\n  evidence: %s\n  recommendation: %s",
			a.Took.Round(time.Millisecond), checksTable(a), a.Related.Text(), strings.Join(a.Related.Evidence, " | "), a.Recommendation())
		if a.Checks[0].Verdict != handlers.Fail {
			t.Fatalf("error rate check %s (%s), want fail", a.Checks[0].Verdict, a.Checks[0].Measured)
		}
		return a
	}

	// 20 s of good traffic for every service: the range before the deploy.
	p.WaitScrapedAfter(t, "myapp", promStart.Add(22*time.Second), time.Minute)
	deploy1 := time.Now()
	platform.set(deploy1)
	p.WaitScrapedAfter(t, "myapp", deploy1.Add(3*time.Second), time.Minute)
	errorsFrom := time.Now()
	apps["myapp"].SetMode(t, "error_ratio", "0.3")
	// The deploy placed 12 s after the errors started must still lie
	// before the assessment, with the assess window full of errors.
	p.WaitScrapedAfter(t, "myapp", errorsFrom.Add(16*time.Second), time.Minute)

	t.Run("errors start after the deploy", func(t *testing.T) {
		a := assess(t)
		r := a.Related
		if r.Verdict != handlers.Likely || !strings.HasPrefix(r.Summary, "Started ") || !strings.Contains(r.Summary, " after the deploy; other services healthy (2 of 2)") {
			t.Fatalf("verdict %s: %s", r.Verdict, r.Summary)
		}
		// The onset lies between the errors' start and a rate window (3s)
		// plus two scrapes later.
		if r.Onset.Before(errorsFrom.Add(-time.Second)) || r.Onset.After(errorsFrom.Add(6*time.Second)) {
			t.Fatalf("onset %s, errors started at %s", r.Onset.Format(time.TimeOnly), errorsFrom.Format(time.TimeOnly))
		}
		if !strings.Contains(a.Recommendation(), "→ likely this deploy") {
			t.Fatalf("recommendation %q", a.Recommendation())
		}
	})

	t.Run("errors start before the deploy", func(t *testing.T) {
		platform.set(errorsFrom.Add(12 * time.Second))
		defer platform.set(deploy1)
		a := assess(t)
		r := a.Related
		if r.Verdict != handlers.Unlikely || !strings.HasPrefix(r.Summary, "Started ") || !strings.Contains(r.Summary, " before the deploy") {
			t.Fatalf("verdict %s: %s", r.Verdict, r.Summary)
		}
		if rec := a.Recommendation(); !strings.HasPrefix(rec, "Likely not this deploy: started ") || !strings.Contains(rec, "Check infrastructure first") || !strings.Contains(rec, "rolling back stays possible") {
			t.Fatalf("recommendation %q", rec)
		}
	})

	// myapp recovers; after a quiet range a new deploy, then myapp and
	// payments both fail.
	apps["myapp"].SetMode(t, "error_ratio", "0")
	recovered := time.Now()
	p.WaitScrapedAfter(t, "myapp", recovered.Add(12*time.Second), time.Minute)
	deploy2 := time.Now()
	platform.set(deploy2)
	p.WaitScrapedAfter(t, "myapp", deploy2.Add(2*time.Second), time.Minute)
	apps["myapp"].SetMode(t, "error_ratio", "0.3")
	apps["payments"].SetMode(t, "error_ratio", "0.3")
	p.WaitScrapedAfter(t, "myapp", time.Now().Add(10*time.Second), time.Minute)

	t.Run("a second service degraded too", func(t *testing.T) {
		a := assess(t)
		r := a.Related
		if r.Verdict != handlers.Unlikely || r.Degraded != 1 || r.Measured != 2 || !strings.Contains(r.Summary, "2 of 3 services degraded") {
			t.Fatalf("verdict %s (%d of %d neighbours degraded): %s", r.Verdict, r.Degraded, r.Measured, r.Summary)
		}
		if ev := strings.Join(r.Evidence, "\n"); !strings.Contains(ev, "degraded: payments (error rate ") {
			t.Fatalf("evidence does not name payments:\n%s", ev)
		}
	})
}

// TestDeploymentRelatedVerdictNodeConditionsThroughSlack: on the real
// control plane, v2's pods land on a node under memory pressure (its
// conditions set through the status subresource; no kubelet runs it, so
// they stay Pending). With the ClusterRole rollbot-nodes as shipped, the
// assessment on the local Slack server says the failure is likely not
// this deploy, names the node, and still offers the rollback.
func TestDeploymentRelatedVerdictNodeConditionsThroughSlack(t *testing.T) {
	heavy(t)
	c := kubetest.Start(t)
	ns := kubetest.CreateNamespace(t, c.AdminClient, "verdict")
	kubetest.CreateDeployment(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v1", 2)
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
	sick := "sick-" + ns
	kubetest.CreateSickNode(t, c.AdminClient, sick,
		corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue, Reason: "KubeletHasInsufficientMemory", Message: "kubelet has insufficient memory available"})
	// v2, bound to the sick node (as a scheduler would have placed it).
	d, err := c.AdminClient.AppsV1().Deployments(ns).Get(t.Context(), "myapp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Image = "registry.local/myapp:v2"
	d.Spec.Template.Spec.NodeName = sick
	// Every pod replaced at once, so none of v1's stays Ready.
	all, none := intstr.FromString("100%"), intstr.FromInt32(0)
	d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxUnavailable: &all, MaxSurge: &none}
	if _, err := c.AdminClient.AppsV1().Deployments(ns).Update(t.Context(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, "v2 pods on "+sick, func() (bool, error) {
		pods, err := c.AdminClient.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		n := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName == sick {
				n++
			}
		}
		return n == 2 && len(pods.Items) == 2, fmt.Errorf("%d of %d pods on %s", n, len(pods.Items), sick)
	})

	const rbac = "../deploy/kubernetes/rbac.yaml"
	kubeconfig := c.KubeconfigFor(t, ns, rbac)
	c.BindClusterRole(t, ns, kubeconfig, rbac, kube.NodesClusterRole, "list", "nodes")
	adapter, err := kube.New(kube.Config{Kubeconfig: kubeconfig, Namespace: ns, Deployment: "myapp"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc := &handlers.Service{Name: "myapp", Platform: adapter, Approvers: handlers.Access{Groups: []string{slackemu.GroupOnCall}}}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	t.Logf("assessment:\n%s", a.PlainText())
	row := tableRows(t, a)["Deployment-related?"]
	if row == nil || row[colVerdict] != "⚠️ likely not: check infrastructure first" || !strings.HasPrefix(row[colMeasured], "Node "+sick+" MemoryPressure since ") {
		t.Fatalf("Deployment-related? row %q", row)
	}
	wantAll(t, "assessment", a.PlainText(), "*Recommendation:* Likely not this deploy: node "+sick+" MemoryPressure since ",
		"Check infrastructure first", "rolling back stays possible (Failed readiness over threshold)")
}

package bot

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	appsv1 "k8s.io/api/apps/v1"

	"rollbot/handlers"
	"rollbot/platforms/kube"
	"rollbot/state"
	"rollbot/testkit/dockertest"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/nettest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// kubeDrillTarget is myapp@staging on a fresh control plane: a
// Deployment of 3 pods on registry.local/myapp:v1 in a namespace named
// after prefix, the adapter acting as the least-privilege ServiceAccount
// of rbac.yaml, and registry.local/myapp:v2 as the drill's bad image. It
// returns the Deployment as it was before the drill.
func kubeDrillTarget(t *testing.T, prefix string) (*kubetest.Cluster, string, *appsv1.Deployment, *handlers.Service) {
	t.Helper()
	c := kubetest.Shared(t)
	ns := kubetest.CreateNamespace(t, c.AdminClient, prefix)
	kubetest.CreateDeployment(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v1", 3)
	before := kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
	adapter, err := kube.New(kube.Config{Kubeconfig: c.KubeconfigFor(t, ns, "../deploy/kubernetes/rbac.yaml"), Namespace: ns, Deployment: "myapp", RolloutTimeout: time.Minute},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc := &handlers.Service{Name: "myapp@staging", Env: "staging", Platform: adapter, Metrics: imageMetrics{adapter},
		Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
		Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}, Drill: &handlers.Drill{Bad: "registry.local/myapp:v2"}}
	return c, ns, before, svc
}

// endedAsStarted fails unless the Deployment d is as before the drill:
// not paused, the same replicas and image.
func endedAsStarted(t *testing.T, d, before *appsv1.Deployment) {
	t.Helper()
	if d.Spec.Paused || *d.Spec.Replicas != *before.Spec.Replicas || d.Spec.Template.Spec.Containers[0].Image != before.Spec.Template.Spec.Containers[0].Image {
		t.Fatalf("the Deployment did not end as it started: paused %v, replicas %d (was %d), image %s (was %s)", d.Spec.Paused, *d.Spec.Replicas, *before.Spec.Replicas,
			d.Spec.Template.Spec.Containers[0].Image, before.Spec.Template.Spec.Containers[0].Image)
	}
}

// A drill on the real Kubernetes control plane, through the local Slack
// server: the adapter (as the least-privilege ServiceAccount) deploys the
// drill's bad image as a new revision, the assessment sees it, the same
// "Roll back" button rolls it back, and the Deployment ends as it started:
// the same image on 3 Ready pods, not paused (its generation moves on: the
// drill's deploy and the rollback are two writes, noted in the report's
// timeline).
func TestDrillOnKubernetes(t *testing.T) {
	heavy(t)
	c, ns, before, svc := kubeDrillTarget(t, "drill")
	eng := fastEngine()
	eng.VerifyTimeout = 30 * time.Second
	h := newHarness(t, []*handlers.Service{svc}, eng)

	h.slash(slackemu.UserAlice, "drill myapp")
	a := h.waitFor("drill assessment", func(m slackemu.Message) bool {
		return strings.Contains(m.PlainText(), "Drill: rollback of myapp@staging") && slices.Contains(m.ActionIDs(), handlers.ActConfirm)
	})
	wantAll(t, "drill assessment", a.PlainText(), "Bad version:* 2 (registry.local/myapp:v2)", "Last known good:* 1 (registry.local/myapp:v1)", "9.00%")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.tickChecksByHand(slackemu.UserBob, a.TS)
	r := h.waitFor("drill report", func(m slackemu.Message) bool {
		return m.ThreadTS == a.TS && strings.Contains(m.PlainText(), "Drill report")
	})
	wantAll(t, "drill report", r.PlainText(), "*Assess*", "of 2 min", "*Stop*", "of 30 s", "*Roll back*", "of 1–3 min", "*Verify*", "of 3 min",
		"back as the drill found it: 1 (registry.local/myapp:v1), 3 units")
	in := h.waitStatus("RB-1", state.Completed)

	images, ready := kubetest.PodImages(t, c.AdminClient, ns, "myapp")
	if len(images) != 3 || ready != 3 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/myapp:v1" }) {
		t.Fatalf("after the drill: images %v, %d ready; want 3 Ready pods on registry.local/myapp:v1", images, ready)
	}
	d, err := c.AdminClient.AppsV1().Deployments(ns).Get(context.Background(), "myapp", metavOpts())
	if err != nil {
		t.Fatal(err)
	}
	endedAsStarted(t, d, before)
	t.Logf("generation %d before the drill, %d after (the drill's deploy, the pause and the rollback)", before.Generation, d.Generation)
	if in.Drill == nil || in.Drill.Left != "" {
		t.Fatalf("drill record: %+v", in.Drill)
	}
	// The drill's bad version is not marked DO_NOT_DEPLOY: the next drill deploys it again.
	if marks, _ := h.store.Marks(context.Background(), "myapp@staging"); len(marks) != 0 {
		t.Errorf("a drill marked %v", marks)
	}
}

// A drill cancelled at its confirmation on the real Kubernetes control
// plane puts back the image it found through the adapter's Deploy (as
// the least-privilege ServiceAccount), conditional on the Deployment
// still running the drill's bad image: it ends on that image with 3 Ready
// pods, not paused, and the service released.
func TestDrillCancelledOnKubernetes(t *testing.T) {
	heavy(t)
	c, ns, before, svc := kubeDrillTarget(t, "drillcancel")
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())

	h.slash(slackemu.UserAlice, "drill myapp")
	a := h.waitFor("drill assessment", func(m slackemu.Message) bool {
		return strings.Contains(m.PlainText(), "Drill: rollback of myapp@staging") && slices.Contains(m.ActionIDs(), handlers.ActConfirm)
	})
	h.click(slackemu.UserBob, a.TS, handlers.ActCancel)
	h.waitFor("the restore", textHas("Drill RB-1: restored to 1 (registry.local/myapp:v1): deployment "+ns+"/myapp runs it with 3 units, as before the drill"))
	in := h.waitStatus("RB-1", state.Cancelled)
	if in.Drill == nil || in.Drill.Left != "" {
		t.Fatalf("drill record: %+v", in.Drill)
	}
	d := kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
	endedAsStarted(t, d, before)
	kubetest.Poll(t, "3 Ready pods on registry.local/myapp:v1", func(context.Context) (bool, error) {
		images, ready := kubetest.PodImages(t, c.AdminClient, ns, "myapp")
		ok := len(images) == 3 && ready == 3 && !slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/myapp:v1" })
		return ok, fmt.Errorf("images %v, %d ready", images, ready)
	})
	t.Logf("generation %d before the drill, %d after (the drill's deploy and its restore)", before.Generation, d.Generation)
	if l, _ := h.store.LockHolder(t.Context(), "myapp@staging"); l != nil {
		t.Errorf("the drill still holds the service: %+v", l)
	}
}

// A drill on the Docker engine of this machine (Swarm), configured in YAML
// as a service with a staging environment marked for drills and a prod
// one that is not: the drill deploys the bad image (30% errors, failing
// health) through the adapter, the assessment measures it from the
// service's own metrics, the same button rolls it back, the verification
// passes, and the service ends on the image and task count it started with.
func TestDrillOnSwarm(t *testing.T) {
	heavy(t)
	cli := dockertest.Client(t)
	ctx := context.Background()
	release, err := dockertest.EnsureSwarm(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := release(context.Background()); err != nil {
			t.Errorf("leave the test swarm: %v", err)
		}
	})
	v1 := dockertest.MustImage(t, cli, e2eGood)
	v2 := dockertest.MustImage(t, cli, e2eBad)
	port := uint32(nettest.FreePort(t))
	name := dockertest.ServiceWith(t, cli, v1, dockertest.ServiceOptions{PublishedPort: port, Env: []string{"SAMPLEAPP_SELF_LOAD=20"}})
	dockertest.WaitTasks(t, cli, name, v1, 1, true)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	wait.Every(t, 200*time.Millisecond, time.Minute, "v1 to answer", func() (bool, error) {
		code, body, err := httpGet(base + "/version")
		return err == nil && code == 200 && body == "v1", fmt.Errorf("/version: %d %q %v", code, body, err)
	})
	startSpec, err := cli.ServiceInspect(ctx, name, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}

	h, _ := newConfigHarness(t, fmt.Sprintf(`
incident_channels: [%s]
verify_timeout: 3m
verify_soak: 2s
verify_interval: 500ms
query_timeout: 20s
services:
  myapp:
    approvers: {groups: [%s]}
    drill: {bad: %s}
    environments:
      staging:
        drills: true
        platform: swarm
        swarm: {service: %s, update_parallelism: 1, update_delay: 1s, timeout: 3m, health_path: /health}
        metrics:
          scrape: {url: %s/metrics, labels: {handler: /work}}
        thresholds: {baseline_p95: 250ms}
        health_urls: [%s/health]
      prod:
        platform: swarm
        swarm: {service: %s}
`, slackemu.ChannelIncident, slackemu.GroupOnCall, v2, name, base, base, name))

	h.slash(slackemu.UserAlice, "drill myapp --env prod")
	h.ephemeralIn(slackemu.ChannelIncident, slackemu.UserAlice, "No drill of `myapp@prod`: its environment is not marked for drills")

	h.slash(slackemu.UserAlice, "drill myapp --env staging")
	a := h.waitLong("drill assessment", func(m slackemu.Message) bool {
		return strings.Contains(m.PlainText(), "Drill: rollback of myapp@staging") && slices.Contains(m.ActionIDs(), handlers.ActConfirm)
	})
	wantAll(t, "drill assessment", a.PlainText(), "Bad version:* e2e-v2 ("+v2+")", "Last known good:* e2e-v1 ("+v1+")")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.tickChecksByHand(slackemu.UserBob, a.TS)
	r := h.waitLong("drill report", func(m slackemu.Message) bool {
		return m.ThreadTS == a.TS && strings.Contains(m.PlainText(), "Drill report")
	})
	wantAll(t, "drill report", r.PlainText(), "*Assess*", "*Stop*", "*Roll back*", "of 1–3 min", "*Verify*", "back as the drill found it")
	h.waitStatus("RB-1", state.Completed)

	svc, err := cli.ServiceInspect(ctx, name, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := svc.Service.Spec.TaskTemplate.ContainerSpec.Image; got != v1 {
		t.Errorf("service spec runs %s after the drill, want %s", got, v1)
	}
	if got, want := *svc.Service.Spec.Mode.Replicated.Replicas, *startSpec.Service.Spec.Mode.Replicated.Replicas; got != want {
		t.Errorf("replicas %d after the drill, want %d", got, want)
	}
	dockertest.WaitTasks(t, cli, name, v1, 1, true)
	if code, body, err := httpGet(base + "/version"); err != nil || code != 200 || body != "v1" {
		t.Errorf("GET /version after the drill: %d %q %v; want v1", code, body, err)
	}
	t.Logf("swarm service version %d before the drill, %d after", startSpec.Service.Version.Index, svc.Service.Version.Index)
}

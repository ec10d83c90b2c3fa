package bot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/platforms/probe"
	"rollbot/platforms/registry"
	"rollbot/state"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/registrytest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// imageMetrics reports request metrics by the image the Deployment runs:
// v2 is the bad build. The cluster, the rollback and the pods are real;
// only the request metrics are derived (Prometheus is proven in platforms/prom).
type imageMetrics struct{ p platforms.Platform }

func (m imageMetrics) value(ctx context.Context, bad, good float64) (platforms.Measurement, error) {
	snap, err := m.p.Snapshot(ctx)
	if err != nil {
		return platforms.Measurement{}, err
	}
	v := good
	if strings.HasSuffix(snap.Current.Artifact, ":v2") {
		v = bad
	}
	return platforms.Measurement{Value: v, Source: "test metrics by image", Requests: 1000}, nil
}

func (m imageMetrics) ErrorRatio(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	return m.value(ctx, 0.09, 0.001)
}

func (m imageMetrics) LatencyP95(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	return m.value(ctx, 0.9, 0.1)
}

// TestKubernetesRollbackThroughSlack is the end-to-end test that matters:
// /rollback myapp in the local Slack server, confirmed by an on-call
// engineer, against a real control plane, with the adapter running as a
// ServiceAccount bound to exactly deploy/kubernetes/rbac.yaml's Role; it
// ends with the Deployment's pods on the old image.
func TestKubernetesRollbackThroughSlack(t *testing.T) {
	heavy(t)
	c := kubetest.Start(t)
	ns := kubetest.CreateNamespace(t, c.AdminClient, "e2e")
	kubetest.CreateDeployment(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v1", 3)
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
	kubetest.SetImage(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v2")
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")

	kubeconfig := c.KubeconfigFor(t, ns, "../deploy/kubernetes/rbac.yaml")
	adapter, err := kube.New(kube.Config{Kubeconfig: kubeconfig, Namespace: ns, Deployment: "myapp", RolloutTimeout: time.Minute},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svc := &handlers.Service{Name: "myapp", Platform: adapter, Metrics: imageMetrics{adapter},
		Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
		Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}}
	eng := fastEngine()
	eng.VerifyTimeout = 30 * time.Second
	h := newHarness(t, []*handlers.Service{svc}, eng)

	// What the v2 containers log (kwok serves it through pods/log).
	if err := c.SetContainerLog("myapp v2 listening on :8080", "panic: runtime error: invalid memory address in handler /work"); err != nil {
		t.Fatal(err)
	}

	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Bad version:* 2 (registry.local/myapp:v2)", "Last known good:* 1 (registry.local/myapp:v1)", "9.00%")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	// No health URL and no smoke test: those two items are checks by hand.
	answerChecksByHand(t, h.emu, slackemu.UserBob, 2, time.Minute)
	h.waitFor("verified", textHas("Rollback verified"))
	h.waitFor("post-rollback actions", textHas("Post-rollback actions"))

	// The v2 pods' logs and events, and the Deployment's, were kept before
	// the rollout was stopped, as the least-privilege ServiceAccount, and
	// uploaded into the thread.
	files := h.emu.Files()
	if len(files) != 1 || files[0].Name != "RB-1-evidence.txt" || files[0].ThreadTS != a.TS {
		t.Fatalf("files uploaded: %+v", files)
	}
	wantAll(t, "evidence file", string(files[0].Content), "===== pod "+ns+"/myapp-", " container app (log) =====",
		"panic: runtime error: invalid memory address in handler /work", "===== deployment "+ns+"/myapp events (events) =====", "Normal ScalingReplicaSet")
	if strings.Count(string(files[0].Content), " container app (log) =====") != 3 {
		t.Errorf("want the logs of the 3 pods of v2 (units: 3):\n%s", files[0].Content)
	}
	h.wantSteps("RB-1", "request", "assess", "confirm", "capture", "stop", "rollback", "verify", "postactions")

	images, ready := kubetest.PodImages(t, c.AdminClient, ns, "myapp")
	if len(images) != 3 || ready != 3 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/myapp:v1" }) {
		t.Fatalf("after the rollback: images %v, %d ready; want 3 Ready pods on registry.local/myapp:v1", images, ready)
	}
	d, err := c.AdminClient.AppsV1().Deployments(ns).Get(context.Background(), "myapp", metavOpts())
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Paused {
		t.Fatal("the Deployment was left paused")
	}
	// The bad ReplicaSet carries the DO_NOT_DEPLOY mark on the cluster too.
	snap, err := adapter.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(snap.History, func(r platforms.Revision) bool { return r.Artifact == "registry.local/myapp:v2" && r.DoNotDeploy }) {
		t.Fatalf("v2 not marked on the cluster: %+v", snap.History)
	}
}

func metavOpts() metav1.GetOptions { return metav1.GetOptions{} }

// TestKubernetesAdmissionThroughSlack: with kubernetes.admission, the
// rollback through the local Slack server leaves the namespace refusing
// the bad image (a Deployment with it is refused by the real apiserver
// with the policy's message; another namespace is unaffected) until an
// approver runs /rollback allow, which is on the timeline.
func TestKubernetesAdmissionThroughSlack(t *testing.T) {
	heavy(t)
	c := kubetest.Start(t)
	ns := kubetest.CreateNamespace(t, c.AdminClient, "adm")
	other := kubetest.CreateNamespace(t, c.AdminClient, "adm-other")
	kubetest.CreateDeployment(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v1", 2)
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")
	kubetest.SetImage(t, c.AdminClient, ns, "myapp", "registry.local/myapp:v2")
	kubetest.WaitRolledOut(t, c.AdminClient, ns, "myapp")

	kubeconfig := c.KubeconfigFor(t, ns, "../deploy/kubernetes/rbac.yaml")
	adapter, err := kube.New(kube.Config{Kubeconfig: kubeconfig, Namespace: ns, Deployment: "myapp", RolloutTimeout: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	adm := kube.NewAdmission(c.AdminClient, ns, "myapp", nil)
	// A health URL and a smoke test, so the verification needs nobody.
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(health.Close)
	svc := &handlers.Service{Name: "myapp", Platform: adapter, Metrics: imageMetrics{adapter}, Admission: adm,
		Health: &probe.Probes{HealthURLs: []string{health.URL + "/health"}, SmokeCommand: []string{"true"}, SmokeTimeout: 10 * time.Second}, HasHealth: true, HasSmoke: true,
		Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
		Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}}
	eng := fastEngine()
	eng.VerifyTimeout = 30 * time.Second
	h := newHarness(t, []*handlers.Service{svc}, eng)

	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "refuse the image in namespace "+ns)
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("verified", textHas("Rollback verified"))
	post := h.waitFor("post-rollback actions", textHas("Post-rollback actions"))
	h.waitStatus("RB-1", state.Completed)
	wantAll(t, "post-rollback actions", post.PlainText(), "namespace "+ns+" refuses registry.local/myapp:v2", "/rollback allow myapp 2")

	ctx := context.Background()
	n := 0
	create := func(ns string) error {
		n++
		d := kubetest.NewDeployment(ns, fmt.Sprintf("next-%d", n), "registry.local/myapp:v2", 0)
		_, err := c.AdminClient.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
		return err
	}
	var refusal error
	wait.For(t, 30*time.Second, "the apiserver to refuse the bad image", func() (bool, error) {
		refusal = create(ns)
		return refusal != nil, errors.New("accepted")
	})
	if !strings.Contains(refusal.Error(), "image registry.local/myapp:v2 is marked DO_NOT_DEPLOY by rollbot (RB-1, by "+slackemu.UserBob+")") {
		t.Errorf("refusal: %v", refusal)
	}
	if err := create(other); err != nil {
		t.Errorf("another namespace refused the image: %v", err)
	}

	h.slash(slackemu.UserEve, "allow myapp v2")
	h.waitFor("refusal for eve", ephemeralFor(slackemu.UserEve, "not allowed to lift the admission refusal"))
	if err := create(ns); err == nil {
		t.Fatal("the image was let in after a refused allow")
	}
	h.slash(slackemu.UserBob, "allow myapp v2")
	h.waitFor("allowed", textHas("<@"+slackemu.UserBob+"> lifted the admission refusal for myapp"))
	wait.For(t, 30*time.Second, "the apiserver to accept the image again", func() (bool, error) {
		err := create(ns)
		return err == nil, err
	})
	evs, err := h.store.Timeline(ctx, "RB-1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(evs, func(e state.Event) bool { return e.Step == "allow" && e.Actor == slackemu.UserBob }) ||
		!slices.ContainsFunc(evs, func(e state.Event) bool {
			return e.Step == "allow" && e.Actor == slackemu.UserEve && strings.Contains(e.Detail, "refused")
		}) {
		t.Errorf("allow not on the timeline: %+v", evs)
	}
}

// TestAdmissionByDigestFromRegistryMark: with a registry and
// kubernetes.admission, the rollback through the local Slack server
// marks the bad image in Debian's docker-registry and the namespace then
// refuses it by tag and by the digest the registry mark resolved, under
// any repository name (a pipeline that pins the digest, or pulls it
// through a mirror, is refused too); the good image by digest is let in.
func TestAdmissionByDigestFromRegistryMark(t *testing.T) {
	heavy(t)
	reg := registrytest.Start(t, registrytest.Options{})
	svc := registryService(t, reg, registry.Config{PlainHTTP: true}, nil)
	rr := reg.Repository(t, "myapp")
	ctx := context.Background()
	bad, err := rr.Resolve(ctx, "v3")
	if err != nil {
		t.Fatal(err)
	}
	good, err := rr.Resolve(ctx, "v2")
	if err != nil {
		t.Fatal(err)
	}
	c := kubetest.Start(t)
	ns := kubetest.CreateNamespace(t, c.AdminClient, "adm-digest")
	svc.Admission = kube.NewAdmission(c.AdminClient, ns, "myapp", nil)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	_, post := rollBack(t, h)
	wantAll(t, "post-rollback actions", post.PlainText(), "marked by rollbot in `"+reg.Host+"/myapp`", "namespace "+ns+" refuses "+reg.Host+"/myapp:v3")

	n := 0
	create := func(image string) error {
		n++
		_, err := c.AdminClient.AppsV1().Deployments(ns).Create(ctx, kubetest.NewDeployment(ns, fmt.Sprintf("next-%d", n), image, 0), metav1.CreateOptions{})
		return err
	}
	byDigest := reg.Host + "/myapp@" + bad.Digest.String()
	var refusal error
	wait.For(t, 30*time.Second, "the apiserver to refuse the bad image by digest", func() (bool, error) {
		refusal = create(byDigest)
		return refusal != nil, errors.New("accepted")
	})
	if !strings.Contains(refusal.Error(), "is marked DO_NOT_DEPLOY by rollbot (RB-1, by "+slackemu.UserBob+")") {
		t.Errorf("refusal by digest: %v", refusal)
	}
	for _, img := range []string{reg.Host + "/myapp:v3", "mirror.example.com/team/myapp@" + bad.Digest.String(), reg.Host + "/myapp:v3@" + bad.Digest.String()} {
		if err := create(img); err == nil {
			t.Errorf("%s was accepted", img)
		}
	}
	if err := create(reg.Host + "/myapp@" + good.Digest.String()); err != nil {
		t.Errorf("the good image by digest was refused: %v", err)
	}
}

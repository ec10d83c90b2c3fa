package bot

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/platforms/prom"
	"rollbot/state"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/promtest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/wait"
)

// benchPods is the size of the service the assessment benchmark reads.
const benchPods = 500

// quietChat is a handlers.Chat that posts nowhere: Assess never posts,
// and the benchmark measures the assessment, not Slack.
type quietChat struct{}

func (quietChat) Post(context.Context, string, string, handlers.Msg) (string, error) { return "1", nil }
func (quietChat) Update(context.Context, string, string, handlers.Msg) error         { return nil }
func (quietChat) Ephemeral(context.Context, string, string, handlers.Msg) error      { return nil }
func (quietChat) Schedule(context.Context, string, time.Time, handlers.Msg) error    { return nil }
func (quietChat) OpenModal(context.Context, string, slack.ModalViewRequest) error    { return nil }
func (quietChat) GroupMembers(context.Context, string) ([]string, error)             { return nil, nil }
func (quietChat) Upload(context.Context, string, string, handlers.File) error        { return nil }

// BenchmarkAssess500Pods is issue 6's benchmark, with issue 14's capture:
// the wall time of the runbook §1 assessment ((*handlers.Engine).Assess,
// exactly what /rollback runs before posting the table) followed by the
// evidence capture the first write step runs (the kube adapter's Capture
// with the default limits: 3 bad pods' current and previous logs of a
// 2000-line log, their events, the Deployment's and ReplicaSet's), for a
// Kubernetes service of 500 pods with all four checks:
//
//   - error rate and p95 latency (current and baseline) from a real
//     Prometheus scraping the sample service, through the prom adapter;
//
//   - restarts and readiness of the 500 pods from a real control plane
//     (kwok plays the kubelet) through the kube adapter, as the
//     ServiceAccount bound to deploy/kubernetes/rbac.yaml's Role.
//
//   - the "Deployment-related?" verdict: the error ratio and p95 over time
//     (query_range), the same for a neighbour service (a selector on the
//     same Prometheus), and the node conditions (ClusterRole rollbot-nodes).
//
// The capture reuses the pod list the assessment just read.
//
// The scene is an incident: v1 ran 500 Ready pods, v2-broken replaced
// them all at once and crash-loops, and the sample service fails 30% of its
// requests at 300ms since then. Setup is untimed. Reported besides ns/op:
// assess-ms (mean), max-ms (slowest assessment), and, timed inside each
// assessment, snapshot-ms (the kube Snapshot: Deployment, ReplicaSets and
// the 500 pods) and metrics-ms (the slowest of the concurrent Prometheus
// measurements, the verdict's range queries included); pods and
// failed-checks as read.
func BenchmarkAssess500Pods(b *testing.B) {
	// Metrics: the sample service, scraped every second, with a good
	// baseline before the deploy.
	bin := promtest.BuildSampleApp(b)
	app := promtest.StartSampleApp(b, bin, "-self-load", "50", "-latency", "60ms")
	// A healthy neighbour, which the verdict compares with.
	neighbour := promtest.StartSampleApp(b, bin, "-self-load", "20", "-latency", "60ms")
	promStart := time.Now()
	p := promtest.Start(b, promtest.Target{Job: promJob, Addr: app.Addr}, promtest.Target{Job: "payments", Addr: neighbour.Addr})

	// The platform: 500 Ready pods of v1.
	c := kubetest.Start(b)
	cs := c.AdminClient
	checkNodeCapacity(b, cs, benchPods)
	ns := kubetest.CreateNamespace(b, cs, "bench")
	d := kubetest.NewDeployment(ns, "myapp", "registry.local/myapp:v1", benchPods)
	// Replace every pod at once: the new ReplicaSet (whose creation is the
	// deploy time the baseline window ends at) exists from the start.
	all, none := intstr.FromString("100%"), intstr.FromInt32(0)
	d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxUnavailable: &all, MaxSurge: &none}
	if _, err := cs.AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	waitPods(b, cs, ns, "myapp", "registry.local/myapp:v1", benchPods, benchPods)

	// A full baseline window of good traffic before the bad deploy.
	const window = 30 * time.Second
	p.WaitScrapedAfter(b, promJob, promStart.Add(window), 2*time.Minute)
	deployed := time.Now()
	kubetest.SetImage(b, cs, ns, "myapp", "registry.local/myapp:v2-broken")
	app.SetMode(b, "error_ratio", "0.3", "latency", "300ms")
	waitPods(b, cs, ns, "myapp", "registry.local/myapp:v2-broken", benchPods, 0)
	p.WaitScrapedAfter(b, promJob, deployed.Add(5*time.Second), time.Minute)

	kubeconfig := c.KubeconfigFor(b, ns, "../deploy/kubernetes/rbac.yaml")
	c.BindClusterRole(b, ns, kubeconfig, "../deploy/kubernetes/rbac.yaml", kube.NodesClusterRole, "list", "nodes")
	log := slog.New(slog.DiscardHandler)
	platform, err := kube.New(kube.Config{Kubeconfig: kubeconfig, Namespace: ns, Deployment: "myapp"}, log)
	if err != nil {
		b.Fatal(err)
	}
	metrics, err := prom.New(prom.Config{URL: p.URL, Selector: `job="` + promJob + `"`}, log)
	if err != nil {
		b.Fatal(err)
	}
	payments, err := metrics.WithSelector(`job="payments"`)
	if err != nil {
		b.Fatal(err)
	}
	svc := &handlers.Service{Name: "myapp", Platform: platform, Metrics: metrics,
		AssessWindow: window, BaselineWindow: window,
		Approvers: handlers.Access{Groups: []string{"S0ONCALL"}},
		Verdict:   handlers.VerdictConfig{Neighbours: []handlers.Neighbour{{Name: "payments", Metrics: payments}}}}
	rdb, prefix := redistest.Client(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	eng := handlers.New(ctx, quietChat{}, state.New(rdb, prefix), []*handlers.Service{svc}, handlers.Options{}, log)

	// The assessment must do the full work: every check decided, 500 pods read.
	a := eng.Assess(ctx, svc, "", nil)
	b.Logf("assessment of %s in %s:\n%s", a.Target, a.Took.Round(time.Millisecond), checksTable(a))
	if a.SnapshotErr != "" || a.Snapshot.Health.Desired != benchPods {
		b.Fatalf("snapshot: %q, desired %d", a.SnapshotErr, a.Snapshot.Health.Desired)
	}
	for _, ch := range a.Checks {
		if ch.Verdict == handlers.Inconclusive {
			b.Fatalf("check %s is inconclusive (%s): the benchmark would not measure the full assessment", ch.Name, ch.Source)
		}
	}
	if !a.HasGood || !strings.HasSuffix(a.Good.Artifact, ":v1") {
		b.Fatalf("last known good %+v (%s), want v1", a.Good, a.GoodWhy)
	}
	// The verdict too: the onset from the range queries, the neighbour and
	// the node conditions all measured.
	b.Logf("deployment-related: %s\n  %s", a.Related.Text(), strings.Join(a.Related.Evidence, "\n  "))
	if r := a.Related; r.Verdict != handlers.Likely || r.Measured != 1 || !strings.Contains(strings.Join(r.Evidence, "\n"), "nodes: the 1 running myapp have no bad condition") {
		b.Fatalf("verdict %s, %d neighbours measured: the benchmark would not measure the full verdict", r.Verdict, r.Measured)
	}

	// What the crash-looping containers logged, for the capture that comes
	// with the assessment before the first write.
	var logLines []string
	for i := range 2000 {
		logLines = append(logLines, fmt.Sprintf("%s level=error msg=\"handler /work failed\" err=\"nil map\" n=%d", time.Now().UTC().Format(time.RFC3339), i))
	}
	if err := c.SetContainerLog(logLines...); err != nil {
		b.Fatal(err)
	}
	if err := c.SetPreviousContainerLog(logLines[:500]...); err != nil {
		b.Fatal(err)
	}
	ev, err := platform.Capture(ctx, platforms.CaptureLimits{})
	if err != nil || len(ev.Sources) < 6 {
		b.Fatalf("capture: %d sources, %v\n%s", len(ev.Sources), err, ev.Text(""))
	}

	// The platform and the metrics source are timed inside Assess itself.
	tp := &timedPlatform{Platform: platform}
	tm := &timedMetrics{m: metrics}
	svc.Platform, svc.Metrics = tp, tm
	var total, slowest, snapT, metT, capT time.Duration
	failed := 0
	b.ResetTimer()
	for b.Loop() {
		tp.reset()
		tm.reset()
		start := time.Now()
		a := eng.Assess(ctx, svc, "", nil)
		cs := time.Now()
		if _, err := tp.Capture(ctx, platforms.CaptureLimits{}); err != nil {
			b.Fatalf("capture: %v", err)
		}
		capT += time.Since(cs)
		took := time.Since(start)
		total += took
		slowest = max(slowest, took)
		snapT += tp.took()
		metT += tm.slowest()
		failed = len(a.Failing())
		if a.SnapshotErr != "" {
			b.Fatalf("snapshot: %s", a.SnapshotErr)
		}
		if a.Related.Verdict != handlers.Likely {
			b.Fatalf("verdict %s: %s", a.Related.Verdict, a.Related.Summary)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(total)/n, "assess+capture-ms")
	b.ReportMetric(ms(capT)/n, "capture-ms")
	b.ReportMetric(ms(slowest), "max-ms")
	b.ReportMetric(ms(snapT)/n, "snapshot-ms")
	b.ReportMetric(ms(metT)/n, "metrics-ms")
	b.ReportMetric(float64(a.Snapshot.Health.Desired), "pods")
	b.ReportMetric(float64(failed), "failed-checks")
}

// timedPlatform times Snapshot, the only platform call of an assessment.
type timedPlatform struct {
	platforms.Platform
	mu sync.Mutex
	d  time.Duration
}

func (p *timedPlatform) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	start := time.Now()
	s, err := p.Platform.Snapshot(ctx)
	p.mu.Lock()
	p.d += time.Since(start)
	p.mu.Unlock()
	return s, err
}

// NodeConditions passes the verdict's node read on (untimed: it runs
// beside the metrics).
func (p *timedPlatform) NodeConditions(ctx context.Context, nodes []string) (platforms.NodeReport, error) {
	return p.Platform.(platforms.NodeChecker).NodeConditions(ctx, nodes)
}

// Capture is the kube adapter's, which reuses the pod list of the
// Snapshot just before it.
func (p *timedPlatform) Capture(ctx context.Context, lim platforms.CaptureLimits) (platforms.Evidence, error) {
	return p.Platform.(platforms.Capturer).Capture(ctx, lim)
}

func (p *timedPlatform) reset() { p.mu.Lock(); p.d = 0; p.mu.Unlock() }

func (p *timedPlatform) took() time.Duration { p.mu.Lock(); defer p.mu.Unlock(); return p.d }

// timedMetrics records the slowest measurement of an assessment (they run
// concurrently, so the slowest bounds the metrics phase).
type timedMetrics struct {
	m    platforms.Metrics
	mu   sync.Mutex
	slow time.Duration
}

func (t *timedMetrics) time(start time.Time) {
	t.mu.Lock()
	t.slow = max(t.slow, time.Since(start))
	t.mu.Unlock()
}

func (t *timedMetrics) ErrorRatio(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	defer t.time(time.Now())
	return t.m.ErrorRatio(ctx, from, to)
}

func (t *timedMetrics) LatencyP95(ctx context.Context, from, to time.Time) (platforms.Measurement, error) {
	defer t.time(time.Now())
	return t.m.LatencyP95(ctx, from, to)
}

func (t *timedMetrics) ErrorRatioRange(ctx context.Context, from, to time.Time, step, window time.Duration) (platforms.Series, error) {
	defer t.time(time.Now())
	return t.m.(platforms.RangeMetrics).ErrorRatioRange(ctx, from, to, step, window)
}

func (t *timedMetrics) LatencyP95Range(ctx context.Context, from, to time.Time, step, window time.Duration) (platforms.Series, error) {
	defer t.time(time.Now())
	return t.m.(platforms.RangeMetrics).LatencyP95Range(ctx, from, to, step, window)
}

func (t *timedMetrics) reset() { t.mu.Lock(); t.slow = 0; t.mu.Unlock() }

func (t *timedMetrics) slowest() time.Duration { t.mu.Lock(); defer t.mu.Unlock(); return t.slow }

func checksTable(a *handlers.Assessment) string {
	var s strings.Builder
	for _, c := range a.Checks {
		fmt.Fprintf(&s, "  %-16s %-34s %-28s %-12s %s\n", c.Name, c.Measured, c.Threshold, c.Verdict, c.Source)
	}
	return s.String()
}

// checkNodeCapacity fails when the kwok node cannot hold n pods.
func checkNodeCapacity(b *testing.B, cs kubernetes.Interface, n int) {
	b.Helper()
	node, err := cs.CoreV1().Nodes().Get(context.Background(), kubetest.NodeName, metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	q := node.Status.Allocatable[corev1.ResourcePods]
	if q.Value() < int64(n) {
		b.Fatalf("node %s allocates %d pods, the benchmark needs %d", kubetest.NodeName, q.Value(), n)
	}
}

// waitPods waits (up to 5 minutes: 500 pods on a shared machine) until the
// Deployment's non-terminating pods are exactly want pods of image, of which
// ready are Ready.
func waitPods(b *testing.B, cs kubernetes.Interface, ns, app, image string, want, ready int) {
	b.Helper()
	wait.Every(b, 500*time.Millisecond, 5*time.Minute, "pods of "+ns+"/"+app, func() (bool, error) {
		images, r := kubetest.PodImages(b, cs, ns, app)
		if len(images) == want && r == ready && !slices.ContainsFunc(images, func(s string) bool { return s != image }) {
			return true, nil
		}
		return false, fmt.Errorf("%d pods (%d Ready), want %d of %s (%d Ready)", len(images), r, want, image, ready)
	})
}

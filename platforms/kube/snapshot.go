package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	coreclient "k8s.io/client-go/kubernetes/typed/core/v1"

	"rollbot/platforms"
)

// Snapshot implements platforms.Platform: the current revision, the
// history from the Deployment's ReplicaSets (newest first), the pods'
// readiness and recent restarts, and the migration container's log tail.
func (a *Adapter) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	st, err := a.read(ctx)
	if err != nil {
		return nil, err
	}
	snap := &platforms.Snapshot{
		Paused:            st.d.Spec.Paused,
		RolloutInProgress: !rolloutComplete(st.d),
	}
	for _, rs := range st.rss {
		snap.History = append(snap.History, st.revision(rs))
	}
	if st.current != nil {
		snap.Current = st.revision(st.current)
		snap.DeployedAt = st.current.CreationTimestamp.Time
	} else {
		// The controller has not created the ReplicaSet for the new
		// template yet: the rollout has just started.
		snap.Current = platforms.Revision{Artifact: imageOf(&st.d.Spec.Template.Spec, st.container)}
		snap.RolloutInProgress = true
		snap.DeployedAt = a.now()
	}

	listed := a.now()
	pods, err := a.listPods(ctx, st)
	if err != nil {
		return nil, err
	}
	a.recent.put(st.d.ResourceVersion, listed, pods)
	snap.Health = a.health(st, pods)
	snap.Nodes = podNodes(pods)
	if st.current != nil && st.current.Annotations[revisionHistoryAnnotation] != "" {
		// A ReplicaSet that was rolled back to keeps its old creation
		// time; its rollout started when its oldest current pod was created.
		if t, ok := oldestPod(pods, st.current.UID); ok && t.After(snap.DeployedAt) {
			snap.DeployedAt = t
		}
	}
	snap.MigrationLog = a.migrationLog(ctx, st, pods)
	if o := a.helmOwner(st.d); o != nil {
		// A Helm release is rolled back through Helm: its revisions are
		// the history the rollback chooses from.
		rels, _ := a.helmHistory(o)
		if o.Problem == "" {
			a.helmSnapshot(snap, st, rels)
		}
		snap.Owner = o
		return snap, nil
	}
	snap.Owner, _ = a.ownerObject(ctx, st.d)
	return snap, nil
}

// rolloutComplete is `kubectl rollout status`'s notion of done.
func rolloutComplete(d *appsv1.Deployment) bool {
	if d.Generation > d.Status.ObservedGeneration {
		return false
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return d.Status.UpdatedReplicas >= want &&
		d.Status.Replicas <= d.Status.UpdatedReplicas &&
		d.Status.AvailableReplicas >= d.Status.UpdatedReplicas
}

// listPods returns the pods of the Deployment's ReplicaSets.
func (a *Adapter) listPods(ctx context.Context, st *state) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(st.d.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("selector of %s: %w", a.Target(), err)
	}
	list, err := a.pods.List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, a.apiError("list", "pods", err)
	}
	owners := make(map[types.UID]bool, len(st.rss))
	for _, rs := range st.rss {
		owners[rs.UID] = true
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if ref := metav1.GetControllerOf(&p); ref != nil && owners[ref.UID] {
			out = append(out, p)
		}
	}
	return out, nil
}

func (a *Adapter) health(st *state, pods []corev1.Pod) platforms.Health {
	h := platforms.Health{Known: true, RestartWindow: RestartWindow, Desired: 1}
	if st.d.Spec.Replicas != nil {
		h.Desired = int(*st.d.Spec.Replicas)
	}
	since := a.now().Add(-RestartWindow)
	var (
		total, curTotal, curReady int
		reasons                   = map[string]int{}
	)
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil {
			continue // terminating: neither serving nor coming back
		}
		total++
		ready := podReady(p)
		if ready {
			h.Ready++
		}
		if st.current != nil && metav1.IsControlledBy(p, st.current) {
			curTotal++
			if ready {
				curReady++
			}
		}
		start := p.CreationTimestamp.Time
		if p.Status.StartTime != nil {
			start = p.Status.StartTime.Time
		}
		for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
			h.Restarts += restartsSince(cs, start, since)
			if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
				reasons[w.Reason]++
			}
		}
	}
	parts := []string{fmt.Sprintf("%d/%d pods Ready", h.Ready, h.Desired)}
	if st.current != nil && curTotal != total {
		parts = append(parts, fmt.Sprintf("revision %d: %d/%d Ready", revisionNumber(st.current), curReady, curTotal))
	}
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", reasons[k], k))
	}
	if h.Restarts > 0 {
		parts = append(parts, fmt.Sprintf("%d restarts in %s", h.Restarts, shortDuration(RestartWindow)))
	}
	h.Detail = strings.Join(parts, ", ")
	return h
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// restartsSince estimates a container's restarts after since. The API only
// keeps a cumulative count and the last termination: every restart of a
// pod started within the window counts; for an older pod, a last
// termination inside the window counts as one (CrashLoopBackOff waits up to
// 5 minutes between restarts, so an old crash-looping pod restarts about
// once per window).
func restartsSince(cs corev1.ContainerStatus, podStart, since time.Time) int {
	if cs.RestartCount == 0 {
		return 0
	}
	if podStart.After(since) {
		return int(cs.RestartCount)
	}
	if t := cs.LastTerminationState.Terminated; t != nil && t.FinishedAt.After(since) {
		return 1
	}
	return 0
}

func shortDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return d.String()
}

func oldestPod(pods []corev1.Pod, owner types.UID) (time.Time, bool) {
	var t time.Time
	for _, p := range pods {
		ref := metav1.GetControllerOf(&p)
		if ref == nil || ref.UID != owner {
			continue
		}
		if t.IsZero() || p.CreationTimestamp.Before(&metav1.Time{Time: t}) {
			t = p.CreationTimestamp.Time
		}
	}
	return t, !t.IsZero()
}

// logReader reads a container's log. The real one goes through the API
// server's pods/log subresource, which the node's kubelet serves. In the
// tests kwok plays the kubelet and serves one configured file as every
// container's log (TestSnapshotMigrationLog); the choice of pod and
// container, the tail and the error path are unit-tested with client-go's
// fake clientset (TestMigrationLog).
type logReader interface {
	tail(ctx context.Context, pod, container string, lines int64) (string, error)
}

type podLogs struct{ pods coreclient.PodInterface }

func (p podLogs) tail(ctx context.Context, pod, container string, lines int64) (string, error) {
	limit := int64(64 << 10)
	b, err := p.pods.GetLogs(pod, &corev1.PodLogOptions{Container: container, TailLines: &lines, LimitBytes: &limit}).DoRaw(ctx)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// migrationLog returns the tail of the migration init container's log from
// the newest pod of the current revision that has one; "" when there is
// none or it cannot be read (the assessment then says so).
func (a *Adapter) migrationLog(ctx context.Context, st *state, pods []corev1.Pod) string {
	if !slices.ContainsFunc(st.d.Spec.Template.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == a.cfg.MigrationContainer }) {
		return ""
	}
	var candidates []*corev1.Pod
	for i := range pods {
		p := &pods[i]
		if st.current != nil && !metav1.IsControlledBy(p, st.current) {
			continue
		}
		if !slices.ContainsFunc(p.Status.InitContainerStatuses, func(s corev1.ContainerStatus) bool {
			return s.Name == a.cfg.MigrationContainer && (s.State.Terminated != nil || s.State.Running != nil || s.LastTerminationState.Terminated != nil)
		}) {
			continue // never started: no log yet
		}
		candidates = append(candidates, p)
	}
	slices.SortFunc(candidates, func(x, y *corev1.Pod) int { return y.CreationTimestamp.Time.Compare(x.CreationTimestamp.Time) })
	for _, p := range candidates {
		out, err := a.logs.tail(ctx, p.Name, a.cfg.MigrationContainer, int64(a.cfg.MigrationLogLines))
		if err != nil {
			a.log.WarnContext(ctx, "read migration log", "op", "snapshot", "pod", p.Name, "container", a.cfg.MigrationContainer, "err", a.apiError("get", "pods/log", err))
			continue
		}
		return lastLines(out, a.cfg.MigrationLogLines)
	}
	return ""
}

func lastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// podReuseAge is how long Capture may reuse the pod list of the last
// Snapshot (the assessment's) instead of listing the pods again.
const podReuseAge = 15 * time.Second

// recentPods is the pod list of the last Snapshot, kept for a Capture that
// follows it: on a big Deployment the list is the largest read of both.
// It is handed over once, only while the Deployment has the
// resourceVersion it had then (its status changes with every pod that
// becomes ready or not, is added or removed) and for at most podReuseAge;
// after that it is let go, so an idle adapter holds no pod list.
type recentPods struct {
	mu    sync.Mutex
	at    time.Time
	rv    string
	pods  []corev1.Pod
	clear *time.Timer
}

func (r *recentPods) put(rv string, at time.Time, pods []corev1.Pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rv, r.at, r.pods = rv, at, pods
	if r.clear != nil {
		r.clear.Stop()
	}
	r.clear = time.AfterFunc(podReuseAge, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.at.Equal(at) {
			r.pods = nil
		}
	})
}

// take hands over the kept list when it is still the Deployment's at rv;
// it is not kept after that.
func (r *recentPods) take(rv string, now time.Time) ([]corev1.Pod, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pods := r.pods
	if pods == nil || r.rv != rv || now.Sub(r.at) > podReuseAge || now.Before(r.at) {
		return nil, false
	}
	r.pods = nil
	return pods, true
}

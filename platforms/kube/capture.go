package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"rollbot/platforms"
)

var _ platforms.Capturer = (*Adapter)(nil)

// Capture implements platforms.Capturer: for up to lim.Units pods of the
// bad version (the current revision's pods and any other unhealthy one;
// not Ready or restarting first, the current revision's before others), the last lim.Lines lines of
// every container's current and previous log and the pod's events; then
// the Deployment's events. Logs go through pods/log with TailLines and
// LimitBytes, so the API server never sends more than the limits.
func (a *Adapter) Capture(ctx context.Context, lim platforms.CaptureLimits) (platforms.Evidence, error) {
	lim = lim.WithDefaults()
	var ev platforms.Evidence
	st, err := a.read(ctx)
	if err != nil {
		return ev, err
	}
	// The assessment's pod list, when it just read it and the Deployment
	// has not changed since; else a list of its own.
	pods, ok := a.recent.take(st.d.ResourceVersion, a.now())
	if !ok {
		if pods, err = a.listPods(ctx, st); err != nil {
			return ev, err
		}
	}
	bad := badPods(st, pods)
	if len(bad) == 0 {
		ev.Missed("%s has no pods: no pod logs kept", a.Target())
	}
	if len(bad) > lim.Units {
		ev.Missed("%d more pods not captured (limit: %d pods)", len(bad)-lim.Units, lim.Units)
		bad = bad[:lim.Units]
	}
	// Every read is its own piece, run a few at a time; the pieces are
	// put together in order.
	var reads []func(ev *platforms.Evidence)
	for _, p := range bad {
		for _, c := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
			name := fmt.Sprintf("pod %s/%s container %s", a.cfg.Namespace, p.Name, c.Name)
			if c.State.Running != nil || c.State.Terminated != nil || c.LastTerminationState.Terminated != nil {
				reads = append(reads, func(ev *platforms.Evidence) { a.captureLog(ctx, ev, lim, name, p.Name, c.Name, false) })
			}
			if c.RestartCount > 0 || c.LastTerminationState.Terminated != nil {
				reads = append(reads, func(ev *platforms.Evidence) { a.captureLog(ctx, ev, lim, name+" (previous)", p.Name, c.Name, true) })
			}
		}
		reads = append(reads, func(ev *platforms.Evidence) {
			a.captureEvents(ctx, ev, lim, "pod "+a.cfg.Namespace+"/"+p.Name, "Pod", p.Name)
		})
	}
	reads = append(reads, func(ev *platforms.Evidence) {
		a.captureEvents(ctx, ev, lim, a.Target(), "Deployment", a.cfg.Deployment)
	})
	if st.current != nil {
		reads = append(reads, func(ev *platforms.Evidence) {
			a.captureEvents(ctx, ev, lim, "replicaset "+a.cfg.Namespace+"/"+st.current.Name, "ReplicaSet", st.current.Name)
		})
	}
	parts := make([]platforms.Evidence, len(reads))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, read := range reads {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			read(&parts[i])
		})
	}
	wg.Wait()
	for _, p := range parts {
		ev.Sources = append(ev.Sources, p.Sources...)
		ev.Missing = append(ev.Missing, p.Missing...)
	}
	ev.Cap(lim.TotalBytes)
	return ev, nil
}

// badPods orders the pods worth keeping: the current revision's and the
// unhealthy ones; not Ready first, then the most restarts, the current
// revision's before others.
func badPods(st *state, pods []corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	restarts := map[*corev1.Pod]int32{}
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		var r int32
		for _, c := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
			r += c.RestartCount
		}
		current := st.current != nil && metav1.IsControlledBy(p, st.current)
		if !current && podReady(p) && r == 0 {
			continue
		}
		restarts[p] = r
		out = append(out, p)
	}
	cur := func(p *corev1.Pod) int {
		if st.current != nil && metav1.IsControlledBy(p, st.current) {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(out, func(x, y *corev1.Pod) int {
		if rx, ry := podReady(x), podReady(y); rx != ry {
			if !rx {
				return -1
			}
			return 1
		}
		if restarts[x] != restarts[y] {
			return int(restarts[y] - restarts[x])
		}
		if c := cur(x) - cur(y); c != 0 {
			return c
		}
		return strings.Compare(x.Name, y.Name)
	})
	return out
}

func (a *Adapter) captureLog(ctx context.Context, ev *platforms.Evidence, lim platforms.CaptureLimits, name, pod, container string, previous bool) {
	// The server sends the last lim.Lines lines, at most transfer bytes of
	// them; the tail of what arrives is kept.
	lines, transfer := int64(lim.Lines), int64(max(16*lim.SourceBytes, 1<<20))
	rc, err := a.pods.GetLogs(pod, &corev1.PodLogOptions{Container: container, Previous: previous, TailLines: &lines, LimitBytes: &transfer}).Stream(ctx)
	if err != nil {
		ev.Missed("%s: log not readable (%s)", name, a.captureErr(ctx, "capture log", "get", "pods/log", err, "pod", pod, "container", container, "previous", previous))
		return
	}
	defer rc.Close()
	tb := &platforms.TailBuffer{Max: lim.SourceBytes}
	n, err := io.Copy(tb, rc)
	if err != nil {
		ev.Missed("%s: log read cut short (%s)", name, a.captureErr(ctx, "capture log: read", "get", "pods/log", err, "pod", pod, "container", container, "previous", previous))
	}
	if n >= transfer {
		ev.Missed("%s: its last %d lines are longer than %d bytes; the newest may be missing", name, lim.Lines, transfer)
	}
	ev.Add(lim, name, "log", tb.String(), tb.Dropped() || platforms.AtLineLimit(tb.String(), lim.Lines))
}

func (a *Adapter) captureEvents(ctx context.Context, ev *platforms.Evidence, lim platforms.CaptureLimits, name, kind, obj string) {
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": obj}.AsSelector().String()
	list, err := a.events.List(ctx, metav1.ListOptions{FieldSelector: sel, Limit: 500})
	if err != nil {
		ev.Missed("%s: events not readable (%s)", name, a.captureErr(ctx, "capture events", "list", "events", err, "object", obj))
		return
	}
	items := list.Items
	slices.SortStableFunc(items, func(x, y corev1.Event) int { return eventTime(x).Compare(eventTime(y)) })
	var b strings.Builder
	for _, e := range items {
		fmt.Fprintf(&b, "%s %s %s", eventTime(e).UTC().Format(time.RFC3339), e.Type, e.Reason)
		if e.Count > 1 {
			fmt.Fprintf(&b, " (x%d)", e.Count)
		}
		fmt.Fprintf(&b, ": %s\n", strings.TrimSpace(e.Message))
	}
	ev.Add(lim, name+" events", "events", b.String(), list.Continue != "")
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// captureErr logs a capture read (verb resource) that failed and names
// the failure for the evidence file: its reason when known, else a
// reference to the log line (never the raw error, which may name servers).
func (a *Adapter) captureErr(ctx context.Context, msg, verb, resource string, err error, attrs ...any) string {
	attrs = append(attrs, "op", "capture")
	logged := a.apiError(verb, resource, err)
	if s := shortAPIError(err); s != "" {
		a.log.WarnContext(ctx, msg, append(attrs, "err", logged)...)
		return s
	}
	return "error, " + platforms.SeeLog(ctx, a.log, msg, logged, attrs...)
}

// shortAPIError is an API error's reason for the evidence file ("forbidden",
// "not found"), without server addresses; "" for another error.
func shortAPIError(err error) string {
	switch {
	case apierrors.IsForbidden(err):
		return "forbidden: see " + RBACFile
	case apierrors.IsNotFound(err):
		return "not found"
	case apierrors.IsBadRequest(err):
		// e.g. "previous terminated container not found"
		if se, ok := err.(apierrors.APIStatus); ok && len(se.Status().Message) < 200 {
			return se.Status().Message
		}
		return "bad request"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return "the capture ran out of time"
	}
	return ""
}

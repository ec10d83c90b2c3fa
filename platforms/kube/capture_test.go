package kube_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rollbot/platforms"
	"rollbot/testkit/kubetest"
)

// crashLooping deploys v2-broken on a 3-replica Deployment and waits
// until every pod of it crash-loops (kwok: CrashLoopBackOff, restarts).
func crashLooping(t *testing.T) *env {
	t.Helper()
	// Recreate: every pod is replaced by a crash-looping one at once.
	e := newEnv(t, v1, 3, func(d *appsv1.Deployment) {
		d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	})
	kubetest.SetImage(t, e.admin, e.ns, e.name, v2Broken)
	kubetest.Poll(t, "3 crash-looping pods of v2-broken", func(ctx context.Context) (bool, error) {
		pods, err := e.admin.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + e.name})
		if err != nil {
			return false, err
		}
		n := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Spec.Containers[0].Image == v2Broken && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].RestartCount > 0 {
				n++
			}
		}
		return n == 3, nil
	})
	return e
}

// Capture reads the bad pods' current and previous container logs
// (kwok serves them through the API server's pods/log, as a kubelet
// would), their events and the Deployment's, within the limits, as the
// ServiceAccount bound to the shipped Role.
func TestCaptureCrashLoopingPods(t *testing.T) {
	e := crashLooping(t)
	ctx := context.Background()
	var cur, prev []string
	for i := range 300 {
		cur = append(cur, fmt.Sprintf("current line %d: panic: nil map", i))
		prev = append(prev, fmt.Sprintf("previous line %d: connecting to db", i))
	}
	if err := e.c.SetContainerLog(cur...); err != nil {
		t.Fatal(err)
	}
	if err := e.c.SetPreviousContainerLog(prev...); err != nil {
		t.Fatal(err)
	}
	// kwok plays the kubelet's pod status but records no events: write the
	// BackOff event as the kubelet does.
	pods, err := e.admin.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + e.name})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		now := metav1.NewTime(time.Now())
		_, err := e.admin.CoreV1().Events(e.ns).Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{GenerateName: p.Name + "."},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: e.ns, Name: p.Name, UID: p.UID, APIVersion: "v1"},
			Reason:         "BackOff", Message: "Back-off restarting failed container app in pod " + p.Name, Type: corev1.EventTypeWarning,
			Count: 7, FirstTimestamp: now, LastTimestamp: now, Source: corev1.EventSource{Component: "kubelet", Host: kubetest.NodeName},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}

	ev, err := e.a.Capture(ctx, platforms.CaptureLimits{Units: 2, Lines: 50})
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	byKind := map[string][]platforms.EvidenceSource{}
	for _, s := range ev.Sources {
		byKind[s.Kind] = append(byKind[s.Kind], s)
	}
	logs := byKind["log"]
	if len(logs) != 4 {
		t.Fatalf("%d logs captured; want current and previous of 2 pods:\n%s", len(logs), ev.Text(""))
	}
	for _, l := range logs {
		want := cur[250:]
		if strings.HasSuffix(l.Name, "(previous)") {
			want = prev[250:]
		}
		if l.Text != strings.Join(want, "\n") || !l.Truncated {
			t.Errorf("%s: %d lines (truncated %v); want the last 50:\n%.300s", l.Name, strings.Count(l.Text, "\n")+1, l.Truncated, l.Text)
		}
		if !strings.HasPrefix(l.Name, "pod "+e.ns+"/myapp-") || !strings.Contains(l.Name, " container app") {
			t.Errorf("source name %q", l.Name)
		}
	}
	events := byKind["events"]
	var podEvents, deployEvents int
	for _, s := range events {
		switch {
		case strings.HasPrefix(s.Name, "pod "):
			podEvents++
			if !strings.Contains(s.Text, "Warning BackOff (x7): Back-off restarting failed container app") {
				t.Errorf("%s lacks the BackOff event:\n%s", s.Name, s.Text)
			}
		case strings.HasPrefix(s.Name, "deployment "):
			deployEvents++
			// The deployment controller's own event.
			if !strings.Contains(s.Text, "Normal ScalingReplicaSet") {
				t.Errorf("deployment events lack ScalingReplicaSet:\n%s", s.Text)
			}
		}
	}
	if podEvents != 2 || deployEvents != 1 {
		t.Errorf("%d pod event lists and %d deployment ones; want 2 and 1:\n%s", podEvents, deployEvents, ev.Text(""))
	}
	if !slices.ContainsFunc(ev.Missing, func(m string) bool { return m == "1 more pods not captured (limit: 2 pods)" }) {
		t.Errorf("Missing = %q; want the third pod named as left out", ev.Missing)
	}
}

// A 50 MB container log is read within the limits: the API server sends
// at most the last lines asked for, and the capture keeps at most
// source_bytes of each source and total_bytes in all.
func TestCaptureCapsA50MBLog(t *testing.T) {
	e := crashLooping(t)
	line := strings.Repeat("x", 500)
	written := 0
	err := e.c.WriteContainerLog(false, func(w io.Writer) error {
		for i := 0; written < 50<<20; i++ {
			l := fmt.Sprintf("%08d %s", i, line)
			written += len(l)
			if err := kubetest.WriteLogLine(w, l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.SetPreviousContainerLog(); err != nil {
		t.Fatal(err)
	}
	lim := platforms.CaptureLimits{Units: 3, Lines: 500, SourceBytes: 32 << 10, TotalBytes: 80 << 10}
	ev, err := e.a.Capture(context.Background(), lim)
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	if ev.Size() > lim.TotalBytes {
		t.Errorf("captured %d bytes; total limit %d", ev.Size(), lim.TotalBytes)
	}
	logs := 0
	for _, s := range ev.Sources {
		if len(s.Text) > lim.SourceBytes {
			t.Errorf("%s: %d bytes; source limit %d", s.Name, len(s.Text), lim.SourceBytes)
		}
		if s.Kind == "log" && !strings.HasSuffix(s.Name, "(previous)") {
			logs++
			if !s.Truncated || !strings.HasSuffix(s.Text, line) {
				t.Errorf("%s: truncated %v, ends %q", s.Name, s.Truncated, s.Text[max(0, len(s.Text)-40):])
			}
		}
	}
	if logs == 0 {
		t.Fatalf("no current log kept:\n%.2000s", ev.Text(""))
	}
	if !slices.ContainsFunc(ev.Missing, func(m string) bool { return strings.Contains(m, "total size limit") }) {
		t.Errorf("the sources left out for the total limit are not named: %q", ev.Missing)
	}
}

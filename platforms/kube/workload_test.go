package kube_test

import (
	"context"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"
)

func podTemplate(name, image string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
}

// workloadEnv is a StatefulSet or DaemonSet "myapp" at v1 then v2, rolled
// out by the real statefulset / daemonset controllers, and an adapter that
// runs as a ServiceAccount bound to the rollbot-workloads Role.
func workloadEnv(t *testing.T, kind string) (*env, platforms.Platform) {
	t.Helper()
	c := cluster(t)
	e := &env{c: c, admin: c.AdminClient, name: "myapp"}
	e.ns = kubetest.CreateNamespace(t, e.admin, kind)
	ctx := context.Background()
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": e.name}}
	replicas := int32(2)
	var err error
	if kind == kube.KindStatefulSet {
		_, err = e.admin.AppsV1().StatefulSets(e.ns).Create(ctx, &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: e.name},
			Spec: appsv1.StatefulSetSpec{Replicas: &replicas, Selector: sel, ServiceName: e.name,
				PodManagementPolicy: appsv1.ParallelPodManagement, Template: podTemplate(e.name, v1)},
		}, metav1.CreateOptions{})
	} else {
		_, err = e.admin.AppsV1().DaemonSets(e.ns).Create(ctx, &appsv1.DaemonSet{
			ObjectMeta: metav1.ObjectMeta{Name: e.name},
			Spec:       appsv1.DaemonSetSpec{Selector: sel, Template: podTemplate(e.name, v1)},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	e.kubeconfig = c.KubeconfigForRole(t, e.ns, rbacFile, kube.WorkloadsRole)
	p, err := kube.NewPlatform(kube.Config{Kubeconfig: e.kubeconfig, Namespace: e.ns, Kind: kind, Name: e.name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitWorkload(t, p, v1)
	setWorkloadImage(t, e, kind, v2)
	waitWorkload(t, p, v2)
	return e, p
}

func setWorkloadImage(t *testing.T, e *env, kind, image string) {
	t.Helper()
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if kind == kube.KindStatefulSet {
			s, err := e.admin.AppsV1().StatefulSets(e.ns).Get(ctx, e.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			s.Spec.Template.Spec.Containers[0].Image = image
			_, err = e.admin.AppsV1().StatefulSets(e.ns).Update(ctx, s, metav1.UpdateOptions{})
			return err
		}
		d, err := e.admin.AppsV1().DaemonSets(e.ns).Get(ctx, e.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		_, err = e.admin.AppsV1().DaemonSets(e.ns).Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitWorkload waits until the adapter sees image rolled out, every pod Ready.
func waitWorkload(t *testing.T, p platforms.Platform, image string) *platforms.Snapshot {
	t.Helper()
	var snap *platforms.Snapshot
	kubetest.Poll(t, "the workload on "+image, func(ctx context.Context) (bool, error) {
		var err error
		snap, err = p.Snapshot(ctx)
		if err != nil {
			return false, err
		}
		return snap.Current.Artifact == image && !snap.RolloutInProgress && snap.Health.Desired > 0 && snap.Health.Ready == snap.Health.Desired, nil
	})
	return snap
}

// StatefulSets and DaemonSets: history from ControllerRevisions, the last
// known good, stop (partition / OnDelete), rollback through the revision
// with the stop ended in the same write, readiness, DO_NOT_DEPLOY on the
// ControllerRevision, and a second rollback to the same revision skipped.
func TestStatefulSetAndDaemonSetRollback(t *testing.T) {
	for _, kind := range []string{kube.KindStatefulSet, kube.KindDaemonSet} {
		t.Run(kind, func(t *testing.T) {
			e, p := workloadEnv(t, kind)
			ctx := context.Background()
			snap, err := p.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if p.Target() != kind+" "+e.ns+"/myapp" || len(snap.History) != 2 || snap.Current.ID != "2" || snap.History[1].Artifact != v1 {
				t.Fatalf("target %q snapshot %+v", p.Target(), snap)
			}
			good, ok := platforms.LastKnownGood(snap.History, snap.Current, nil)
			if !ok || good.ID != "1" || good.Artifact != v1 {
				t.Fatalf("last known good %+v %v", good, ok)
			}
			if snap.Health.Ready != snap.Health.Desired || !snap.Health.Known {
				t.Fatalf("health %+v", snap.Health)
			}

			res, err := p.Stop(ctx, false)
			if err != nil || res.Outcome != platforms.Done {
				t.Fatalf("stop: %+v %v", res, err)
			}
			if s, _ := p.Snapshot(ctx); !s.Paused {
				t.Fatal("not stopped after Stop")
			}
			if res, err := p.Stop(ctx, false); err != nil || res.Outcome != platforms.Skipped {
				t.Fatalf("second stop: %+v %v", res, err)
			}
			// Dry run: accepted, nothing changes.
			if res, err := p.Rollback(ctx, good, true, nil); err != nil || res.Outcome != platforms.Planned {
				t.Fatalf("dry run: %+v %v", res, err)
			}
			var progress []string
			res, err = p.Rollback(ctx, good, false, func(pr platforms.Progress) { progress = append(progress, pr.Message) })
			if err != nil || res.Outcome != platforms.Done {
				t.Fatalf("rollback: %+v %v", res, err)
			}
			after := waitWorkload(t, p, v1)
			if after.Paused {
				t.Fatal("still stopped after the rollback")
			}
			images, ready := kubetest.PodImages(t, e.admin, e.ns, e.name)
			if ready != after.Health.Desired || slices.ContainsFunc(images, func(s string) bool { return s != v1 }) {
				t.Fatalf("pods after the rollback: %v, %d ready", images, ready)
			}
			if kind == kube.KindStatefulSet {
				s, _ := e.admin.AppsV1().StatefulSets(e.ns).Get(ctx, e.name, metav1.GetOptions{})
				if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil && *ru.Partition != 0 {
					t.Fatalf("partition left at %d", *ru.Partition)
				}
			} else {
				d, _ := e.admin.AppsV1().DaemonSets(e.ns).Get(ctx, e.name, metav1.GetOptions{})
				if d.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
					t.Fatalf("update strategy left at %s", d.Spec.UpdateStrategy.Type)
				}
			}
			if res, err := p.MarkDoNotDeploy(ctx, platforms.Revision{Artifact: v2}, "U0BOB"); err != nil || res.Outcome != platforms.Done {
				t.Fatalf("mark: %+v %v", res, err)
			}
			s, _ := p.Snapshot(ctx)
			if !slices.ContainsFunc(s.History, func(r platforms.Revision) bool { return r.Artifact == v2 && r.DoNotDeploy }) {
				t.Fatalf("v2 not marked: %+v", s.History)
			}
			if res, err := p.Rollback(ctx, s.Current, false, nil); err != nil || res.Outcome != platforms.Skipped {
				t.Fatalf("rollback to the current revision: %+v %v", res, err)
			}
		})
	}
}

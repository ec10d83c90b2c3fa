package kube_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rollbot/platforms"
	"rollbot/testkit/kubetest"
)

// Deploy (platforms.Deployer, used by drills) on the real control plane,
// as the ServiceAccount bound to the shipped Role: a dry run changes
// nothing, a deploy is one write that makes a new revision the rollback
// can undo, the same image again is skipped, a deploy racing another
// change is refused, one from a version that no longer runs is refused
// (nothing written), and a paused Deployment is refused.
func TestDeploy(t *testing.T) {
	ctx := context.Background()
	const bad = "registry.local/myapp:drill-broken"
	t.Run("dry run, deploy, again", func(t *testing.T) {
		e := newEnv(t, v1, 2)
		kubetest.WaitRolledOut(t, e.admin, e.ns, e.name)
		before := e.get(t)
		res, err := e.a.Deploy(ctx, bad, "", true)
		if err != nil || res.Outcome != platforms.Planned || len(res.Plan) != 1 {
			t.Fatalf("dry run = %+v, %v", res, err)
		}
		if d := e.get(t); d.Generation != before.Generation {
			t.Fatalf("a dry run changed the generation %d -> %d", before.Generation, d.Generation)
		}
		res, err = e.a.Deploy(ctx, bad, "", false)
		if err != nil || res.Outcome != platforms.Done {
			t.Fatalf("Deploy = %+v, %v", res, err)
		}
		d := e.get(t)
		if d.Generation != before.Generation+1 || d.Spec.Template.Spec.Containers[0].Image != bad {
			t.Fatalf("after Deploy: generation %d (was %d), image %s", d.Generation, before.Generation, d.Spec.Template.Spec.Containers[0].Image)
		}
		// kwok crash-loops "-broken" images: the rollout never completes,
		// which is why Deploy does not wait for it. The new revision is there.
		kubetest.Poll(t, "revision 2 on "+bad, func(ctx context.Context) (bool, error) {
			snap, err := e.a.Snapshot(ctx)
			return err == nil && snap.Current.Artifact == bad && snap.Current.ID == "2", err
		})
		if res, err := e.a.Deploy(ctx, bad, "", false); err != nil || res.Outcome != platforms.Skipped {
			t.Fatalf("Deploy of the running image = %+v, %v; want skipped", res, err)
		}
		// The rollback undoes it like any release.
		if _, err := e.a.Rollback(ctx, platforms.Revision{ID: "1"}, false, nil); err != nil {
			t.Fatal(err)
		}
		e.wantPods(t, v1, 2)
	})
	t.Run("a change between read and write", func(t *testing.T) {
		e := newEnv(t, v1, 2)
		a := e.adapterWithHook(t, func() { kubetest.SetImage(t, e.admin, e.ns, e.name, v2) })
		_, err := a.Deploy(ctx, bad, "", false)
		if !errors.Is(err, platforms.ErrConflict) {
			t.Fatalf("Deploy racing a change: %v; want ErrConflict", err)
		}
		if img := e.get(t).Spec.Template.Spec.Containers[0].Image; img != v2 {
			t.Fatalf("image %s; the other change must win", img)
		}
	})
	t.Run("only from the version expected", func(t *testing.T) {
		// A drill puts its original back only over its own bad version:
		// a Deployment someone set to v2 meanwhile is left on v2.
		e := newEnv(t, v2, 2)
		before := e.get(t)
		_, err := e.a.Deploy(ctx, v1, bad, false)
		if !errors.Is(err, platforms.ErrConflict) {
			t.Fatalf("Deploy from %s over %s: %v; want ErrConflict", bad, v2, err)
		}
		if msg := e.checkErr(t, err); !strings.Contains(msg, "runs "+v2+", not "+bad) {
			t.Errorf("user message %q does not say what runs", msg)
		}
		if d := e.get(t); d.Generation != before.Generation || d.Spec.Template.Spec.Containers[0].Image != v2 {
			t.Fatalf("after a refused Deploy: generation %d (was %d), image %s", d.Generation, before.Generation, d.Spec.Template.Spec.Containers[0].Image)
		}
		res, err := e.a.Deploy(ctx, v1, v2, false)
		if err != nil || res.Outcome != platforms.Done {
			t.Fatalf("Deploy from the running version = %+v, %v", res, err)
		}
		if img := e.get(t).Spec.Template.Spec.Containers[0].Image; img != v1 {
			t.Fatalf("image %s after Deploy, want %s", img, v1)
		}
	})
	t.Run("paused", func(t *testing.T) {
		e := newEnv(t, v1, 2)
		if _, err := e.admin.AppsV1().Deployments(e.ns).Patch(ctx, e.name, types.MergePatchType, []byte(`{"spec":{"paused":true}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := e.a.Deploy(ctx, bad, "", false)
		if msg := e.checkErr(t, err); msg == "" {
			t.Fatal("no user message")
		}
	})
}

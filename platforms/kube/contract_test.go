package kube_test

import (
	"context"
	"testing"

	"rollbot/testkit/kubetest"
	"rollbot/testkit/platformtest"
)

// TestContract runs the shared adapter contract on the real control plane
// with the adapter bound to the shipped Role; the bad release crash-loops.
func TestContract(t *testing.T) {
	e := newEnv(t, v1, 3)
	kubetest.WaitRolledOut(t, e.admin, e.ns, e.name)
	kubetest.SetImage(t, e.admin, e.ns, e.name, v2Broken)
	kubetest.Poll(t, "the controller to create the bad release's ReplicaSet", func(ctx context.Context) (bool, error) {
		s, err := e.a.Snapshot(ctx)
		return err == nil && s.Current.ID != "", err
	})
	platformtest.Contract(t, platformtest.Env{Platform: e.a, Good: v1, Bad: v2Broken})
}

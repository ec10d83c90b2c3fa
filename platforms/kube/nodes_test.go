package kube_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/platformtest"
	"rollbot/testkit/wait"
)

// TestNodeConditions: on the real control plane, with a ServiceAccount
// bound to the shipped Role and then to the ClusterRole rollbot-nodes,
// NodeConditions reports the kwok node the pods run on under memory
// pressure (a condition set through the status subresource) as the
// workload's, and a NotReady node that runs none of them as the cluster's.
// Without the ClusterRole the message names it.
func TestNodeConditions(t *testing.T) {
	e := newEnv(t, v1, 2)
	kubetest.WaitRolledOut(t, e.admin, e.ns, e.name)
	ctx := context.Background()
	snap := e.snapshot(t)
	if !slices.Equal(snap.Nodes, []string{kubetest.NodeName}) {
		t.Fatalf("Snapshot.Nodes = %v, want [%s]", snap.Nodes, kubetest.NodeName)
	}

	_, err := e.a.NodeConditions(ctx, snap.Nodes)
	if msg := platformtest.UserMessage(t, err); !strings.Contains(msg, "bind the ClusterRole rollbot-nodes of deploy/kubernetes/rbac.yaml") {
		t.Fatalf("without the ClusterRole: %q", msg)
	}

	// Bind the ClusterRole as shipped to the adapter's ServiceAccount.
	e.c.BindClusterRole(t, e.ns, e.kubeconfig, rbacFile, kube.NodesClusterRole, "list", "nodes")

	rep, err := e.a.NodeConditions(ctx, snap.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Workload != 1 || rep.Nodes < 1 || slices.ContainsFunc(rep.Problems, func(p platforms.NodeProblem) bool { return p.Node == kubetest.NodeName }) {
		t.Fatalf("healthy cluster: %+v", rep)
	}

	// A node that runs none of the pods (no kubelet; tainted so that
	// nothing is scheduled on it) is NotReady.
	sick := "sick-" + e.ns
	kubetest.CreateSickNode(t, e.admin, sick, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady", Message: "container runtime is down"})

	// The pods' node under memory pressure. kwok's heartbeat rewrites the
	// node's conditions every 20-45 s, so the condition is set again
	// until it is read.
	pressure := corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue, Reason: "KubeletHasInsufficientMemory", Message: "kubelet has insufficient memory available"}
	t.Cleanup(func() {
		pressure.Status, pressure.Reason, pressure.Message = corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"
		kubetest.SetNodeCondition(ctx, e.admin, kubetest.NodeName, pressure)
	})
	wait.For(t, time.Minute, "the node conditions reported", func() (bool, error) {
		if err := kubetest.SetNodeCondition(ctx, e.admin, kubetest.NodeName, pressure); err != nil {
			return false, err // a conflict with kwok's heartbeat: again
		}
		rep, err = e.a.NodeConditions(ctx, snap.Nodes)
		if err != nil {
			return false, wait.Stop(err)
		}
		ok := len(rep.Problems) >= 2 &&
			rep.Problems[0] == platforms.NodeProblem{Node: kubetest.NodeName, Condition: "MemoryPressure", Since: rep.Problems[0].Since, Message: pressure.Message, Workload: true} &&
			slices.Contains(rep.Problems, platforms.NodeProblem{Node: sick, Condition: "NotReady", Since: problemSince(rep, sick), Message: "container runtime is down"})
		return ok, fmt.Errorf("report %+v", rep)
	})
	if rep.Workload != 1 || rep.Nodes < 2 || time.Since(rep.Problems[0].Since) > time.Minute {
		t.Fatalf("report %+v", rep)
	}
}

func problemSince(rep platforms.NodeReport, node string) time.Time {
	for _, p := range rep.Problems {
		if p.Node == node {
			return p.Since
		}
	}
	return time.Time{}
}

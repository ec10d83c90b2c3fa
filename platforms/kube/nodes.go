package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rollbot/platforms"
)

var _ platforms.NodeChecker = (*Adapter)(nil)

// NodesClusterRole is the ClusterRole of RBACFile that lets rollbot read
// the nodes (cluster-scoped, so a namespaced Role cannot grant it).
const NodesClusterRole = "rollbot-nodes"

// NodePermissions is what NodeConditions uses, exactly the rules of
// NodesClusterRole in RBACFile (cluster-scoped).
var NodePermissions = []Permission{{"", "nodes", "list"}}

// pressures are the node conditions that are bad when True.
var pressures = []corev1.NodeConditionType{
	corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeNetworkUnavailable,
}

// NodeConditions implements platforms.NodeChecker: one list of the
// cluster's nodes; a node whose Ready condition is not True is NotReady
// (Unknown: the kubelet stopped reporting), and any pressure condition
// that is True is reported. workload names the nodes the Deployment's
// pods run on (Snapshot.Nodes).
func (a *Adapter) NodeConditions(ctx context.Context, workload []string) (platforms.NodeReport, error) {
	var rep platforms.NodeReport
	list, err := a.nodes.List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return rep, platforms.Userf(fmt.Errorf("list nodes for %s: %w", a.Target(), err),
				"rollbot may not list the cluster's nodes: bind the ClusterRole %s of %s", NodesClusterRole, RBACFile)
		}
		return rep, a.apiError("list", "nodes", err)
	}
	rep.Nodes = len(list.Items)
	for i := range list.Items {
		n := &list.Items[i]
		mine := slices.Contains(workload, n.Name)
		if mine {
			rep.Workload++
		}
		for _, c := range n.Status.Conditions {
			name := ""
			switch {
			case c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue:
				name = "NotReady"
			case slices.Contains(pressures, c.Type) && c.Status == corev1.ConditionTrue:
				name = string(c.Type)
			}
			if name == "" {
				continue
			}
			rep.Problems = append(rep.Problems, platforms.NodeProblem{
				Node: n.Name, Condition: name, Since: c.LastTransitionTime.Time,
				Message: strings.TrimSpace(c.Message), Workload: mine,
			})
		}
	}
	slices.SortStableFunc(rep.Problems, func(x, y platforms.NodeProblem) int {
		if x.Workload != y.Workload {
			if x.Workload {
				return -1
			}
			return 1
		}
		return strings.Compare(x.Node+x.Condition, y.Node+y.Condition)
	})
	return rep, nil
}

// podNodes are the nodes the pods run on, sorted, each once.
func podNodes(pods []corev1.Pod) []string {
	var out []string
	for i := range pods {
		if n := pods[i].Spec.NodeName; n != "" && pods[i].DeletionTimestamp == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

package kube

import (
	"context"
	"errors"
	"fmt"
	"net"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"rollbot/platforms"
)

// ErrProgressDeadline is wrapped when a rollout rollbot started or waited
// for stopped progressing (the Deployment's ProgressDeadlineExceeded
// condition). The runbook's fallbacks (SetArtifact, ScaleToZero) apply.
var ErrProgressDeadline = errors.New("progress deadline exceeded")

// RBACFile is where the Role that rollbot needs is shipped; user messages
// about missing permissions point there.
const RBACFile = "deploy/kubernetes/rbac.yaml"

// apiError wraps an API error from verb on resource ("patch", "deployments")
// with a message a Slack user can act on. It never includes credentials:
// client-go errors carry the request URL and the server's status, not the
// token.
func (a *Adapter) apiError(verb, resource string, err error) error {
	cause := fmt.Errorf("%s %s for %s: %w", verb, resource, a.Target(), err)
	switch {
	case apierrors.IsForbidden(err) && a.as != "":
		return refusedAs(a.as, cause, err)
	case apierrors.IsForbidden(err):
		return platforms.Userf(cause,
			"rollbot's ServiceAccount may not %s %s in %s: add `%s` on %s to its Role (%s)",
			verb, resource, a.cfg.Namespace, verb, resource, RBACFile)
	case apierrors.IsUnauthorized(err):
		return platforms.Userf(cause,
			"the Kubernetes API%s rejected rollbot's credentials (expired or revoked token?): check the kubeconfig or ServiceAccount configured for %s",
			a.clusterSuffix(), a.name())
	case apierrors.IsNotFound(err) && resource == "deployments":
		return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrNotFound, cause),
			"deployment %s not found%s: check `namespace:` and `deployment:` in rollbot's config", a.name(), a.inCluster())
	case apierrors.IsConflict(err):
		return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrConflict, cause),
			"%s changed while rollbot was writing it (someone deployed or edited it at the same time), so rollbot changed nothing: check its state and try again",
			a.Target())
	case isNetError(err):
		return platforms.Userf(cause, "cannot reach the Kubernetes API%s for %s", a.clusterSuffix(), a.name())
	}
	return cause
}

func (a *Adapter) clusterSuffix() string {
	if a.cfg.Cluster == "" {
		return ""
	}
	return " of cluster " + a.cfg.Cluster
}

func (a *Adapter) inCluster() string {
	if a.cfg.Cluster == "" {
		return ""
	}
	return " in cluster " + a.cfg.Cluster
}

func isNetError(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne)
}

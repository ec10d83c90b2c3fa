package kube

import (
	"context"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rollbot/platforms"
)

// Permission is one verb on one resource of the target namespace.
type Permission struct {
	Group    string // "" for the core group
	Resource string // "deployments", "pods/log"
	Verb     string
}

func (p Permission) String() string { return "`" + p.Verb + "` on " + p.Resource }

// RequiredPermissions is every permission the adapter uses, exactly the
// rules of the Role in deploy/kubernetes/rbac.yaml (a test keeps them equal).
var RequiredPermissions = []Permission{
	{"apps", "deployments", "get"},
	{"apps", "deployments", "watch"},
	{"apps", "deployments", "patch"},
	{"apps", "replicasets", "list"},
	{"apps", "replicasets", "patch"},
	{"", "pods", "list"},
	{"", "pods/log", "get"},
	{"", "events", "list"},
}

// CheckAccess asks the API server (SelfSubjectAccessReview, which every
// authenticated identity may do) whether rollbot's credentials have every
// RequiredPermissions entry in the target namespace. A user error lists
// what is missing. The bot can run it at start-up, before an incident.
// With Config.Impersonate the writes are the clickers' (their own RBAC
// decides, per click), so only the reads are rollbot's to have.
func (a *Adapter) CheckAccess(ctx context.Context) error {
	var missing []string
	for _, p := range RequiredPermissions {
		if p.IsWrite() && len(a.cfg.Impersonate) > 0 {
			continue
		}
		res, sub, _ := strings.Cut(p.Resource, "/")
		// The adapter touches only its own Deployment, so ask for that one:
		// a Role narrowed to it by resourceNames (rollbot rbac) allows it.
		name := ""
		if p.Group == "apps" && p.Resource == "deployments" {
			name = a.cfg.Deployment
		}
		r, err := a.access.Create(ctx, &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: a.cfg.Namespace, Group: p.Group, Resource: res, Subresource: sub, Verb: p.Verb, Name: name},
		}}, metav1.CreateOptions{})
		if err != nil {
			return a.apiError("create", "selfsubjectaccessreviews", err)
		}
		if !r.Status.Allowed {
			missing = append(missing, p.String())
		}
	}
	if len(missing) > 0 {
		return platforms.Userf(fmt.Errorf("check access for %s: missing %s", a.Target(), strings.Join(missing, ", ")),
			"rollbot's ServiceAccount lacks permissions in %s: add %s to its Role (%s)",
			a.cfg.Namespace, strings.Join(missing, ", "), RBACFile)
	}
	return nil
}

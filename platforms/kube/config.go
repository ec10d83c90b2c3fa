package kube

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"rollbot/platforms"
)

// DefaultMigrationContainer is the init container whose log Snapshot reads
// for the runbook's migration check when Config.MigrationContainer is empty.
const DefaultMigrationContainer = "init-migrate"

// Config binds one rollbot service to one Deployment on one cluster. It is
// embedded in the bot's YAML under services.<name>.kubernetes:. Several
// clusters in one bot config are simply several services, each with its own
// kubeconfig and/or context.
type Config struct {
	// Kubeconfig is the path of a kubeconfig file. Empty means the usual
	// loading rules ($KUBECONFIG, then ~/.kube/config). The file holds
	// credentials; rollbot never logs its contents.
	Kubeconfig string `yaml:"kubeconfig"`
	// Context selects a context of the kubeconfig; empty means its current context.
	Context string `yaml:"context"`
	// InCluster uses the pod's ServiceAccount (rollbot running in the cluster).
	InCluster bool `yaml:"in_cluster"`
	// Cluster is a display name for messages ("east"); defaults to Context.
	Cluster string `yaml:"cluster"`

	Namespace  string `yaml:"namespace"`
	Deployment string `yaml:"deployment"`
	// Kind is the workload's kind: deployment (the default), statefulset
	// or daemonset. A StatefulSet or DaemonSet is named by Name (Name also
	// works for a Deployment, instead of Deployment).
	Kind string `yaml:"kind"`
	Name string `yaml:"name"`
	// Container is the container whose image is the service's artifact.
	// Empty means the first container of the pod template.
	Container string `yaml:"container"`
	// MigrationContainer is the init container that runs database
	// migrations; its log tail goes into Snapshot.MigrationLog.
	MigrationContainer string `yaml:"migration_container"`
	// MigrationLogLines is how many log lines to keep (default 20).
	MigrationLogLines int `yaml:"migration_log_lines"`
	// ArgoCDNamespace is where Argo CD's Applications live (default
	// "argocd"); an Application elsewhere is named "<namespace>_<name>" by
	// Argo CD's labels and found there.
	ArgoCDNamespace string `yaml:"argocd_namespace"`
	// Impersonate maps Slack user ids (U…, W…) and Slack user-group ids
	// (S…) to Kubernetes identities. When set, every write for a click
	// runs as the clicker's identity (client-go impersonation), so the
	// cluster's RBAC decides: the entry for the clicker's user id, else
	// the one of the first of their user groups in sorted id order; a
	// clicker without either is refused. rollbot's own credentials then
	// need only `impersonate` on exactly these users and groups.
	Impersonate map[string]Identity `yaml:"impersonate"`
	// RolloutTimeout caps how long a write waits for the rollout to finish,
	// in addition to the Deployment's own progressDeadlineSeconds, which is
	// what normally ends a stuck rollout. Zero means progress deadline + 1m.
	RolloutTimeout time.Duration `yaml:"rollout_timeout"`
	// Admission: after a rollback the namespace refuses the bad image
	// (a ValidatingAdmissionPolicy and its binding; needs the ClusterRole
	// rollbot-admission of deploy/kubernetes/rbac.yaml), until an approver
	// runs /rollback allow <service> <version>.
	Admission bool `yaml:"admission"`
}

// Validate reports every invalid field, each error naming its field.
func (c Config) Validate() error {
	var errs []error
	if c.Namespace == "" {
		errs = append(errs, errors.New("namespace: required"))
	} else if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("namespace: %q is not a valid namespace name: %s", c.Namespace, strings.Join(msgs, "; ")))
	}
	switch c.kind() {
	case KindDeployment, KindStatefulSet, KindDaemonSet:
	default:
		errs = append(errs, fmt.Errorf("kind: %q is not one of deployment, statefulset, daemonset", c.Kind))
	}
	switch {
	case c.Deployment != "" && c.Name != "":
		errs = append(errs, errors.New("name: give either name or deployment, not both"))
	case c.kind() != KindDeployment && c.Deployment != "":
		errs = append(errs, fmt.Errorf("deployment: this service is a %s: name it with `name:`", c.kind()))
	case c.workloadName() == "" && c.kind() == KindDeployment:
		errs = append(errs, errors.New("deployment: required"))
	case c.workloadName() == "":
		errs = append(errs, errors.New("name: required"))
	default:
		if msgs := validation.IsDNS1123Subdomain(c.workloadName()); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("deployment: %q is not a valid %s name: %s", c.workloadName(), c.kind(), strings.Join(msgs, "; ")))
		}
	}
	if c.InCluster && c.Kubeconfig != "" {
		errs = append(errs, errors.New("in_cluster: cannot be combined with kubeconfig"))
	}
	if c.InCluster && c.Context != "" {
		errs = append(errs, errors.New("in_cluster: cannot be combined with context"))
	}
	if c.Container != "" {
		if msgs := validation.IsDNS1123Label(c.Container); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("container: %q is not a valid container name", c.Container))
		}
	}
	if c.ArgoCDNamespace != "" {
		if msgs := validation.IsDNS1123Label(c.ArgoCDNamespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("argocd_namespace: %q is not a valid namespace name", c.ArgoCDNamespace))
		}
	}
	errs = append(errs, c.validateImpersonate()...)
	if c.MigrationLogLines < 0 {
		errs = append(errs, errors.New("migration_log_lines: must not be negative"))
	}
	if c.RolloutTimeout < 0 {
		errs = append(errs, errors.New("rollout_timeout: must not be negative"))
	}
	return errors.Join(errs...)
}

// Without rollout_timeout, a Deployment's rollout is waited for until its
// progress deadline (progressDeadlineSeconds, 600s unless it sets its own)
// plus a minute; a StatefulSet's or DaemonSet's for 10 minutes.
const (
	defaultProgressDeadline       = 600 * time.Second
	defaultRevisionRolloutTimeout = 10 * time.Minute
)

// Waits are the adapter's waits inside the runbook's steps (platforms.Wait),
// at the config path at: every write (rollback, set image, scale to zero)
// waits for its rollout, up to rollout_timeout.
func (c Config) Waits(at string) []platforms.Wait {
	field := at + ".rollout_timeout"
	w := platforms.Wait{Step: platforms.WaitRollback, D: c.RolloutTimeout, What: fmt.Sprintf("%s (%s)", field, c.RolloutTimeout), Lower: "lower " + field}
	switch {
	case c.RolloutTimeout > 0:
	case c.kind() == KindDeployment:
		w.D = defaultProgressDeadline + time.Minute
		w.What = fmt.Sprintf("the rollout wait (%s unset: the Deployment's progress deadline, %s by default, + 1m = %s)", field, defaultProgressDeadline, w.D)
		w.Lower = "set " + field + " lower"
	default:
		w.D = defaultRevisionRolloutTimeout
		w.What = fmt.Sprintf("the rollout wait (%s unset: %s)", field, w.D)
		w.Lower = "set " + field + " lower"
	}
	return []platforms.Wait{w}
}

func (c Config) kind() string {
	if c.Kind == "" {
		return KindDeployment
	}
	return strings.ToLower(c.Kind)
}

// workloadName is the workload's name: Name, or Deployment.
func (c Config) workloadName() string { return firstNonEmpty(c.Name, c.Deployment) }

func (c Config) withDefaults() Config {
	if c.MigrationContainer == "" {
		c.MigrationContainer = DefaultMigrationContainer
	}
	if c.MigrationLogLines == 0 {
		c.MigrationLogLines = 20
	}
	if c.Cluster == "" {
		c.Cluster = c.Context
	}
	if c.ArgoCDNamespace == "" {
		c.ArgoCDNamespace = DefaultArgoCDNamespace
	}
	if c.Deployment == "" && c.kind() == KindDeployment {
		c.Deployment = c.Name
	}
	return c
}

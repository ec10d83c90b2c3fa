// Package kube is rollbot's Kubernetes adapter: one Adapter acts on one
// Deployment (namespace + name, optionally one container) on one cluster.
//
// Reads come from the Deployment, the ReplicaSets it controls (the rollout
// history) and their pods. Every write is a single JSON patch carrying the
// resourceVersion read before deciding, so a concurrent deploy makes the
// write fail with platforms.ErrConflict instead of being overwritten (a
// conflict caused only by status updates, which the controller writes all
// through a rollout, is re-checked and retried: see patchDeployment). A
// rollback restores the target revision's pod template and ends a pause in
// that one write, because the API refuses to roll back a paused Deployment.
//
// A Deployment that a Helm release owns (its meta.helm.sh annotations) is
// rolled back through Helm instead: its history is the release's
// revisions and the rollback is Helm's Rollback action (helm.go).
//
// The verbs the adapter uses are exactly those granted by the Role in
// deploy/kubernetes/rbac.yaml; the package's tests run with a
// ServiceAccount bound to that Role.
package kube

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	appsclient "k8s.io/client-go/kubernetes/typed/apps/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	coreclient "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"rollbot/platforms"
)

// Annotations rollbot reads and writes.
const (
	// AnnotationDoNotDeploy on a ReplicaSet marks its revision as never to
	// be deployed again; value "true".
	AnnotationDoNotDeploy = "rollbot.dev/do-not-deploy"
	// AnnotationDoNotDeployBy records who marked it and when: "<who> at <RFC 3339 time>".
	AnnotationDoNotDeployBy = "rollbot.dev/do-not-deploy-by"

	revisionAnnotation        = "deployment.kubernetes.io/revision"
	revisionHistoryAnnotation = "deployment.kubernetes.io/revision-history"
	changeCauseAnnotation     = "kubernetes.io/change-cause"
	timedOutReason            = "ProgressDeadlineExceeded"
)

// RestartWindow is the window Snapshot counts container restarts in (the
// runbook's "> 3 restarts in 5 min").
const RestartWindow = 5 * time.Minute

// Adapter is the Kubernetes platform for one Deployment. It implements
// platforms.Platform and platforms.Fallbacks.
type Adapter struct {
	cfg         Config
	log         *slog.Logger
	deployments appsclient.DeploymentInterface
	replicaSets appsclient.ReplicaSetInterface
	pods        coreclient.PodInterface
	events      coreclient.EventInterface
	nodes       coreclient.NodeInterface
	logs        logReader
	access      authorizationclient.SelfSubjectAccessReviewInterface
	// dyn reads and pauses the workload's GitOps owner (Argo CD, Flux);
	// nil on an Adapter built by NewWithClient without WithDynamic.
	dyn dynamic.Interface
	now func() time.Time
	// rc is the client configuration New built the clients from; the
	// impersonating clients are built from it.
	rc *rest.Config
	// as names the identity an impersonating copy writes with, for
	// messages: "bob@example.com (for <@U0BOB>)".
	as string
	// recent is the last Snapshot's pod list, for the Capture after it.
	recent *recentPods
	// newHelm builds the Helm client of a release namespace, on rc; nil
	// on an Adapter built by NewWithClient. helms keeps those built, so a
	// service whose workload no Helm release owns never builds one.
	newHelm func(ns string) (helmReleases, error)
	helmMu  sync.Mutex
	helms   map[string]helmReleases
}

var (
	_ platforms.Platform      = (*Adapter)(nil)
	_ platforms.Fallbacks     = (*Adapter)(nil)
	_ platforms.AccessChecker = (*Adapter)(nil)
	_ platforms.OwnerPauser   = (*Adapter)(nil)
)

// New builds an Adapter from cfg: in-cluster config, or the kubeconfig
// file and context it names. It does not contact the cluster.
func New(cfg Config, log *slog.Logger) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Deployment, err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Deployment, err)
	}
	a := NewWithClient(cs, cfg, log).WithDynamic(dyn)
	a.withRESTConfig(rc)
	return a, nil
}

// forActor is the adapter a write runs with: itself, or, when
// Config.Impersonate is set, a copy whose clients impersonate the
// Kubernetes identity of the Slack user in ctx (platforms.WithActor), as
// identityFor chooses it.
func (a *Adapter) forActor(ctx context.Context) (*Adapter, error) {
	act, err := a.cfg.identityFor(ctx, a.Target())
	if err != nil {
		return nil, err
	}
	if act == nil {
		return a, nil
	}
	rc, cs, err := act.client(a.rc, a.Target())
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("impersonating client for %s: %w", a.Target(), err)
	}
	b := NewWithClient(cs, a.cfg, a.log).WithDynamic(dyn)
	b.log, b.now, b.logs = a.log.With("as", act.User), a.now, a.logs
	b.withRESTConfig(rc)
	b.as = act.as
	return b, nil
}

// withRESTConfig keeps the client configuration the adapter's clients were
// built from, for the impersonating copies and the Helm clients (built on
// first use, with the same credentials).
func (a *Adapter) withRESTConfig(rc *rest.Config) {
	a.rc = rc
	a.newHelm = func(ns string) (helmReleases, error) {
		return newHelmSDK(rc, ns, a.log.With("helm_namespace", ns))
	}
}

// WithDynamic gives the adapter a client for the GitOps owners' custom
// resources (Argo CD Applications, Flux Kustomizations and HelmReleases),
// on the same cluster and credentials as its clientset.
func (a *Adapter) WithDynamic(dyn dynamic.Interface) *Adapter {
	a.dyn = dyn
	return a
}

// Clientset is a client for the cluster cfg names (in_cluster, or its
// kubeconfig and context), built the way New builds the adapter's, for
// other parts of rollbot that act on the same cluster (the database down
// Job). It does not contact the cluster.
func Clientset(cfg Config) (kubernetes.Interface, error) {
	rc, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Deployment, err)
	}
	return cs, nil
}

func restConfig(cfg Config) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if cfg.InCluster {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in_cluster: %w", err)
		}
	} else {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if cfg.Kubeconfig != "" {
			rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.Kubeconfig}
		}
		overrides := &clientcmd.ConfigOverrides{CurrentContext: cfg.Context}
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
		if err != nil {
			// clientcmd errors name the file and context, never credentials.
			return nil, fmt.Errorf("kubeconfig %q context %q: %w", cfg.Kubeconfig, cfg.Context, err)
		}
	}
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "rollbot"
	rc.QPS, rc.Burst = 20, 40
	return rc, nil
}

// NewWithClient builds an Adapter on an existing clientset (tests, or a
// caller that shares one client between services on the same cluster).
// cfg is not validated here; call cfg.Validate first.
func NewWithClient(cs kubernetes.Interface, cfg Config, log *slog.Logger) *Adapter {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Adapter{
		cfg:         cfg,
		deployments: cs.AppsV1().Deployments(cfg.Namespace),
		replicaSets: cs.AppsV1().ReplicaSets(cfg.Namespace),
		pods:        cs.CoreV1().Pods(cfg.Namespace),
		events:      cs.CoreV1().Events(cfg.Namespace),
		nodes:       cs.CoreV1().Nodes(),
		access:      cs.AuthorizationV1().SelfSubjectAccessReviews(),
		now:         time.Now,
		recent:      &recentPods{},
	}
	a.logs = podLogs{pods: a.pods}
	// The caller adds "platform" (see bot); the target tells services apart.
	a.log = log.With("target", a.Target())
	return a
}

// Kind implements platforms.Platform.
func (a *Adapter) Kind() string { return "kubernetes" }

// Target implements platforms.Platform: "deployment prod/myapp (cluster east)".
func (a *Adapter) Target() string {
	t := "deployment " + a.name()
	if a.cfg.Cluster != "" {
		t += " (cluster " + a.cfg.Cluster + ")"
	}
	return t
}

func (a *Adapter) name() string { return a.cfg.Namespace + "/" + a.cfg.Deployment }

// state is one consistent read of the Deployment and its history.
type state struct {
	d *appsv1.Deployment
	// rss are the ReplicaSets the Deployment controls, newest revision first.
	rss []*appsv1.ReplicaSet
	// current is the ReplicaSet whose template matches the Deployment's; nil
	// until the controller has created it.
	current *appsv1.ReplicaSet
	// container is the name of the artifact container.
	container string
}

func (a *Adapter) read(ctx context.Context) (*state, error) {
	d, err := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return nil, a.apiError("get", "deployments", err)
	}
	st := &state{d: d}
	if st.container, err = a.containerName(d); err != nil {
		return nil, err
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("selector of %s: %w", a.Target(), err)
	}
	list, err := a.replicaSets.List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, a.apiError("list", "replicasets", err)
	}
	for i := range list.Items {
		rs := &list.Items[i]
		if !metav1.IsControlledBy(rs, d) {
			continue
		}
		st.rss = append(st.rss, rs)
	}
	slices.SortStableFunc(st.rss, func(x, y *appsv1.ReplicaSet) int {
		return -cmpInt(revisionNumber(x), revisionNumber(y))
	})
	for _, rs := range st.rss {
		if equalIgnoreHash(&rs.Spec.Template, &d.Spec.Template) {
			st.current = rs
			break
		}
	}
	return st, nil
}

func (a *Adapter) containerName(d *appsv1.Deployment) (string, error) {
	cs := d.Spec.Template.Spec.Containers
	if a.cfg.Container == "" {
		if len(cs) == 0 {
			return "", platforms.Userf(nil, "%s has no containers", a.Target())
		}
		return cs[0].Name, nil
	}
	for _, c := range cs {
		if c.Name == a.cfg.Container {
			return c.Name, nil
		}
	}
	names := make([]string, 0, len(cs))
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return "", platforms.Userf(fmt.Errorf("container %q in %s: %w", a.cfg.Container, a.Target(), platforms.ErrNotFound),
		"%s has no container %q (it has: %v); fix `container:` in rollbot's config", a.Target(), a.cfg.Container, names)
}

// revisionNumber is the ReplicaSet's revision, 0 when it has none.
func revisionNumber(rs *appsv1.ReplicaSet) int64 {
	n, err := strconv.ParseInt(rs.Annotations[revisionAnnotation], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func cmpInt(x, y int64) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// equalIgnoreHash compares pod templates without the pod-template-hash
// label the controller adds to its ReplicaSets.
func equalIgnoreHash(t1, t2 *corev1.PodTemplateSpec) bool {
	c1, c2 := t1.DeepCopy(), t2.DeepCopy()
	delete(c1.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	delete(c2.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	return apiequality.Semantic.DeepEqual(c1, c2)
}

func imageOf(spec *corev1.PodSpec, container string) string {
	for _, c := range spec.Containers {
		if c.Name == container {
			return c.Image
		}
	}
	if len(spec.Containers) > 0 {
		return spec.Containers[0].Image
	}
	return ""
}

// revision turns a ReplicaSet into the platform-neutral Revision.
func (st *state) revision(rs *appsv1.ReplicaSet) platforms.Revision {
	return platforms.Revision{
		ID:            strconv.FormatInt(revisionNumber(rs), 10),
		Artifact:      imageOf(&rs.Spec.Template.Spec, st.container),
		CreatedAt:     rs.CreationTimestamp.Time,
		ChangeCause:   rs.Annotations[changeCauseAnnotation],
		DoNotDeploy:   rs.Annotations[AnnotationDoNotDeploy] == "true",
		DoNotDeployBy: rs.Annotations[AnnotationDoNotDeployBy],
	}
}

// find returns the ReplicaSet of revision id. A revision the controller
// renumbered when it was rolled back to (deployment.kubernetes.io/
// revision-history) is found under its former numbers too.
func (st *state) find(id string) (*appsv1.ReplicaSet, bool) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return nil, false
	}
	for _, rs := range st.rss {
		if revisionNumber(rs) == n {
			return rs, true
		}
	}
	for _, rs := range st.rss {
		if slices.Contains(strings.Split(rs.Annotations[revisionHistoryAnnotation], ","), id) {
			return rs, true
		}
	}
	return nil, false
}

// available lists the history for "not found" messages: "3 (myapp:v1), 2 (myapp:v2)".
func (st *state) available() string {
	s := ""
	for i, rs := range st.rss {
		if i > 0 {
			s += ", "
		}
		s += st.revision(rs).Label()
	}
	if s == "" {
		return "none"
	}
	return s
}

func (st *state) currentLabel() string {
	if st.current != nil {
		return "revision " + st.revision(st.current).Label()
	}
	return "image " + imageOf(&st.d.Spec.Template.Spec, st.container)
}

package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"helm.sh/helm/v4/pkg/action"
	helmkube "helm.sh/helm/v4/pkg/kube"
	helmrelease "helm.sh/helm/v4/pkg/release"
	"helm.sh/helm/v4/pkg/release/common"
	release "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"rollbot/platforms"
)

// HelmRole is the Role of deploy/kubernetes/rbac.yaml that lets rollbot
// read a Helm release's history and roll it back (Helm keeps releases in
// Secrets of the release namespace).
const HelmRole = "rollbot-helm"

// HelmPermissions is what the Helm path needs in a release namespace on
// top of RequiredPermissions, exactly the rules of the Role HelmRole in
// deploy/kubernetes/rbac.yaml (a test keeps them equal): Helm's Secrets
// storage driver lists a release's revisions by label, gets one, creates
// the rollback's revision and updates the statuses it keeps there. Helm's
// rollback also applies every object of the target revision (get and
// patch): RequiredPermissions covers the Deployment; other kinds of a
// chart are the chart's.
var HelmPermissions = []Permission{
	{"", "secrets", "get"},
	{"", "secrets", "list"},
	{"", "secrets", "create"},
	{"", "secrets", "update"},
}

// helmReleases is the part of Helm's SDK the adapter uses, for the
// releases of one namespace (Helm's Secrets storage driver there).
type helmReleases interface {
	// History is every stored revision of the release, in any order;
	// driver.ErrReleaseNotFound when there is none.
	History(name string) ([]*release.Release, error)
	// Rollback is Helm's Rollback action to revision to, with no wait of
	// its own (the adapter follows the rollout). It records the rollback
	// as revision last+1 or not at all: a release whose newest revision is
	// no longer last (someone upgraded meanwhile) is refused with
	// errHelmMoved, before anything is applied. dryRun checks the
	// revisions and changes nothing.
	Rollback(name string, to, last int, dryRun bool) error
}

// errHelmMoved is the rollback's compare-and-set failing: the release got
// a new revision after rollbot read its history.
var errHelmMoved = errors.New("the Helm release has a newer revision")

// helmSDK is helmReleases on Helm's own action package.
type helmSDK struct {
	cfg *action.Configuration
	cas *casDriver
	mu  sync.Mutex // one rollback at a time: cas.next belongs to it
}

// newHelmSDK builds Helm's action configuration for namespace ns on rc
// (the adapter's cluster and credentials, impersonation included), with
// the Secrets storage driver, Helm's default. It does not contact the
// cluster.
// helmRequestTimeout bounds each API request of the Helm client: Helm's
// storage and Rollback action take no context, so a hung apiserver would
// otherwise hold the step past its budget.
const helmRequestTimeout = 30 * time.Second

func newHelmSDK(rc *rest.Config, ns string, log *slog.Logger) (*helmSDK, error) {
	if rc.Timeout == 0 {
		rc = rest.CopyConfig(rc)
		rc.Timeout = helmRequestTimeout
	}
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(log.Handler()))
	if err := cfg.Init(&restGetter{rc: rc, ns: ns}, ns, "secret"); err != nil {
		return nil, fmt.Errorf("helm configuration for namespace %s: %w", ns, err)
	}
	cas := &casDriver{Driver: cfg.Releases.Driver}
	cfg.Releases = storage.Init(cas)
	return &helmSDK{cfg: cfg, cas: cas}, nil
}

func (h *helmSDK) History(name string) ([]*release.Release, error) {
	rs, err := h.cfg.Releases.History(name)
	if err != nil {
		return nil, err
	}
	return v1Releases(rs)
}

func v1Releases(rs []helmrelease.Releaser) ([]*release.Release, error) {
	out := make([]*release.Release, 0, len(rs))
	for _, r := range rs {
		v, ok := r.(*release.Release)
		if !ok {
			return nil, fmt.Errorf("helm release record of type %T: rollbot reads release v1 records only", r)
		}
		out = append(out, v)
	}
	return out, nil
}

func (h *helmSDK) Rollback(name string, to, last int, dryRun bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cas.next = last + 1
	defer func() { h.cas.next = 0 }()
	rb := action.NewRollback(h.cfg)
	rb.Version = to
	rb.WaitStrategy = helmkube.HookOnlyStrategy
	rb.Description = fmt.Sprintf("Rollback to %d by rollbot", to)
	if dryRun {
		rb.DryRunStrategy = action.DryRunClient
	}
	return rb.Run(name)
}

// casDriver is Helm's storage driver with one precondition on Create:
// the rollback's new revision must be exactly the one after the revision
// rollbot read. Helm's Secrets driver refuses a revision that exists
// (the API server's AlreadyExists), so with this check the rollback is a
// compare-and-set on the release's newest revision.
type casDriver struct {
	driver.Driver
	next int // 0: no precondition
}

func (c *casDriver) Create(key string, rls helmrelease.Releaser) error {
	if r, ok := rls.(*release.Release); ok && c.next > 0 && r.Version != c.next {
		return fmt.Errorf("%w: it would be recorded as revision %d, rollbot expected %d", errHelmMoved, r.Version, c.next)
	}
	return c.Driver.Create(key, rls)
}

// restGetter gives Helm's kube client the adapter's rest.Config instead of
// a kubeconfig: the same cluster, credentials and impersonation. The
// discovery client and REST mapper are built once, on first use.
type restGetter struct {
	rc *rest.Config
	ns string

	once   sync.Once
	dc     discovery.CachedDiscoveryInterface
	mapper meta.RESTMapper
	err    error
}

func (g *restGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.rc), nil }

func (g *restGetter) init() {
	g.once.Do(func() {
		d, err := discovery.NewDiscoveryClientForConfig(rest.CopyConfig(g.rc))
		if err != nil {
			g.err = err
			return
		}
		g.dc = memory.NewMemCacheClient(d)
		g.mapper = restmapper.NewDeferredDiscoveryRESTMapper(g.dc)
	})
}

func (g *restGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	g.init()
	return g.dc, g.err
}

func (g *restGetter) ToRESTMapper() (meta.RESTMapper, error) {
	g.init()
	return g.mapper, g.err
}

// ToRawKubeConfigLoader only answers the namespace: everything else comes
// from ToRESTConfig.
func (g *restGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return clientcmd.NewDefaultClientConfig(clientcmdapi.Config{}, &clientcmd.ConfigOverrides{Context: clientcmdapi.Context{Namespace: g.ns}})
}

// helmClient is the Helm client for the release namespace ns, built on
// first use and kept: a service whose workload Helm does not own never
// builds one.
func (a *Adapter) helmClient(ns string) (helmReleases, error) {
	a.helmMu.Lock()
	defer a.helmMu.Unlock()
	if h, ok := a.helms[ns]; ok {
		return h, nil
	}
	if a.newHelm == nil {
		return nil, platforms.Userf(nil, "this rollbot has no Helm client for %s (the adapter was not built by kube.New)", a.Target())
	}
	h, err := a.newHelm(ns)
	if err != nil {
		return nil, err
	}
	if a.helms == nil {
		a.helms = map[string]helmReleases{}
	}
	a.helms[ns] = h
	return h, nil
}

// helmOwner is the workload's owner when its labels name a Helm release
// (and not a GitOps controller rendering a chart); nil otherwise.
func (a *Adapter) helmOwner(d *appsv1.Deployment) *platforms.Owner {
	if o := a.detectOwner(d); o != nil && o.Kind == platforms.OwnerHelm {
		return o
	}
	return nil
}

// helmHistory reads the release's history, newest first, and describes
// the owner: Detail and Plan, or Problem when the release cannot be read
// (it does not exist, rollbot may not read Secrets there).
func (a *Adapter) helmHistory(o *platforms.Owner) ([]*release.Release, helmReleases) {
	o.Detail = o.Label()
	h, err := a.helmClient(o.Namespace)
	if err != nil {
		o.Problem, _ = platforms.UserMessage(err)
		return nil, nil
	}
	rels, err := h.History(o.Name)
	if err != nil {
		o.Problem = a.helmProblem(o, err)
		return nil, nil
	}
	slices.SortFunc(rels, func(x, y *release.Release) int { return y.Version - x.Version })
	last := rels[0]
	o.Detail = fmt.Sprintf("%s (revision %d, %s)", o.Label(), last.Version, last.Info.Status)
	o.Plan = "rollbot rolls back through Helm (its Rollback action, as `helm rollback` does) to the newest revision that deployed successfully and is not marked DO_NOT_DEPLOY: the release history records the rollback as a new revision."
	return rels, h
}

// helmProblem says what is wrong with reading the release, for users.
func (a *Adapter) helmProblem(o *platforms.Owner, err error) string {
	var se apierrors.APIStatus
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		return fmt.Sprintf("%s was not found%s, though %s names it in its %s / %s annotations: check them, or that the release was not uninstalled; rollbot will not write anything until it finds the release",
			o.Label(), a.inCluster(), a.Target(), helmReleaseName, helmReleaseNamespace)
	case apierrors.IsForbidden(err) && errors.As(err, &se):
		if a.as != "" {
			return fmt.Sprintf("the cluster refused %s: %s", a.as, se.Status().Message)
		}
		return fmt.Sprintf("rollbot may not read Helm's release Secrets in %s: the cluster said %q; grant the %s Role (%s) there", o.Namespace, se.Status().Message, HelmRole, RBACFile)
	case isNetError(err):
		return "cannot reach the Kubernetes API" + a.clusterSuffix() + " to read " + o.Label()
	}
	return fmt.Sprintf("could not read %s: %v", o.Label(), err)
}

// deployedOK reports whether rel was deployed successfully, and if not
// why. Helm marks a release "superseded" when a newer one replaces it —
// but also a failed one (a rollback that fails to apply supersedes the
// revision it started from, and an upgrade from a failed release with
// nothing deployed supersedes that one), keeping the failure in its
// description. So: "deployed", or "superseded" without a recorded failure.
func deployedOK(rel *release.Release) (bool, string) {
	st := rel.Info.Status
	switch {
	case st == common.StatusDeployed:
		return true, ""
	case st == common.StatusSuperseded && !failedDescription(rel.Name, rel.Info.Description):
		return true, ""
	case st == common.StatusSuperseded:
		return false, fmt.Sprintf("Helm revision %d never deployed successfully (%s)", rel.Version, rel.Info.Description)
	case st.IsPending():
		return false, fmt.Sprintf("Helm revision %d is %s: its operation is running or was interrupted", rel.Version, st)
	case st == common.StatusFailed:
		return false, fmt.Sprintf("Helm revision %d failed (%s)", rel.Version, rel.Info.Description)
	}
	return false, fmt.Sprintf("Helm revision %d is %s", rel.Version, st)
}

// failedDescription recognises the descriptions Helm records on failure:
// `Upgrade "<name>" failed: …`, `Rollback "<name>" failed: …`, `Release
// "<name>" failed: …` (the wait), `failed to render resource: …`.
func failedDescription(name, desc string) bool {
	for _, op := range []string{"Upgrade", "Rollback", "Release", "Install"} {
		if strings.HasPrefix(desc, op+" "+strconv.Quote(name)+" failed") {
			return true
		}
	}
	return strings.HasPrefix(desc, "failed to render resource")
}

// manifestWorkload is the part of a rendered manifest rollbot reads.
type manifestWorkload struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Template corev1.PodTemplateSpec `json:"template"`
	} `json:"spec"`
}

// helmRevision is rel as a platforms.Revision: its number, the image the
// Deployment has in its manifest, and why it may not be rolled back to.
func (a *Adapter) helmRevision(rel *release.Release) platforms.Revision {
	r := platforms.Revision{ID: strconv.Itoa(rel.Version), CreatedAt: rel.Info.LastDeployed,
		ChangeCause: fmt.Sprintf("helm %s: %s", rel.Info.Status, rel.Info.Description)}
	if ok, why := deployedOK(rel); !ok {
		r.Unusable = why
	}
	for _, doc := range releaseutil.SplitManifests(rel.Manifest) {
		var w manifestWorkload
		if err := yaml.Unmarshal([]byte(doc), &w); err != nil || w.Kind != "Deployment" || w.Metadata.Name != a.cfg.Deployment {
			continue
		}
		spec := &w.Spec.Template.Spec
		name := a.cfg.Container
		if name == "" && len(spec.Containers) > 0 {
			name = spec.Containers[0].Name
		}
		r.Artifact = imageOf(spec, name)
		return r
	}
	if r.Unusable == "" {
		r.Unusable = fmt.Sprintf("Helm revision %d has no deployment %s in its manifest", rel.Version, a.cfg.Deployment)
	}
	return r
}

// helmSnapshot replaces the ReplicaSet history of snap with the release's:
// History is every revision newest first, each with the DO_NOT_DEPLOY mark
// rollbot left on the ReplicaSet that ran its image. Current is what runs:
// the newest revision whose image the Deployment has — the newest one,
// unless an upgrade failed before applying, or someone set the image
// outside Helm (a fallback does); when no revision has that image, the
// newest revision with the image that runs.
func (a *Adapter) helmSnapshot(snap *platforms.Snapshot, st *state, rels []*release.Release) {
	marks := map[string]platforms.Revision{}
	for _, rs := range st.rss {
		if r := st.revision(rs); r.DoNotDeploy {
			marks[r.Artifact] = r
		}
	}
	snap.History = snap.History[:0]
	for _, rel := range rels {
		r := a.helmRevision(rel)
		if m, ok := marks[r.Artifact]; ok {
			r.DoNotDeploy, r.DoNotDeployBy = true, m.DoNotDeployBy
		}
		snap.History = append(snap.History, r)
	}
	live := imageOf(&st.d.Spec.Template.Spec, st.container)
	for _, r := range snap.History {
		if r.Artifact == live {
			snap.Current = r
			return
		}
	}
	snap.Current = snap.History[0]
	snap.Current.Artifact = live
	snap.Current.ChangeCause = "the Deployment runs " + live + ", set outside Helm; " + snap.Current.ChangeCause
}

// helmRollback is Rollback for a Deployment a Helm release owns: Helm's
// Rollback action to revision to.ID, recorded as the release's next
// revision (compare-and-set on the newest revision read here), then the
// pause Stop made is ended — Helm's manifests do not set spec.paused, so
// its apply leaves it — and the rollout followed as for any rollback.
// A release already rolled back to that revision (a resumed step) is not
// rolled back again.
func (a *Adapter) helmRollback(ctx context.Context, st *state, o *platforms.Owner, to platforms.Revision, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	rels, h := a.helmHistory(o)
	if o.Problem != "" {
		return platforms.Result{}, platforms.Userf(fmt.Errorf("rollback %s: %s", o.Label(), o.Problem), "cannot roll back %s: %s", o.Label(), o.Problem)
	}
	last := rels[0]
	var target *release.Release
	for _, rel := range rels {
		if strconv.Itoa(rel.Version) == to.ID {
			target = rel
		}
	}
	if target == nil {
		var ids []string
		for _, rel := range rels {
			ids = append(ids, a.helmRevision(rel).Label())
		}
		return platforms.Result{}, platforms.Userf(fmt.Errorf("rollback %s to revision %q: %w", o.Label(), to.ID, platforms.ErrNotFound),
			"%s has no revision %q; its revisions: %s", o.Label(), to.ID, strings.Join(ids, ", "))
	}
	tr := a.helmRevision(target)
	if tr.Unusable != "" {
		return platforms.Result{}, platforms.Userf(nil, "rollbot will not roll %s back to revision %s: %s", o.Label(), tr.Label(), tr.Unusable)
	}
	if to.Artifact != "" && tr.Artifact != to.Artifact {
		return platforms.Result{}, platforms.Userf(fmt.Errorf("rollback %s to revision %s: it has %s, not %s: %w", o.Label(), to.ID, tr.Artifact, to.Artifact, platforms.ErrConflict),
			"revision %s of %s now has %s, not %s (the history changed); nothing was changed: check the history and try again", to.ID, o.Label(), tr.Artifact, to.Artifact)
	}
	lr := a.helmRevision(last)
	done := last.Info.Status == common.StatusDeployed && (last.Info.RollbackRevision == target.Version || last.Version == target.Version)
	var plan []string
	if !done {
		plan = append(plan, fmt.Sprintf("helm release %s/%s: roll back from revision %s to revision %s, recorded as revision %d",
			o.Namespace, o.Name, lr.Label(), tr.Label(), last.Version+1))
	}
	if st.d.Spec.Paused {
		plan = append(plan, fmt.Sprintf("deployment %s: resume the paused rollout", a.name()))
	}
	if done && !st.d.Spec.Paused && rolloutComplete(st.d) {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s is already at revision %s (revision %d)", o.Label(), tr.Label(), last.Version)}, nil
	}
	if dryRun {
		if !done {
			if err := h.Rollback(o.Name, target.Version, last.Version, true); err != nil {
				return platforms.Result{}, a.helmWriteError(o, tr, err)
			}
		}
		return platforms.Result{Outcome: platforms.Planned, Plan: plan,
			Detail: fmt.Sprintf("dry run: Helm would roll %s back to revision %s", o.Label(), tr.Label())}, nil
	}
	if !done {
		if err := h.Rollback(o.Name, target.Version, last.Version, false); err != nil {
			return platforms.Result{}, a.helmWriteError(o, tr, err)
		}
		a.log.InfoContext(ctx, "helm rollback written", "op", "rollback", "release", o.Label(), "from", last.Version, "to", target.Version, "recorded_as", last.Version+1)
	}
	d, err := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return platforms.Result{}, a.apiError("get", "deployments", err)
	}
	if d.Spec.Paused {
		if d, err = a.patchDeployment(ctx, d, []patchOp{{Op: "add", Path: "/spec/paused", Value: false}}, false); err != nil {
			return platforms.Result{}, err
		}
	}
	final, err := a.waitRollout(ctx, st.d, d, "the Helm rollback to revision "+tr.Label(), progress)
	if err != nil {
		return platforms.Result{}, err
	}
	detail := fmt.Sprintf("rolled back %s to revision %s", o.Label(), tr.Label())
	if !done {
		detail += fmt.Sprintf(" (recorded as revision %d)", last.Version+1)
	}
	detail += fmt.Sprintf(": %d/%d pods of %s ready", final.Status.AvailableReplicas, replicas(final), a.Target())
	return platforms.Result{Outcome: platforms.Done, Detail: detail, Plan: plan}, nil
}

// helmWriteError is a failed Helm rollback, for users, with the runbook's
// fallbacks (they write the Deployment directly).
func (a *Adapter) helmWriteError(o *platforms.Owner, tr platforms.Revision, err error) error {
	cause := fmt.Errorf("helm rollback %s to revision %s: %w", o.Label(), tr.ID, err)
	var se apierrors.APIStatus
	switch {
	case errors.Is(err, errHelmMoved) || errors.Is(err, driver.ErrReleaseExists):
		return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrConflict, cause),
			"%s got a new revision while rollbot was rolling it back (someone ran helm at the same time), so Helm changed nothing: check `helm history %s -n %s` and try again", o.Label(), o.Name, o.Namespace)
	case apierrors.IsForbidden(err) && a.as != "" && errors.As(err, &se):
		return platforms.Userf(cause, "the cluster refused %s: %s", a.as, se.Status().Message)
	case apierrors.IsForbidden(err) && errors.As(err, &se):
		return platforms.Userf(cause, "Helm could not roll %s back to revision %s: the cluster said %q; grant the %s Role (%s) in %s. The runbook's fallbacks: set the image explicitly, or scale to zero",
			o.Label(), tr.Label(), se.Status().Message, HelmRole, RBACFile, o.Namespace)
	case isNetError(err):
		return platforms.Userf(cause, "cannot reach the Kubernetes API%s to roll back %s", a.clusterSuffix(), o.Label())
	}
	return platforms.Userf(cause, "Helm could not roll %s back to revision %s: %s. The runbook's fallbacks: set the image explicitly, or scale to zero",
		o.Label(), tr.Label(), firstLine(err.Error()))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}

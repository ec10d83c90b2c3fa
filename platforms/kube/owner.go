package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"rollbot/platforms"
)

// The labels and annotations that name a workload's owner, as Helm, Argo
// CD and Flux set them.
const (
	helmManagedByLabel     = "app.kubernetes.io/managed-by"
	helmReleaseName        = "meta.helm.sh/release-name"
	helmReleaseNamespace   = "meta.helm.sh/release-namespace"
	argoInstanceLabel      = "argocd.argoproj.io/instance"
	argoTrackingAnnotation = "argocd.argoproj.io/tracking-id"
	fluxKustomizeName      = "kustomize.toolkit.fluxcd.io/name"
	fluxKustomizeNamespace = "kustomize.toolkit.fluxcd.io/namespace"
	fluxHelmName           = "helm.toolkit.fluxcd.io/name"
	fluxHelmNamespace      = "helm.toolkit.fluxcd.io/namespace"

	// AnnotationPausedBy on an Argo CD Application or a Flux object names
	// the incident that paused it ("RB-42").
	AnnotationPausedBy = "rollbot.dev/paused-by"
	// AnnotationPausedPrevious keeps, as JSON, the value of the field the
	// pause changed, so that any replica can resume it exactly.
	AnnotationPausedPrevious = "rollbot.dev/paused-previous"

	// GitOpsRole is the Role of deploy/kubernetes/rbac.yaml that lets
	// rollbot read and pause GitOps owners.
	GitOpsRole = "rollbot-gitops"

	// DefaultArgoCDNamespace is where Argo CD's Applications live unless
	// Config.ArgoCDNamespace says otherwise.
	DefaultArgoCDNamespace = "argocd"
)

// The owners' resources (their documented, served versions).
var (
	argoApplications    = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}
	fluxKustomizations  = schema.GroupVersionResource{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Resource: "kustomizations"}
	fluxHelmReleases    = schema.GroupVersionResource{Group: "helm.toolkit.fluxcd.io", Version: "v2", Resource: "helmreleases"}
	fluxGitRepositories = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}
)

// detectOwner names the owner from the Deployment's labels and
// annotations. A Flux HelmRelease also leaves Helm's labels, and Argo CD
// may render a Helm chart: the GitOps owner is the one that reconciles.
func (a *Adapter) detectOwner(d *appsv1.Deployment) *platforms.Owner {
	l, an := d.Labels, d.Annotations
	switch {
	case l[fluxHelmName] != "":
		return &platforms.Owner{Kind: platforms.OwnerFluxHelmRelease, Name: l[fluxHelmName], Namespace: firstNonEmpty(l[fluxHelmNamespace], d.Namespace)}
	case l[fluxKustomizeName] != "":
		return &platforms.Owner{Kind: platforms.OwnerFluxKustomize, Name: l[fluxKustomizeName], Namespace: firstNonEmpty(l[fluxKustomizeNamespace], d.Namespace)}
	case an[argoTrackingAnnotation] != "" || l[argoInstanceLabel] != "":
		// tracking-id: "<app>:<group>/<kind>:<namespace>/<name>"; the app
		// is "<namespace>_<name>" for Applications outside Argo CD's namespace.
		app := l[argoInstanceLabel]
		if id := an[argoTrackingAnnotation]; id != "" {
			app, _, _ = strings.Cut(id, ":")
		}
		ns := a.cfg.ArgoCDNamespace
		if n, name, ok := strings.Cut(app, "_"); ok {
			ns, app = n, name
		}
		return &platforms.Owner{Kind: platforms.OwnerArgoCD, Name: app, Namespace: ns}
	case l[helmManagedByLabel] == "Helm" || an[helmReleaseName] != "":
		return &platforms.Owner{Kind: platforms.OwnerHelm, Name: firstNonEmpty(an[helmReleaseName], d.Name), Namespace: firstNonEmpty(an[helmReleaseNamespace], d.Namespace)}
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func ownerResource(kind string) schema.GroupVersionResource {
	switch kind {
	case platforms.OwnerArgoCD:
		return argoApplications
	case platforms.OwnerFluxKustomize:
		return fluxKustomizations
	}
	return fluxHelmReleases
}

// pauseField is the field a pause changes, as a JSON pointer and for people.
func pauseField(kind string) (ptr, name string) {
	if kind == platforms.OwnerArgoCD {
		return "/spec/syncPolicy/automated", "spec.syncPolicy.automated"
	}
	return "/spec/suspend", "spec.suspend"
}

// OwnerOf implements platforms.OwnerPauser: the owner named by the
// Deployment, with its object read (for a GitOps owner) to say what the
// pause will do or why it cannot.
func (a *Adapter) OwnerOf(ctx context.Context) (*platforms.Owner, error) {
	d, err := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return nil, a.apiError("get", "deployments", err)
	}
	o, _ := a.ownerObject(ctx, d)
	return o, nil
}

// ownerObject detects the owner and reads its object. obj is nil when the
// owner is not a GitOps one, or when it cannot be read (o.Problem says why).
func (a *Adapter) ownerObject(ctx context.Context, d *appsv1.Deployment) (*platforms.Owner, *unstructured.Unstructured) {
	o := a.detectOwner(d)
	if o == nil {
		return nil, nil
	}
	if !o.GitOps() {
		a.helmHistory(o)
		return o, nil
	}
	if a.dyn == nil {
		o.Detail = o.Label()
		o.Problem = "this rollbot has no client for " + o.Label() + "'s API"
		return o, nil
	}
	obj, err := a.dyn.Resource(ownerResource(o.Kind)).Namespace(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		o.Detail = o.Label()
		o.Problem = a.ownerProblem(o, "get", err)
		return o, nil
	}
	_, field := pauseField(o.Kind)
	switch o.Kind {
	case platforms.OwnerArgoCD:
		auto, found, _ := unstructured.NestedMap(obj.Object, "spec", "syncPolicy", "automated")
		switch {
		case found && auto != nil:
			var opts []string
			if b, _, _ := unstructured.NestedBool(auto, "selfHeal"); b {
				opts = append(opts, "self-heal")
			}
			if b, _, _ := unstructured.NestedBool(auto, "prune"); b {
				opts = append(opts, "prune")
			}
			o.Detail = o.Label() + " (auto-sync" + prefixed(", ", strings.Join(opts, ", ")) + ")"
			o.Reconciles = true
			o.Plan = "Auto-sync of " + o.Label() + " is turned off first (" + field + " removed, its value kept for resume-sync), so Argo CD does not put the bad version back."
		default:
			o.Detail = o.Label() + " (manual sync)"
			o.Plan = o.Label() + " has no auto-sync: nothing to pause; nobody may sync it until Git is changed."
		}
	default:
		if s, _, _ := unstructured.NestedBool(obj.Object, "spec", "suspend"); s {
			o.Detail = o.Label() + " (suspended)"
			o.Plan = o.Label() + " is already suspended: nothing to pause; keep it suspended until Git is changed."
		} else {
			o.Detail = o.Label() + " (reconciling)"
			o.Reconciles = true
			o.Plan = o.Label() + " is suspended first (" + field + ": true, as `flux suspend` does), so Flux does not put the bad version back."
		}
	}
	return o, obj
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

// ownerProblem turns an error on the owner's object into what users read.
func (a *Adapter) ownerProblem(o *platforms.Owner, verb string, err error) string {
	res := ownerResource(o.Kind)
	var se apierrors.APIStatus
	switch {
	case apierrors.IsNotFound(err) && errors.As(err, &se) && se.Status().Details != nil && se.Status().Details.Name == o.Name:
		return fmt.Sprintf("%s not found%s, though %s names it as its owner: check the workload's labels/annotations (or `argocd_namespace:` in rollbot's config)", o.Label(), a.inCluster(), a.Target())
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("the cluster%s has no %s API (%s): is %s installed?", a.clusterSuffix(), res.Resource+"."+res.Group, res.Version, ownerTool(o.Kind))
	case apierrors.IsForbidden(err):
		return fmt.Sprintf("rollbot may not %s %s in %s: the cluster said %q; grant the %s Role (%s)", verb, res.Resource+"."+res.Group, o.Namespace, statusMessage(err), GitOpsRole, RBACFile)
	}
	return fmt.Sprintf("could not %s %s: %v", verb, o.Label(), err)
}

func ownerTool(kind string) string {
	if kind == platforms.OwnerArgoCD {
		return "Argo CD"
	}
	return "Flux"
}

func statusMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}

// PauseOwner implements platforms.OwnerPauser. Argo CD: remove
// spec.syncPolicy.automated from the Application; Flux: spec.suspend: true
// on the Kustomization / HelmRelease. The field's previous value and the
// incident go into annotations of the owner in the same JSON patch, which
// carries the resourceVersion read (so an edit in between fails it).
func (a *Adapter) PauseOwner(ctx context.Context, incident string, dryRun bool) (platforms.Result, *platforms.OwnerPause, error) {
	a, err := a.forActor(ctx)
	if err != nil {
		return platforms.Result{}, nil, err
	}
	d, err := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return platforms.Result{}, nil, a.apiError("get", "deployments", err)
	}
	o, obj := a.ownerObject(ctx, d)
	if o == nil || !o.GitOps() {
		what := "no GitOps owner"
		if o != nil {
			what = o.Label() + " does not reconcile by itself"
		}
		return platforms.Result{Outcome: platforms.Skipped, Detail: what + ": nothing to pause"}, nil, nil
	}
	if o.Problem != "" {
		return platforms.Result{}, nil, platforms.Userf(fmt.Errorf("pause %s: %s", o.Label(), o.Problem), "cannot pause %s: %s", o.Label(), o.Problem)
	}
	ptr, field := pauseField(o.Kind)
	p := &platforms.OwnerPause{Owner: *o, Incident: incident, Field: field, At: a.now().UTC()}
	for attempt := 0; ; attempt++ {
		an := obj.GetAnnotations()
		if by := an[AnnotationPausedBy]; by != "" {
			if by == incident { // this incident paused it: a resumed step
				p.Previous, p.Changed = json.RawMessage(an[AnnotationPausedPrevious]), true
				return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s was already paused for %s", o.Label(), incident)}, p, nil
			}
			return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s was already paused by rollbot for %s: resume it from there", o.Label(), by)}, p, nil
		}
		prev, paused := pausedValue(o.Kind, obj)
		if paused {
			return platforms.Result{Outcome: platforms.Skipped, Detail: o.Plan}, p, nil
		}
		p.Previous = prev
		p.Changed = true
		ops := []patchOp{casOp(obj.GetResourceVersion())}
		if o.Kind == platforms.OwnerArgoCD {
			ops = append(ops, patchOp{Op: "remove", Path: ptr})
		} else {
			ops = append(ops, patchOp{Op: "add", Path: ptr, Value: true})
		}
		marks := map[string]string{AnnotationPausedBy: incident, AnnotationPausedPrevious: string(prev)}
		if an == nil {
			ops = append(ops, patchOp{Op: "add", Path: "/metadata/annotations", Value: marks})
		} else {
			ops = append(ops,
				patchOp{Op: "add", Path: "/metadata/annotations/" + pointer(AnnotationPausedBy), Value: incident},
				patchOp{Op: "add", Path: "/metadata/annotations/" + pointer(AnnotationPausedPrevious), Value: string(prev)})
		}
		plan := []string{pausePlan(o, field, prev)}
		err := a.patchOwner(ctx, o, ops, dryRun)
		if err == nil {
			if dryRun {
				return platforms.Result{Outcome: platforms.Planned, Plan: plan, Detail: "dry run: the API server accepted pausing " + o.Label()}, p, nil
			}
			a.log.InfoContext(ctx, "paused owner", "op", "pause_owner", "owner", o.Label(), "field", field, "previous", string(prev))
			return platforms.Result{Outcome: platforms.Done, Plan: plan, Detail: "paused " + o.Label() + " (" + field + " was " + string(prev) + ")"}, p, nil
		}
		if !apierrors.IsConflict(err) || attempt == maxStatusRetries {
			return platforms.Result{}, nil, a.ownerWriteError(o, "pause", err)
		}
		// The controller writes the object's status all the time: read it
		// again and decide again.
		if obj, err = a.dyn.Resource(ownerResource(o.Kind)).Namespace(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{}); err != nil {
			return platforms.Result{}, nil, a.ownerWriteError(o, "pause", err)
		}
	}
}

func pausePlan(o *platforms.Owner, field string, prev json.RawMessage) string {
	if o.Kind == platforms.OwnerArgoCD {
		return fmt.Sprintf("%s: remove %s (was %s)", o.Label(), field, prev)
	}
	return fmt.Sprintf("%s: %s: true (was %s)", o.Label(), field, prev)
}

// pausedValue is the pause field's value as JSON ("null" when unset), and
// whether the owner is already paused.
func pausedValue(kind string, obj *unstructured.Unstructured) (json.RawMessage, bool) {
	var v any
	var found bool
	if kind == platforms.OwnerArgoCD {
		v, found, _ = unstructured.NestedFieldNoCopy(obj.Object, "spec", "syncPolicy", "automated")
		if !found || v == nil {
			return json.RawMessage("null"), true
		}
	} else {
		v, found, _ = unstructured.NestedFieldNoCopy(obj.Object, "spec", "suspend")
		if found && v == true {
			return json.RawMessage("true"), true
		}
	}
	if !found {
		return json.RawMessage("null"), false
	}
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("null"), false
	}
	return b, false
}

func (a *Adapter) patchOwner(ctx context.Context, o *platforms.Owner, ops []patchOp, dryRun bool) error {
	body, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("encode patch for %s: %w", o.Label(), err)
	}
	opts := metav1.PatchOptions{FieldManager: "rollbot"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = a.dyn.Resource(ownerResource(o.Kind)).Namespace(o.Namespace).Patch(ctx, o.Name, types.JSONPatchType, body, opts)
	return err
}

func (a *Adapter) ownerWriteError(o *platforms.Owner, what string, err error) error {
	cause := fmt.Errorf("%s %s: %w", what, o.Label(), err)
	if isNetError(err) {
		return platforms.Userf(cause, "cannot reach the Kubernetes API%s to %s %s", a.clusterSuffix(), what, o.Label())
	}
	if apierrors.IsConflict(err) {
		return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrConflict, cause), "%s kept changing while rollbot tried to %s it; nothing was changed", o.Label(), what)
	}
	return platforms.Userf(cause, "cannot %s %s: %s", what, o.Label(), a.ownerProblem(o, "patch", err))
}

// ResumeOwner implements platforms.OwnerPauser: it puts the paused field
// back to exactly its previous value and removes rollbot's annotations, in
// one JSON patch that first tests that the owner is still paused by p's
// incident.
func (a *Adapter) ResumeOwner(ctx context.Context, p platforms.OwnerPause) (platforms.Result, error) {
	a, err := a.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	o := p.Owner
	if !p.Changed {
		return platforms.Result{Outcome: platforms.Skipped, Detail: "rollbot did not pause " + o.Label() + " for " + p.Incident + ": nothing to resume"}, nil
	}
	if a.dyn == nil {
		return platforms.Result{}, platforms.Userf(nil, "this rollbot has no client for %s's API", o.Label())
	}
	obj, err := a.dyn.Resource(ownerResource(o.Kind)).Namespace(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		return platforms.Result{}, platforms.Userf(fmt.Errorf("resume %s: %w", o.Label(), err), "cannot resume %s: %s", o.Label(), a.ownerProblem(&o, "get", err))
	}
	if by := obj.GetAnnotations()[AnnotationPausedBy]; by != p.Incident {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s is no longer paused by %s (someone resumed or changed it): nothing was changed", o.Label(), p.Incident)}, nil
	}
	ptr, field := pauseField(o.Kind)
	ops := []patchOp{
		casOp(obj.GetResourceVersion()),
		{Op: "test", Path: "/metadata/annotations/" + pointer(AnnotationPausedBy), Value: p.Incident},
	}
	var prev any
	if err := json.Unmarshal(p.Previous, &prev); err != nil {
		return platforms.Result{}, fmt.Errorf("previous value of %s of %s: %w", field, o.Label(), err)
	}
	switch {
	case o.Kind == platforms.OwnerArgoCD:
		if _, found, _ := unstructured.NestedFieldNoCopy(obj.Object, "spec", "syncPolicy"); !found {
			ops = append(ops, patchOp{Op: "add", Path: "/spec/syncPolicy", Value: map[string]any{"automated": prev}})
		} else {
			ops = append(ops, patchOp{Op: "add", Path: ptr, Value: prev})
		}
	case prev == nil:
		ops = append(ops, patchOp{Op: "remove", Path: ptr})
	default:
		ops = append(ops, patchOp{Op: "add", Path: ptr, Value: prev})
	}
	ops = append(ops,
		patchOp{Op: "remove", Path: "/metadata/annotations/" + pointer(AnnotationPausedBy)},
		patchOp{Op: "remove", Path: "/metadata/annotations/" + pointer(AnnotationPausedPrevious)})
	if err := a.patchOwner(ctx, &o, ops, false); err != nil {
		if isTestFailed(err) {
			return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s changed while rollbot resumed it: nothing was changed", o.Label())}, nil
		}
		return platforms.Result{}, a.ownerWriteError(&o, "resume", err)
	}
	a.log.InfoContext(ctx, "resumed owner", "op", "resume_owner", "owner", o.Label(), "field", field, "value", string(p.Previous))
	return platforms.Result{Outcome: platforms.Done, Detail: fmt.Sprintf("resumed %s: %s is %s again", o.Label(), field, p.Previous),
		Plan: []string{fmt.Sprintf("%s: %s: %s", o.Label(), field, p.Previous)}}, nil
}

// GitChange implements platforms.OwnerPauser: the repository, path and
// target revision from the Application's source, or from the Flux
// Kustomization and its GitRepository; for a HelmRelease the chart and its
// values.
func (a *Adapter) GitChange(ctx context.Context, p platforms.OwnerPause, bad, good platforms.Revision) (platforms.GitChange, error) {
	o := p.Owner
	g := platforms.GitChange{Source: o.Label(), From: bad.Artifact, To: good.Artifact}
	if a.dyn == nil {
		return g, platforms.Userf(nil, "this rollbot has no client for %s's API", o.Label())
	}
	obj, err := a.dyn.Resource(ownerResource(o.Kind)).Namespace(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		return g, platforms.Userf(err, "cannot read %s: %s", o.Label(), a.ownerProblem(&o, "get", err))
	}
	str := func(m map[string]any, path ...string) string {
		s, _, _ := unstructured.NestedString(m, path...)
		return s
	}
	switch o.Kind {
	case platforms.OwnerArgoCD:
		src, _, _ := unstructured.NestedMap(obj.Object, "spec", "source")
		if src == nil {
			if srcs, _, _ := unstructured.NestedSlice(obj.Object, "spec", "sources"); len(srcs) > 0 {
				src, _ = srcs[0].(map[string]any)
			}
		}
		g.Repo, g.Path, g.Revision = str(src, "repoURL"), firstNonEmpty(str(src, "path"), str(src, "chart")), firstNonEmpty(str(src, "targetRevision"), "HEAD")
	case platforms.OwnerFluxKustomize:
		g.Path = str(obj.Object, "spec", "path")
		kind, name, ns := str(obj.Object, "spec", "sourceRef", "kind"), str(obj.Object, "spec", "sourceRef", "name"), firstNonEmpty(str(obj.Object, "spec", "sourceRef", "namespace"), o.Namespace)
		g.Source += ", " + kind + " " + ns + "/" + name
		if kind != "GitRepository" {
			g.Note = "the source is a " + kind + ", not a GitRepository: change the image where it is built from"
			break
		}
		repo, err := a.dyn.Resource(fluxGitRepositories).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			g.Note = fmt.Sprintf("could not read GitRepository %s/%s: %s", ns, name, statusMessage(err))
			break
		}
		g.Repo = str(repo.Object, "spec", "url")
		for _, k := range []string{"commit", "name", "tag", "semver", "branch"} {
			if v := str(repo.Object, "spec", "ref", k); v != "" {
				g.Revision = k + " " + v
				break
			}
		}
	case platforms.OwnerFluxHelmRelease:
		g.Path = "chart " + str(obj.Object, "spec", "chart", "spec", "chart") + ", values of " + o.Label()
		g.Revision = str(obj.Object, "spec", "chart", "spec", "version")
	}
	return g, nil
}

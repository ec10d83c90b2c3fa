package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"rollbot/platforms"
)

// patchOp is one RFC 6902 JSON patch operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// casOp makes a patch conditional on the object's resourceVersion: the API
// server answers 409 Conflict when the object changed since it was read.
func casOp(resourceVersion string) patchOp {
	return patchOp{Op: "replace", Path: "/metadata/resourceVersion", Value: resourceVersion}
}

// pointer escapes a map key for a JSON pointer path.
func pointer(key string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(key)
}

// maxStatusRetries bounds the re-reads after a conflict caused by status
// updates alone.
const maxStatusRetries = 5

// patchDeployment applies ops, decided on the Deployment as read, as one
// JSON patch carrying read's resourceVersion as precondition. Every status
// update bumps the resourceVersion too, and the controller writes status
// all through a rollout (pods crash, become ready...), so on 409 Conflict
// it re-reads: if the spec is still the one the decision was made on (same
// UID and metadata.generation, which every spec change increments) it
// retries with the new resourceVersion; otherwise someone else changed the
// Deployment, and the write fails with platforms.ErrConflict.
func (a *Adapter) patchDeployment(ctx context.Context, read *appsv1.Deployment, ops []patchOp, dryRun bool) (*appsv1.Deployment, error) {
	opts := metav1.PatchOptions{FieldManager: "rollbot"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	rv := read.ResourceVersion
	for attempt := 0; ; attempt++ {
		body, err := json.Marshal(append([]patchOp{casOp(rv)}, ops...))
		if err != nil {
			return nil, fmt.Errorf("encode patch for %s: %w", a.Target(), err)
		}
		d, err := a.deployments.Patch(ctx, a.cfg.Deployment, types.JSONPatchType, body, opts)
		if err == nil {
			return d, nil
		}
		if !apierrors.IsConflict(err) || attempt == maxStatusRetries {
			return nil, a.apiError("patch", "deployments", err)
		}
		fresh, gerr := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
		if gerr != nil {
			return nil, a.apiError("get", "deployments", gerr)
		}
		if fresh.UID != read.UID || fresh.Generation != read.Generation {
			a.log.WarnContext(ctx, "concurrent change", "op", "patch", "generation_read", read.Generation, "generation_now", fresh.Generation)
			return nil, a.apiError("patch", "deployments", err)
		}
		a.log.DebugContext(ctx, "status changed under the write; retrying", "op", "patch", "attempt", attempt+1)
		rv = fresh.ResourceVersion
	}
}

// annotationsToSkip are kept from the Deployment, not restored from the
// ReplicaSet, on a rollback (the same set `kubectl rollout undo` keeps).
var annotationsToSkip = map[string]bool{
	corev1.LastAppliedConfigAnnotation:          true,
	revisionAnnotation:                          true,
	revisionHistoryAnnotation:                   true,
	"deployment.kubernetes.io/desired-replicas": true,
	"deployment.kubernetes.io/max-replicas":     true,
	appsv1.DeprecatedRollbackTo:                 true,
}

// Stop implements platforms.Platform: it pauses the rollout (runbook §2,
// `kubectl rollout pause`). Already paused → Skipped.
func (a *Adapter) Stop(ctx context.Context, dryRun bool) (platforms.Result, error) {
	a, err := a.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	d, err := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return platforms.Result{}, a.apiError("get", "deployments", err)
	}
	if d.Spec.Paused {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s is already paused", a.Target())}, nil
	}
	plan := []string{fmt.Sprintf("deployment %s: pause rollout", a.name())}
	if _, err := a.patchDeployment(ctx, d, []patchOp{{Op: "add", Path: "/spec/paused", Value: true}}, dryRun); err != nil {
		return platforms.Result{}, err
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Detail: fmt.Sprintf("dry run: would pause the rollout of %s", a.Target()), Plan: plan}, nil
	}
	a.log.InfoContext(ctx, "paused rollout", "op", "stop")
	return platforms.Result{Outcome: platforms.Done, Detail: fmt.Sprintf("paused the rollout of %s", a.Target()), Plan: plan}, nil
}

// Rollback implements platforms.Platform. to.ID is a revision number as
// shown by `kubectl rollout history` (a former number of a revision that
// was rolled back to is accepted too). The pod template of that revision is
// restored, and a pause ended, in one patch conditional on the
// resourceVersion read at the start; then it waits like `kubectl rollout
// status`, reporting progress, until the rollout completes or the
// Deployment's progress deadline is exceeded.
func (a *Adapter) Rollback(ctx context.Context, to platforms.Revision, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	a, err := a.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	st, err := a.read(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	if o := a.helmOwner(st.d); o != nil {
		return a.helmRollback(ctx, st, o, to, dryRun, progress)
	}
	target, ok := st.find(to.ID)
	if !ok {
		return platforms.Result{}, platforms.Userf(
			fmt.Errorf("rollback %s to revision %q: %w", a.Target(), to.ID, platforms.ErrNotFound),
			"%s has no revision %q; available revisions: %s", a.Target(), to.ID, st.available())
	}
	tr := st.revision(target)
	same := equalIgnoreHash(&target.Spec.Template, &st.d.Spec.Template)
	if same && !st.d.Spec.Paused {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s is already at revision %s", a.Target(), tr.Label())}, nil
	}

	var ops []patchOp
	var plan []string
	if !same {
		tmpl := target.Spec.Template.DeepCopy()
		delete(tmpl.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
		ops = append(ops,
			patchOp{Op: "add", Path: "/spec/template", Value: tmpl},
			patchOp{Op: "add", Path: "/metadata/annotations", Value: rollbackAnnotations(st.d, target)},
		)
		plan = append(plan, fmt.Sprintf("deployment %s: pod template %s -> revision %s", a.name(), st.currentLabel(), tr.Label()))
		plan = append(plan, imageChanges(a.name(), &st.d.Spec.Template.Spec, &tmpl.Spec)...)
	}
	if st.d.Spec.Paused {
		ops = append(ops, patchOp{Op: "add", Path: "/spec/paused", Value: false})
		plan = append(plan, fmt.Sprintf("deployment %s: resume the paused rollout", a.name()))
	}
	updated, err := a.patchDeployment(ctx, st.d, ops, dryRun)
	if err != nil {
		return platforms.Result{}, err
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan,
			Detail: fmt.Sprintf("dry run: the API server accepted rolling back %s to revision %s", a.Target(), tr.Label())}, nil
	}
	a.log.InfoContext(ctx, "rollback written", "op", "rollback", "from", st.currentLabel(), "to", tr.Label(), "resumed", st.d.Spec.Paused)
	final, err := a.waitRollout(ctx, st.d, updated, "the rollback to revision "+tr.Label(), progress)
	if err != nil {
		return platforms.Result{}, err
	}
	detail := fmt.Sprintf("rolled back %s to revision %s", a.Target(), tr.Label())
	if rev := final.Annotations[revisionAnnotation]; rev != "" && rev != tr.ID {
		detail += " (now numbered " + rev + ")"
	}
	detail += fmt.Sprintf(": %d/%d pods ready", final.Status.AvailableReplicas, replicas(final))
	return platforms.Result{Outcome: platforms.Done, Detail: detail, Plan: plan}, nil
}

// rollbackAnnotations are the Deployment's annotations after a rollback to
// rs: those of rs (so its change-cause comes back, as with `kubectl
// rollout undo`), except the controller's bookkeeping, which stays as it
// is, and rollbot's do-not-deploy marks, which belong to the ReplicaSet.
func rollbackAnnotations(d *appsv1.Deployment, rs *appsv1.ReplicaSet) map[string]string {
	out := map[string]string{}
	for k := range annotationsToSkip {
		if v, ok := d.Annotations[k]; ok {
			out[k] = v
		}
	}
	for k, v := range rs.Annotations {
		if annotationsToSkip[k] || k == AnnotationDoNotDeploy || k == AnnotationDoNotDeployBy {
			continue
		}
		out[k] = v
	}
	return out
}

// imageChanges lists "deployment ns/name: container app image a -> b" for
// each container (init containers included) whose image differs.
func imageChanges(name string, from, to *corev1.PodSpec) []string {
	var out []string
	diff := func(kind string, a, b []corev1.Container) {
		old := map[string]string{}
		for _, c := range a {
			old[c.Name] = c.Image
		}
		for _, c := range b {
			if o, ok := old[c.Name]; ok && o != c.Image {
				out = append(out, fmt.Sprintf("deployment %s: %s %s image %s -> %s", name, kind, c.Name, o, c.Image))
			}
		}
	}
	diff("init container", from.InitContainers, to.InitContainers)
	diff("container", from.Containers, to.Containers)
	return out
}

func replicas(d *appsv1.Deployment) int {
	if d.Spec.Replicas == nil {
		return 1
	}
	return int(*d.Spec.Replicas)
}

// SetArtifact implements platforms.Fallbacks (`kubectl set image`): it sets
// the configured container's image, ends a pause in the same conditional
// patch, and waits for the rollout.
func (a *Adapter) SetArtifact(ctx context.Context, artifact string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	a, err := a.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	if artifact == "" {
		return platforms.Result{}, platforms.Userf(nil, "no image given for %s", a.Target())
	}
	d, err := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return platforms.Result{}, a.apiError("get", "deployments", err)
	}
	name, err := a.containerName(d)
	if err != nil {
		return platforms.Result{}, err
	}
	idx := 0
	for i, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			idx = i
		}
	}
	old := d.Spec.Template.Spec.Containers[idx].Image
	if old == artifact && !d.Spec.Paused {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("container %s of %s already runs %s", name, a.Target(), artifact)}, nil
	}
	var ops []patchOp
	var plan []string
	if old != artifact {
		ops = append(ops, patchOp{Op: "replace", Path: "/spec/template/spec/containers/" + strconv.Itoa(idx) + "/image", Value: artifact})
		cause := fmt.Sprintf("rollbot: set image %s=%s", name, artifact)
		if d.Annotations == nil {
			ops = append(ops, patchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{changeCauseAnnotation: cause}})
		} else {
			ops = append(ops, patchOp{Op: "add", Path: "/metadata/annotations/" + pointer(changeCauseAnnotation), Value: cause})
		}
		plan = append(plan, fmt.Sprintf("deployment %s: container %s image %s -> %s", a.name(), name, old, artifact))
	}
	if d.Spec.Paused {
		ops = append(ops, patchOp{Op: "add", Path: "/spec/paused", Value: false})
		plan = append(plan, fmt.Sprintf("deployment %s: resume the paused rollout", a.name()))
	}
	updated, err := a.patchDeployment(ctx, d, ops, dryRun)
	if err != nil {
		return platforms.Result{}, err
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan,
			Detail: fmt.Sprintf("dry run: the API server accepted setting container %s of %s to %s", name, a.Target(), artifact)}, nil
	}
	a.log.InfoContext(ctx, "image set", "op", "set_artifact", "container", name, "from", old, "to", artifact)
	final, err := a.waitRollout(ctx, d, updated, "the rollout of "+artifact, progress)
	if err != nil {
		return platforms.Result{}, err
	}
	return platforms.Result{Outcome: platforms.Done, Plan: plan,
		Detail: fmt.Sprintf("set container %s of %s to %s: %d/%d pods ready", name, a.Target(), artifact, final.Status.AvailableReplicas, replicas(final))}, nil
}

// Deploy implements platforms.Deployer: the container's image is set to
// artifact in one patch conditional on the resourceVersion read, which
// makes a new revision as a release would; it returns once the API server
// took it, without waiting for the rollout. A paused Deployment is
// refused (someone is in the middle of something), and so is one whose
// container does not run from, when set. Like every write it runs as the
// Slack user's Kubernetes identity when Config.Impersonate is set (a
// drill's deploy and restore act for whoever started the drill).
func (a *Adapter) Deploy(ctx context.Context, artifact, from string, dryRun bool) (platforms.Result, error) {
	if artifact == "" {
		return platforms.Result{}, platforms.Userf(nil, "no image given for %s", a.Target())
	}
	a, err := a.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	d, err := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return platforms.Result{}, a.apiError("get", "deployments", err)
	}
	if d.Spec.Paused {
		return platforms.Result{}, platforms.Userf(nil, "%s is paused; resume it (or finish what paused it) before deploying to it", a.Target())
	}
	name, err := a.containerName(d)
	if err != nil {
		return platforms.Result{}, err
	}
	idx := 0
	for i, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			idx = i
		}
	}
	old := d.Spec.Template.Spec.Containers[idx].Image
	if old == artifact {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("container %s of %s already runs %s", name, a.Target(), artifact)}, nil
	}
	if from != "" && old != from {
		return platforms.Result{}, platforms.Userf(fmt.Errorf("deploy %s to %s: it runs %s, not %s: %w", artifact, a.Target(), old, from, platforms.ErrConflict),
			"container %s of %s runs %s, not %s: someone changed it, so %s was not deployed over it", name, a.Target(), old, from, artifact)
	}
	cause := fmt.Sprintf("rollbot drill: deploy %s=%s", name, artifact)
	ops := []patchOp{{Op: "replace", Path: "/spec/template/spec/containers/" + strconv.Itoa(idx) + "/image", Value: artifact}}
	if d.Annotations == nil {
		ops = append(ops, patchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{changeCauseAnnotation: cause}})
	} else {
		ops = append(ops, patchOp{Op: "add", Path: "/metadata/annotations/" + pointer(changeCauseAnnotation), Value: cause})
	}
	plan := []string{fmt.Sprintf("deployment %s: container %s image %s -> %s (a new revision)", a.name(), name, old, artifact)}
	updated, err := a.patchDeployment(ctx, d, ops, dryRun)
	if err != nil {
		return platforms.Result{}, err
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan,
			Detail: fmt.Sprintf("dry run: the API server accepted deploying %s to %s", artifact, a.Target())}, nil
	}
	a.log.InfoContext(ctx, "deployed", "op", "deploy", "container", name, "from", old, "to", artifact, "generation", updated.Generation)
	return platforms.Result{Outcome: platforms.Done, Plan: plan,
		Detail: fmt.Sprintf("deployed %s to container %s of %s (generation %d)", artifact, name, a.Target(), updated.Generation)}, nil
}

// ScaleToZero implements platforms.Fallbacks: replicas → 0, conditional on
// the resourceVersion read, then waits until no pod is left.
func (a *Adapter) ScaleToZero(ctx context.Context, dryRun bool) (platforms.Result, error) {
	a, err := a.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	d, err := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
	if err != nil {
		return platforms.Result{}, a.apiError("get", "deployments", err)
	}
	if replicas(d) == 0 && d.Status.Replicas == 0 {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s is already scaled to zero", a.Target())}, nil
	}
	plan := []string{fmt.Sprintf("deployment %s: replicas %d -> 0", a.name(), replicas(d))}
	updated := d
	if replicas(d) != 0 {
		if updated, err = a.patchDeployment(ctx, d, []patchOp{{Op: "add", Path: "/spec/replicas", Value: 0}}, dryRun); err != nil {
			return platforms.Result{}, err
		}
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan, Detail: fmt.Sprintf("dry run: the API server accepted scaling %s to zero", a.Target())}, nil
	}
	a.log.InfoContext(ctx, "scaled to zero", "op", "scale_to_zero", "from", replicas(d))
	if _, err := a.wait(ctx, updated, a.timeout(d), func(d *appsv1.Deployment) (platforms.Progress, bool, error) {
		p := platforms.Progress{Desired: 0, Ready: int(d.Status.AvailableReplicas), Updated: int(d.Status.UpdatedReplicas)}
		if d.Status.ObservedGeneration < updated.Generation {
			p.Message = "Waiting for deployment spec update to be observed..."
			return p, false, nil
		}
		if replicas(d) != 0 {
			return p, false, a.changedUnderneath(d, fmt.Sprintf("replicas is now %d", replicas(d)))
		}
		p.Done = d.Status.Replicas == 0
		p.Message = fmt.Sprintf("Waiting for deployment %q to scale to zero: %d pods left...", d.Name, d.Status.Replicas)
		if p.Done {
			p.Message = fmt.Sprintf("deployment %q scaled to zero", d.Name)
		}
		return p, p.Done, nil
	}, nil); err != nil {
		return platforms.Result{}, err
	}
	return platforms.Result{Outcome: platforms.Done, Plan: plan, Detail: fmt.Sprintf("scaled %s to zero: no pods left", a.Target())}, nil
}

// MarkDoNotDeploy implements platforms.Platform: it annotates the
// ReplicaSet of rev with AnnotationDoNotDeploy and who marked it, so that
// Snapshot reports it and LastKnownGood never picks it. rev is looked up by
// ID, or by Artifact when ID is empty; the patch is conditional on the
// ReplicaSet still being that revision (JSON patch test operations).
func (a *Adapter) MarkDoNotDeploy(ctx context.Context, rev platforms.Revision, by string) (platforms.Result, error) {
	a, err := a.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	st, err := a.read(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	var rs *appsv1.ReplicaSet
	if a.helmOwner(st.d) != nil {
		// rev is a Helm revision: its number is the release's, not a
		// ReplicaSet's; the mark goes on the ReplicaSet that ran its image.
		rev.ID = ""
	}
	if rev.ID != "" {
		rs, _ = st.find(rev.ID)
	} else {
		for _, r := range st.rss {
			if rev.Artifact != "" && st.revision(r).Artifact == rev.Artifact {
				rs = r
				break
			}
		}
	}
	if rs == nil {
		return platforms.Result{}, platforms.Userf(
			fmt.Errorf("mark %s revision %q: %w", a.Target(), rev.Label(), platforms.ErrNotFound),
			"%s has no revision %s to mark DO_NOT_DEPLOY; available revisions: %s", a.Target(), rev.Label(), st.available())
	}
	found := st.revision(rs)
	if rev.Artifact != "" && found.Artifact != rev.Artifact {
		return platforms.Result{}, platforms.Userf(
			fmt.Errorf("mark %s revision %s: it now runs %s: %w", a.Target(), rev.ID, found.Artifact, platforms.ErrConflict),
			"revision %s of %s is now %s, not %s (the history changed); nothing was marked: check the history and mark again",
			rev.ID, a.Target(), found.Label(), rev.Artifact)
	}
	if found.DoNotDeploy {
		return platforms.Result{Outcome: platforms.Skipped,
			Detail: fmt.Sprintf("revision %s of %s is already marked DO_NOT_DEPLOY (%s)", found.Label(), a.Target(), found.DoNotDeployBy)}, nil
	}
	who := by
	if who == "" {
		who = "rollbot"
	}
	mark := fmt.Sprintf("%s at %s", who, a.now().UTC().Format("2006-01-02T15:04:05Z07:00"))
	ops := []patchOp{
		{Op: "test", Path: "/metadata/uid", Value: string(rs.UID)},
		{Op: "test", Path: "/metadata/annotations/" + pointer(revisionAnnotation), Value: rs.Annotations[revisionAnnotation]},
		{Op: "add", Path: "/metadata/annotations/" + pointer(AnnotationDoNotDeploy), Value: "true"},
		{Op: "add", Path: "/metadata/annotations/" + pointer(AnnotationDoNotDeployBy), Value: mark},
	}
	body, err := json.Marshal(ops)
	if err != nil {
		return platforms.Result{}, fmt.Errorf("encode patch for %s: %w", a.Target(), err)
	}
	if _, err := a.replicaSets.Patch(ctx, rs.Name, types.JSONPatchType, body, metav1.PatchOptions{FieldManager: "rollbot"}); err != nil {
		if isTestFailed(err) {
			return platforms.Result{}, platforms.Userf(fmt.Errorf("mark %s revision %s: %w: %w", a.Target(), found.ID, platforms.ErrConflict, err),
				"revision %s of %s changed while rollbot was marking it; nothing was marked: check the history and mark again", found.Label(), a.Target())
		}
		return platforms.Result{}, a.apiError("patch", "replicasets", err)
	}
	a.log.InfoContext(ctx, "marked do-not-deploy", "op", "mark", "revision", found.ID, "artifact", found.Artifact, "by", who)
	return platforms.Result{Outcome: platforms.Done,
		Detail: fmt.Sprintf("marked revision %s of %s DO_NOT_DEPLOY (%s)", found.Label(), a.Target(), mark),
		Plan:   []string{fmt.Sprintf("replicaset %s/%s: annotate %s=true, %s=%q", a.cfg.Namespace, rs.Name, AnnotationDoNotDeploy, AnnotationDoNotDeployBy, mark)}}, nil
}

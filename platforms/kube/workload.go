package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"rollbot/platforms"
)

// Workload kinds of Config.Kind.
const (
	KindDeployment  = "deployment"
	KindStatefulSet = "statefulset"
	KindDaemonSet   = "daemonset"
)

// annotationStoppedStrategy on a DaemonSet keeps, as JSON, the update
// strategy Stop replaced with OnDelete (DaemonSets cannot be paused); the
// rollback puts it back in the same write.
const annotationStoppedStrategy = "rollbot.dev/stopped-update-strategy"

// RevisionAdapter is the Kubernetes platform for one StatefulSet or
// DaemonSet. Their history is their ControllerRevisions; a rollback
// applies the target revision's stored template, as `kubectl rollout
// undo` does, in one patch conditional on the resourceVersion read. Stop
// is a StatefulSet partition at its replica count, or a DaemonSet's update
// strategy set to OnDelete: the way each can stop an update. With
// Config.Impersonate every write runs as the clicker's identity, exactly
// as the Deployment adapter's (forActor).
type RevisionAdapter struct {
	cfg  Config
	log  *slog.Logger
	cs   kubernetes.Interface
	now  func() time.Time
	poll time.Duration
	// rc is the client configuration NewPlatform built cs from; the
	// impersonating clients are built from it (nil: cannot impersonate).
	rc *rest.Config
	// as names the identity an impersonating copy writes with, for
	// messages: "bob@example.com (for <@U0BOB>)".
	as string
}

var (
	_ platforms.Platform  = (*RevisionAdapter)(nil)
	_ platforms.Fallbacks = (*RevisionAdapter)(nil)
)

// NewPlatform builds the adapter for cfg.Kind: a Deployment (New), a
// StatefulSet or a DaemonSet.
func NewPlatform(cfg Config, log *slog.Logger) (platforms.Platform, error) {
	if cfg.kind() == KindDeployment {
		a, err := New(cfg, log)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return a, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.workloadName(), err)
	}
	r := NewRevisionAdapter(cs, cfg, log)
	r.rc = rc
	return r, nil
}

// forActor is the adapter a write runs with: itself, or, when
// Config.Impersonate is set, a copy whose client impersonates the
// Kubernetes identity of the Slack user in ctx, chosen by identityFor as
// for a Deployment. Every write starts with it, before it reads what it
// writes: a clicker without an identity is refused before anything.
func (r *RevisionAdapter) forActor(ctx context.Context) (*RevisionAdapter, error) {
	act, err := r.cfg.identityFor(ctx, r.Target())
	if err != nil {
		return nil, err
	}
	if act == nil {
		return r, nil
	}
	rc, cs, err := act.client(r.rc, r.Target())
	if err != nil {
		return nil, err
	}
	b := *r
	b.cs, b.rc, b.as, b.log = cs, rc, act.as, r.log.With("as", act.User)
	return &b, nil
}

// NewRevisionAdapter builds a StatefulSet / DaemonSet adapter on cs.
func NewRevisionAdapter(cs kubernetes.Interface, cfg Config, log *slog.Logger) *RevisionAdapter {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &RevisionAdapter{cfg: cfg, cs: cs, now: time.Now, poll: 200 * time.Millisecond}
	r.log = log.With("target", r.Target())
	return r
}

// Kind implements platforms.Platform.
func (r *RevisionAdapter) Kind() string { return "kubernetes" }

// Target implements platforms.Platform: "statefulset prod/db (cluster east)".
func (r *RevisionAdapter) Target() string {
	t := r.cfg.kind() + " " + r.name()
	if r.cfg.Cluster != "" {
		t += " (cluster " + r.cfg.Cluster + ")"
	}
	return t
}

func (r *RevisionAdapter) name() string { return r.cfg.Namespace + "/" + r.cfg.workloadName() }

// workload is one read of the object, generic over the two kinds.
type workload struct {
	obj       metav1.Object
	template  *corev1.PodTemplateSpec
	selector  *metav1.LabelSelector
	desired   int
	paused    bool // stopped by rollbot (partition / OnDelete)
	done      bool // rollout complete
	message   string
	updated   int
	ready     int
	container string
}

func (r *RevisionAdapter) resource() string { return r.cfg.kind() + "s" }

func (r *RevisionAdapter) get(ctx context.Context) (*workload, any, error) {
	name := r.cfg.workloadName()
	if r.cfg.kind() == KindStatefulSet {
		s, err := r.cs.AppsV1().StatefulSets(r.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, nil, r.apiError("get", err)
		}
		w := &workload{obj: s, template: &s.Spec.Template, selector: s.Spec.Selector, desired: 1,
			updated: int(s.Status.UpdatedReplicas), ready: int(s.Status.ReadyReplicas)}
		if s.Spec.Replicas != nil {
			w.desired = int(*s.Spec.Replicas)
		}
		if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil && *ru.Partition > 0 {
			w.paused = true
		}
		w.done = s.Status.ObservedGeneration >= s.Generation && s.Status.UpdateRevision == s.Status.CurrentRevision &&
			w.updated >= w.desired && w.ready >= w.desired
		if !w.done && s.Status.ObservedGeneration >= s.Generation && w.paused {
			w.done = w.ready >= w.desired // a partitioned update is as far as it goes
		}
		w.message = fmt.Sprintf("Waiting for statefulset %q: %d of %d updated, %d ready...", s.Name, w.updated, w.desired, w.ready)
		if w.done {
			w.message = fmt.Sprintf("statefulset %q rolling update complete: %d pods at revision %s", s.Name, w.ready, s.Status.UpdateRevision)
		}
		w.container = r.containerName(&s.Spec.Template)
		return w, s, nil
	}
	d, err := r.cs.AppsV1().DaemonSets(r.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, r.apiError("get", err)
	}
	w := &workload{obj: d, template: &d.Spec.Template, selector: d.Spec.Selector, desired: int(d.Status.DesiredNumberScheduled),
		updated: int(d.Status.UpdatedNumberScheduled), ready: int(d.Status.NumberAvailable)}
	w.paused = d.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType && d.Annotations[annotationStoppedStrategy] != ""
	w.done = d.Status.ObservedGeneration >= d.Generation && w.updated >= w.desired && w.ready >= w.desired
	w.message = fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d of %d updated pods are available...", d.Name, w.ready, w.desired)
	if w.done {
		w.message = fmt.Sprintf("daemon set %q successfully rolled out", d.Name)
	}
	w.container = r.containerName(&d.Spec.Template)
	return w, d, nil
}

func (r *RevisionAdapter) containerName(t *corev1.PodTemplateSpec) string {
	for _, c := range t.Spec.Containers {
		if r.cfg.Container == "" || c.Name == r.cfg.Container {
			return c.Name
		}
	}
	return ""
}

// history lists the ControllerRevisions the workload controls, newest first.
func (r *RevisionAdapter) history(ctx context.Context, w *workload) ([]*appsv1.ControllerRevision, error) {
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil {
		return nil, fmt.Errorf("selector of %s: %w", r.Target(), err)
	}
	list, err := r.cs.AppsV1().ControllerRevisions(r.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, r.apiErrorOn("list", "controllerrevisions", err)
	}
	var out []*appsv1.ControllerRevision
	for i := range list.Items {
		cr := &list.Items[i]
		if ref := metav1.GetControllerOf(cr); ref != nil && ref.UID == w.obj.GetUID() {
			out = append(out, cr)
		}
	}
	slices.SortFunc(out, func(a, b *appsv1.ControllerRevision) int { return cmpInt(b.Revision, a.Revision) })
	return out, nil
}

// revisionTemplate decodes the pod template a ControllerRevision stores
// (its data is the patch `kubectl rollout undo` applies).
func revisionTemplate(cr *appsv1.ControllerRevision) (*corev1.PodTemplateSpec, error) {
	var data struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(cr.Data.Raw, &data); err != nil {
		return nil, fmt.Errorf("controllerrevision %s: %w", cr.Name, err)
	}
	return &data.Spec.Template, nil
}

func (r *RevisionAdapter) revision(cr *appsv1.ControllerRevision, container string) platforms.Revision {
	rev := platforms.Revision{ID: strconv.FormatInt(cr.Revision, 10), CreatedAt: cr.CreationTimestamp.Time,
		DoNotDeploy: cr.Annotations[AnnotationDoNotDeploy] == "true", DoNotDeployBy: cr.Annotations[AnnotationDoNotDeployBy]}
	if t, err := revisionTemplate(cr); err == nil {
		rev.Artifact = imageOf(&t.Spec, container)
		rev.ChangeCause = t.Annotations[changeCauseAnnotation]
	}
	return rev
}

// Snapshot implements platforms.Platform. The current revision is the
// newest ControllerRevision (the controllers renumber a revision that is
// rolled back to as the newest).
func (r *RevisionAdapter) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	w, _, err := r.get(ctx)
	if err != nil {
		return nil, err
	}
	crs, err := r.history(ctx, w)
	if err != nil {
		return nil, err
	}
	snap := &platforms.Snapshot{Paused: w.paused, RolloutInProgress: !w.done}
	for _, cr := range crs {
		snap.History = append(snap.History, r.revision(cr, w.container))
	}
	if len(crs) > 0 {
		snap.Current = snap.History[0]
		snap.DeployedAt = crs[0].CreationTimestamp.Time
	} else {
		snap.Current = platforms.Revision{Artifact: imageOf(&w.template.Spec, w.container)}
		snap.RolloutInProgress, snap.DeployedAt = true, r.now()
	}
	snap.Health, err = r.health(ctx, w)
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// health counts the workload's pods: Ready, and restarts in RestartWindow.
func (r *RevisionAdapter) health(ctx context.Context, w *workload) (platforms.Health, error) {
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil {
		return platforms.Health{}, err
	}
	list, err := r.cs.CoreV1().Pods(r.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return platforms.Health{}, r.apiErrorOn("list", "pods", err)
	}
	h := platforms.Health{Known: true, RestartWindow: RestartWindow, Desired: w.desired}
	since := r.now().Add(-RestartWindow)
	for i := range list.Items {
		p := &list.Items[i]
		if ref := metav1.GetControllerOf(p); ref == nil || ref.UID != w.obj.GetUID() || p.DeletionTimestamp != nil {
			continue
		}
		if podReady(p) {
			h.Ready++
		}
		start := p.CreationTimestamp.Time
		if p.Status.StartTime != nil {
			start = p.Status.StartTime.Time
		}
		for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
			h.Restarts += restartsSince(cs, start, since)
		}
	}
	h.Detail = fmt.Sprintf("%d/%d pods Ready", h.Ready, h.Desired)
	if h.Restarts > 0 {
		h.Detail += fmt.Sprintf(", %d restarts in %s", h.Restarts, shortDuration(RestartWindow))
	}
	return h, nil
}

// patch applies a strategic merge patch carrying the resourceVersion read
// (a precondition: a concurrent change fails it with 409).
func (r *RevisionAdapter) patch(ctx context.Context, rv string, body map[string]any, dryRun bool) error {
	body["metadata"] = mergeMap(body["metadata"], map[string]any{"resourceVersion": rv})
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "rollbot"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	name := r.cfg.workloadName()
	if r.cfg.kind() == KindStatefulSet {
		_, err = r.cs.AppsV1().StatefulSets(r.cfg.Namespace).Patch(ctx, name, types.StrategicMergePatchType, b, opts)
	} else {
		_, err = r.cs.AppsV1().DaemonSets(r.cfg.Namespace).Patch(ctx, name, types.StrategicMergePatchType, b, opts)
	}
	if err != nil {
		return r.apiError("patch", err)
	}
	return nil
}

// patchOf is patch on the resourceVersion of w, as read. The controller
// updates the object's status all the time, and each update changes the
// resourceVersion: a conflict whose object still has w's generation (its
// spec unchanged) is retried on the new resourceVersion, a few times;
// one whose spec changed is not (someone else wrote it).
func (r *RevisionAdapter) patchOf(ctx context.Context, w *workload, body map[string]any, dryRun bool) error {
	rv := w.obj.GetResourceVersion()
	for try := 0; ; try++ {
		err := r.patch(ctx, rv, body, dryRun)
		if err == nil || !errors.Is(err, platforms.ErrConflict) || try == 4 {
			return err
		}
		cur, _, gerr := r.get(ctx)
		if gerr != nil || cur.obj.GetGeneration() != w.obj.GetGeneration() {
			return err
		}
		rv = cur.obj.GetResourceVersion()
	}
}

func mergeMap(a any, b map[string]any) map[string]any {
	m, _ := a.(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

// Stop implements platforms.Platform. StatefulSet: partition = replicas
// (no more pods are updated); DaemonSet: update strategy OnDelete (its
// old strategy kept in an annotation). Already stopped → Skipped.
func (r *RevisionAdapter) Stop(ctx context.Context, dryRun bool) (platforms.Result, error) {
	r, err := r.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	w, raw, err := r.get(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	if w.paused {
		return platforms.Result{Outcome: platforms.Skipped, Detail: r.Target() + " is already stopped"}, nil
	}
	var body map[string]any
	var plan string
	if _, ok := raw.(*appsv1.StatefulSet); ok {
		body = map[string]any{"spec": map[string]any{"updateStrategy": map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"partition": w.desired}}}}
		plan = fmt.Sprintf("statefulset %s: partition %d (no more pods updated)", r.name(), w.desired)
	} else {
		d := raw.(*appsv1.DaemonSet)
		old, _ := json.Marshal(d.Spec.UpdateStrategy)
		body = map[string]any{
			"metadata": map[string]any{"annotations": map[string]any{annotationStoppedStrategy: string(old)}},
			"spec":     map[string]any{"updateStrategy": map[string]any{"type": "OnDelete", "rollingUpdate": nil}},
		}
		plan = fmt.Sprintf("daemonset %s: update strategy OnDelete (was %s)", r.name(), old)
	}
	if err := r.patchOf(ctx, w, body, dryRun); err != nil {
		return platforms.Result{}, err
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: []string{plan}, Detail: "dry run: would stop the update of " + r.Target()}, nil
	}
	return platforms.Result{Outcome: platforms.Done, Plan: []string{plan}, Detail: "stopped the update of " + r.Target()}, nil
}

// resumeFields ends rollbot's stop in the rollback's own write.
func (r *RevisionAdapter) resumeFields(w *workload, raw any, body map[string]any) {
	spec := mergeMap(body["spec"], nil)
	body["spec"] = spec
	if _, ok := raw.(*appsv1.StatefulSet); ok {
		spec["updateStrategy"] = map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"partition": 0}}
		return
	}
	d := raw.(*appsv1.DaemonSet)
	var old appsv1.DaemonSetUpdateStrategy
	if json.Unmarshal([]byte(d.Annotations[annotationStoppedStrategy]), &old) != nil || old.Type == "" {
		old.Type = appsv1.RollingUpdateDaemonSetStrategyType
	}
	spec["updateStrategy"] = old
	body["metadata"] = mergeMap(body["metadata"], map[string]any{"annotations": map[string]any{annotationStoppedStrategy: nil}})
}

// Rollback implements platforms.Platform: the target ControllerRevision's
// template is applied (and rollbot's stop ended) in one patch carrying the
// resourceVersion read, then it waits for the controller to converge.
func (r *RevisionAdapter) Rollback(ctx context.Context, to platforms.Revision, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	r, err := r.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	w, raw, err := r.get(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	crs, err := r.history(ctx, w)
	if err != nil {
		return platforms.Result{}, err
	}
	var target *appsv1.ControllerRevision
	var ids []string
	for _, cr := range crs {
		ids = append(ids, r.revision(cr, w.container).Label())
		if strconv.FormatInt(cr.Revision, 10) == to.ID {
			target = cr
		}
	}
	if target == nil {
		return platforms.Result{}, platforms.Userf(fmt.Errorf("rollback %s to %q: %w", r.Target(), to.ID, platforms.ErrNotFound),
			"%s has no revision %q; available revisions: %v", r.Target(), to.ID, ids)
	}
	tmpl, err := revisionTemplate(target)
	if err != nil {
		return platforms.Result{}, err
	}
	tr := r.revision(target, w.container)
	same := imageOf(&tmpl.Spec, w.container) == imageOf(&w.template.Spec, w.container) && target == crs[0]
	if same && !w.paused {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s is already at revision %s", r.Target(), tr.Label())}, nil
	}
	body := map[string]any{}
	var data map[string]any
	if err := json.Unmarshal(target.Data.Raw, &data); err != nil {
		return platforms.Result{}, fmt.Errorf("controllerrevision %s: %w", target.Name, err)
	}
	body["spec"] = data["spec"]
	plan := []string{fmt.Sprintf("%s %s: pod template -> revision %s", r.cfg.kind(), r.name(), tr.Label())}
	if w.paused {
		r.resumeFields(w, raw, body)
		plan = append(plan, fmt.Sprintf("%s %s: end rollbot's stop", r.cfg.kind(), r.name()))
	}
	if err := r.patchOf(ctx, w, body, dryRun); err != nil {
		return platforms.Result{}, err
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan, Detail: "dry run: the API server accepted rolling back " + r.Target() + " to revision " + tr.Label()}, nil
	}
	r.log.InfoContext(ctx, "rollback written", "op", "rollback", "to", tr.Label())
	final, err := r.wait(ctx, progress)
	if err != nil {
		return platforms.Result{}, err
	}
	return platforms.Result{Outcome: platforms.Done, Plan: plan,
		Detail: fmt.Sprintf("rolled back %s to revision %s: %d/%d pods ready", r.Target(), tr.Label(), final.ready, final.desired)}, nil
}

// wait polls until the controller reports the rollout complete.
func (r *RevisionAdapter) wait(ctx context.Context, progress platforms.ProgressFunc) (*workload, error) {
	timeout := r.cfg.RolloutTimeout
	if timeout == 0 {
		timeout = defaultRevisionRolloutTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(r.poll)
	defer t.Stop()
	for {
		w, _, err := r.get(ctx)
		if err != nil {
			return nil, err
		}
		if progress != nil {
			progress(platforms.Progress{Message: w.message, Updated: w.updated, Ready: w.ready, Desired: w.desired, Done: w.done})
		}
		if w.done {
			return w, nil
		}
		select {
		case <-ctx.Done():
			return nil, platforms.Userf(ctx.Err(), "%s did not finish rolling out within %s: %s", r.Target(), timeout, w.message)
		case <-t.C:
		}
	}
}

// SetArtifact implements platforms.Fallbacks: the container's image set
// explicitly (ending rollbot's stop), then the wait.
func (r *RevisionAdapter) SetArtifact(ctx context.Context, artifact string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	r, err := r.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	w, raw, err := r.get(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	body := map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []map[string]any{{"name": w.container, "image": artifact}}}}}}
	if w.paused {
		r.resumeFields(w, raw, body)
	}
	if err := r.patchOf(ctx, w, body, dryRun); err != nil {
		return platforms.Result{}, err
	}
	plan := []string{fmt.Sprintf("%s %s: container %s image -> %s", r.cfg.kind(), r.name(), w.container, artifact)}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan, Detail: "dry run: would set the image of " + r.Target()}, nil
	}
	final, err := r.wait(ctx, progress)
	if err != nil {
		return platforms.Result{}, err
	}
	return platforms.Result{Outcome: platforms.Done, Plan: plan, Detail: fmt.Sprintf("set %s to %s: %d/%d pods ready", r.Target(), artifact, final.ready, final.desired)}, nil
}

// ScaleToZero implements platforms.Fallbacks for a StatefulSet. A
// DaemonSet runs one pod per node and has no replica count.
func (r *RevisionAdapter) ScaleToZero(ctx context.Context, dryRun bool) (platforms.Result, error) {
	r, err := r.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	w, _, err := r.get(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	if r.cfg.kind() == KindDaemonSet {
		return platforms.Result{}, platforms.Userf(nil, "a DaemonSet cannot be scaled to zero; delete %s or change its node selector by hand", r.Target())
	}
	if err := r.patchOf(ctx, w, map[string]any{"spec": map[string]any{"replicas": 0}}, dryRun); err != nil {
		return platforms.Result{}, err
	}
	plan := []string{fmt.Sprintf("statefulset %s: replicas %d -> 0", r.name(), w.desired)}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan, Detail: "dry run: would scale " + r.Target() + " to zero"}, nil
	}
	return platforms.Result{Outcome: platforms.Done, Plan: plan, Detail: "scaled " + r.Target() + " to zero"}, nil
}

// MarkDoNotDeploy implements platforms.Platform: an annotation on the
// revision's ControllerRevision.
func (r *RevisionAdapter) MarkDoNotDeploy(ctx context.Context, rev platforms.Revision, by string) (platforms.Result, error) {
	r, err := r.forActor(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	w, _, err := r.get(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	crs, err := r.history(ctx, w)
	if err != nil {
		return platforms.Result{}, err
	}
	for _, cr := range crs {
		got := r.revision(cr, w.container)
		if (rev.ID != "" && got.ID != rev.ID) || (rev.ID == "" && got.Artifact != rev.Artifact) {
			continue
		}
		if got.DoNotDeploy {
			return platforms.Result{Outcome: platforms.Skipped, Detail: "revision " + got.Label() + " is already marked DO_NOT_DEPLOY"}, nil
		}
		mark := fmt.Sprintf("%s at %s", firstNonEmpty(by, "rollbot"), r.now().UTC().Format(time.RFC3339))
		body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": cr.ResourceVersion,
			"annotations": map[string]string{AnnotationDoNotDeploy: "true", AnnotationDoNotDeployBy: mark}}})
		if _, err := r.cs.AppsV1().ControllerRevisions(r.cfg.Namespace).Patch(ctx, cr.Name, types.MergePatchType, body, metav1.PatchOptions{FieldManager: "rollbot"}); err != nil {
			return platforms.Result{}, r.apiErrorOn("patch", "controllerrevisions", err)
		}
		return platforms.Result{Outcome: platforms.Done, Detail: fmt.Sprintf("marked revision %s of %s DO_NOT_DEPLOY (%s)", got.Label(), r.Target(), mark)}, nil
	}
	return platforms.Result{}, platforms.Userf(fmt.Errorf("mark %s %s: %w", r.Target(), rev.Label(), platforms.ErrNotFound), "%s has no revision %s to mark DO_NOT_DEPLOY", r.Target(), rev.Label())
}

func (r *RevisionAdapter) apiError(verb string, err error) error {
	return r.apiErrorOn(verb, r.resource(), err)
}

func (r *RevisionAdapter) apiErrorOn(verb, resource string, err error) error {
	cause := fmt.Errorf("%s %s for %s: %w", verb, resource, r.Target(), err)
	switch {
	case apierrors.IsForbidden(err) && r.as != "":
		return refusedAs(r.as, cause, err)
	case apierrors.IsForbidden(err):
		return platforms.Userf(cause, "rollbot may not %s %s in %s: the cluster said %q; grant the %s Role (%s)", verb, resource, r.cfg.Namespace, statusMessage(err), WorkloadsRole, RBACFile)
	case apierrors.IsNotFound(err) && resource == r.resource():
		return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrNotFound, cause), "%s not found: check `namespace:`, `kind:` and `name:` in rollbot's config", r.Target())
	case apierrors.IsConflict(err):
		return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrConflict, cause), "%s changed while rollbot was writing it, so rollbot changed nothing: check its state and try again", r.Target())
	case isNetError(err):
		return platforms.Userf(cause, "cannot reach the Kubernetes API for %s", r.name())
	}
	return cause
}

// WorkloadsRole is the Role of deploy/kubernetes/rbac.yaml for StatefulSets
// and DaemonSets.
const WorkloadsRole = "rollbot-workloads"

// WorkloadPermissions is every permission the RevisionAdapter uses,
// exactly the rules of WorkloadsRole in RBACFile (a test keeps them
// equal): the StatefulSet or DaemonSet read and patched (by name), its
// ControllerRevisions listed (by label) and annotated, its pods listed.
var WorkloadPermissions = []Permission{
	{"apps", "statefulsets", "get"},
	{"apps", "statefulsets", "patch"},
	{"apps", "daemonsets", "get"},
	{"apps", "daemonsets", "patch"},
	{"apps", "controllerrevisions", "list"},
	{"apps", "controllerrevisions", "patch"},
	{"", "pods", "list"},
}

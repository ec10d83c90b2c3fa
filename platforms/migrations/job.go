package migrations

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"rollbot/platforms"
)

// Labels on every down Job rollbot creates.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelOperation = "rollbot.io/operation"
	// LabelIncident carries the incident's id (IncidentLabel) on the down
	// Job and its pod: `kubectl get jobs -l rollbot.io/incident=RB-42`.
	// The exact id is also in the annotation of the same name.
	LabelIncident = "rollbot.io/incident"
	// controllerUIDLabel is set by the Job controller on the Job's pods.
	controllerUIDLabel = "batch.kubernetes.io/controller-uid"
	downContainer      = "db-down"
	// KeepFinishedJob is how long a finished Job and its pod (and log) stay
	// for the postmortem.
	KeepFinishedJob = 24 * time.Hour
	// failTailLines is how many of the Job's last log lines a failure
	// message quotes.
	failTailLines = 5
)

// JobRole is the Role in deploy/kubernetes/rbac.yaml that grants exactly
// JobPermissions in the namespace of the down Jobs. It is separate from
// the Kubernetes adapter's Role "rollbot": creating Jobs lets whoever holds
// it run any image with any Secret of the namespace, so grant it only
// where services roll their database back with kind kubernetes_job.
const JobRole = "rollbot-db-migrations"

// JobPermission is one verb on one resource of DownConfig.Namespace.
type JobPermission struct {
	Group    string // "" for the core group
	Resource string // "jobs", "pods/log"
	Verb     string
}

func (p JobPermission) String() string { return "`" + p.Verb + "` on " + p.Resource }

// JobPermissions is every permission JobRunner uses, exactly the rules of
// JobRole (a test keeps them equal). Run checks them all before it creates
// a Job, so that it never starts a down migration it could not follow.
var JobPermissions = []JobPermission{
	{"batch", "jobs", "create"},
	{"batch", "jobs", "get"},
	{"batch", "jobs", "watch"},
	{"batch", "jobs", "delete"}, // a Job whose pod cannot start, so it never runs unobserved later
	{"", "pods", "list"},
	{"", "pods/log", "get"},
}

// DownJob builds the batch/v1 Job that runs the down command with image
// (normally the bad release's: DownConfig.ImageFor) for incident: named
// JobName(incident) — so that a second attempt for the same incident
// finds it and a second create of it fails — and labelled with
// IncidentLabel(incident). It never retries
// (backoffLimit 0: a half-run down migration must not run twice), is bounded
// by cfg.Timeout (activeDeadlineSeconds) and is kept KeepFinishedJob after
// it ends. The container gets vars (Report.DownVars), cfg.Env and
// cfg.SecretEnv as secretKeyRef variables, and every key of
// cfg.EnvFromSecret; Kubernetes itself expands $(NAME) in the command.
func DownJob(cfg DownConfig, incident, image string, vars map[string]string) *batchv1.Job {
	labels := map[string]string{LabelManagedBy: "rollbot", LabelOperation: "db-down", LabelIncident: IncidentLabel(incident)}
	var env []corev1.EnvVar
	for _, k := range sortedKeys(vars) {
		if _, over := cfg.Env[k]; over {
			continue
		}
		if _, over := cfg.SecretEnv[k]; over {
			continue
		}
		env = append(env, corev1.EnvVar{Name: k, Value: vars[k]})
	}
	for _, k := range sortedKeys(cfg.Env) {
		env = append(env, corev1.EnvVar{Name: k, Value: cfg.Env[k]})
	}
	for _, k := range sortedKeys(cfg.SecretEnv) {
		ref := cfg.SecretEnv[k]
		env = append(env, corev1.EnvVar{Name: k, ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: ref.Secret},
				Key:                  ref.Key,
			},
		}})
	}
	var envFrom []corev1.EnvFromSource
	if cfg.EnvFromSecret != "" {
		envFrom = append(envFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cfg.EnvFromSecret},
		}})
	}
	deadline := int64(cfg.timeout() / time.Second)
	ttl := int32(KeepFinishedJob / time.Second)
	return &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        JobName(incident),
			Namespace:   cfg.Namespace,
			Labels:      labels,
			Annotations: map[string]string{LabelIncident: incident},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit:            new(int32(0)),
			Completions:             new(int32(1)),
			Parallelism:             new(int32(1)),
			ActiveDeadlineSeconds:   &deadline,
			TTLSecondsAfterFinished: &ttl,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					ServiceAccountName:           cfg.ServiceAccount,
					AutomountServiceAccountToken: new(cfg.ServiceAccount != ""),
					Containers: []corev1.Container{{
						Name:            downContainer,
						Image:           image,
						Command:         append([]string(nil), cfg.Command...),
						Env:             env,
						EnvFrom:         envFrom,
						ImagePullPolicy: corev1.PullIfNotPresent,
					}},
				},
			},
		},
	}
}

// jobNamePrefix starts every down Job's name.
const jobNamePrefix = "rollbot-db-down-"

// JobName is the name of incident's down Job: jobNamePrefix and the id in
// lower case with anything but letters and digits as single hyphens
// ("RB-42" → rollbot-db-down-rb-42). A Job's name is at most 63 characters
// (its pods carry it as a label): a longer id is shortened and ends with
// a hash of the whole id. Two ids that differ only in case or punctuation
// get the same name: the annotation tells them apart (Run never attaches
// to another incident's Job).
func JobName(incident string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(incident) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	id := strings.TrimRight(b.String(), "-")
	const room = 63 - len(jobNamePrefix)
	if id == "" || len(id) > room {
		id = strings.TrimRight(id[:min(len(id), room-9)], "-")
		if id != "" {
			id += "-"
		}
		id += shortHash(incident)
	}
	return jobNamePrefix + id
}

var labelValueRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)

// IncidentLabel is incident as a label value: itself when it is one
// (at most 63 letters, digits, '-', '_', '.', starting and ending with a
// letter or digit), else its valid characters, shortened, and a hash of
// the whole id.
func IncidentLabel(incident string) string {
	if labelValueRe.MatchString(incident) {
		return incident
	}
	var b strings.Builder
	for _, c := range incident {
		if c < 128 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b.WriteRune(c)
		}
	}
	v := strings.Trim(b.String(), "-_.")
	v = strings.TrimRight(v[:min(len(v), 54)], "-_.")
	if v != "" {
		v += "-"
	}
	return v + shortHash(incident)
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:4])
}

// jobAPI is the part of the Kubernetes API the runner uses.
type jobAPI interface {
	allowed(ctx context.Context, ns string, p JobPermission) (bool, error)
	createJob(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error)
	getJob(ctx context.Context, ns, name string) (*batchv1.Job, error)
	watchJob(ctx context.Context, ns, name, resourceVersion string) (watch.Interface, error)
	deleteJob(ctx context.Context, ns, name string, uid types.UID) error
	jobPods(ctx context.Context, ns string, uid types.UID) ([]corev1.Pod, error)
	podLogs(ctx context.Context, ns, pod string, follow bool) (io.ReadCloser, error)
}

type clientsetJobs struct{ cs kubernetes.Interface }

func (c clientsetJobs) allowed(ctx context.Context, ns string, p JobPermission) (bool, error) {
	res, sub, _ := strings.Cut(p.Resource, "/")
	r, err := c.cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: ns, Group: p.Group, Resource: res, Subresource: sub, Verb: p.Verb,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return r.Status.Allowed, nil
}

func (c clientsetJobs) createJob(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error) {
	return c.cs.BatchV1().Jobs(job.Namespace).Create(ctx, job, metav1.CreateOptions{})
}

func (c clientsetJobs) getJob(ctx context.Context, ns, name string) (*batchv1.Job, error) {
	return c.cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
}

func (c clientsetJobs) watchJob(ctx context.Context, ns, name, rv string) (watch.Interface, error) {
	return c.cs.BatchV1().Jobs(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name, ResourceVersion: rv})
}

func (c clientsetJobs) deleteJob(ctx context.Context, ns, name string, uid types.UID) error {
	bg := metav1.DeletePropagationBackground
	return c.cs.BatchV1().Jobs(ns).Delete(ctx, name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &bg,
	})
}

func (c clientsetJobs) jobPods(ctx context.Context, ns string, uid types.UID) ([]corev1.Pod, error) {
	l, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: controllerUIDLabel + "=" + string(uid)})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (c clientsetJobs) podLogs(ctx context.Context, ns, pod string, follow bool) (io.ReadCloser, error) {
	return c.cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: downContainer, Follow: follow}).Stream(ctx)
}

// JobRunner runs kind kubernetes_job down configurations.
type JobRunner struct {
	api  jobAPI
	log  *slog.Logger
	poll time.Duration
}

// NewJobRunner uses cs for the cluster the service runs in; its identity
// needs JobPermissions in the Jobs' namespace (JobRole).
func NewJobRunner(cs kubernetes.Interface, log *slog.Logger) *JobRunner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &JobRunner{api: clientsetJobs{cs}, log: log, poll: time.Second}
}

// CheckAccess asks the API server (SelfSubjectAccessReview) whether the
// runner's credentials have every JobPermissions entry in ns. A user error
// lists what is missing. Run calls it before it creates a Job; the bot may
// call it at start-up too.
func (r *JobRunner) CheckAccess(ctx context.Context, ns string) error {
	var missing []string
	for _, p := range JobPermissions {
		ok, err := r.api.allowed(ctx, ns, p)
		if err != nil {
			return apiError("create", "selfsubjectaccessreviews", ns, err)
		}
		if !ok {
			missing = append(missing, p.String())
		}
	}
	if len(missing) > 0 {
		return platforms.Userf(fmt.Errorf("check access for down jobs in %s: missing %s", ns, strings.Join(missing, ", ")),
			"rollbot may not run the down Job in namespace %s: add %s to the Role %s bound to rollbot there (deploy/kubernetes/rbac.yaml)",
			ns, strings.Join(missing, ", "), JobRole)
	}
	return nil
}

// JobRun is the down Job Run followed.
type JobRun struct {
	// Name is the Job's name in DownConfig.Namespace.
	Name string
	// Image is what its container runs.
	Image string
	// Attached is set when the Job was started by an earlier attempt for
	// the same incident (a replica that stopped) and Run only followed it.
	Attached bool
}

// Find returns the name of incident's down Job in ns, or "" when there is
// none. A Job with that name that belongs to another incident (see
// JobName) is a user error: rollbot neither follows nor replaces it.
func (r *JobRunner) Find(ctx context.Context, ns, incident string) (string, error) {
	j, err := r.find(ctx, ns, incident)
	if err != nil || j == nil {
		return "", err
	}
	return j.Name, nil
}

func (r *JobRunner) find(ctx context.Context, ns, incident string) (*batchv1.Job, error) {
	name := JobName(incident)
	j, err := r.api.getJob(ctx, ns, name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, apiError("get", "jobs", ns, err)
	}
	if owner := j.Annotations[LabelIncident]; owner != incident {
		return nil, platforms.Userf(fmt.Errorf("job %s/%s: annotation %s is %q, not %q", ns, name, LabelIncident, owner, incident),
			"a Job named %s already exists in namespace %s, but it was not started for %s: rollbot does not follow or replace it. Check the migration table and that Job, and roll the database back by hand", name, ns, incident)
	}
	return j, nil
}

// Run checks the runner's permissions (CheckAccess), then looks for
// incident's down Job (Find): when there is one — started by an earlier
// attempt, on a replica that stopped — it attaches to it and never creates
// a second; else it creates the down Job (DownJob) with image. Either way
// it streams the pod's log to out line by line (one Write per line,
// newline included) as the pod writes it (from its first line, also for a
// Job that has already ended), and waits until the Job completes or
// fails. It returns the Job (also on failure, once found or created) for
// the timeline. The first line of out says which of the two happened:
// "job <ns>/<name> created with image …" or "attached to job <ns>/<name>
// started by an earlier attempt (image …)". image is used only to create.
//
// A Job that fails is a user error naming the exit code (or the Job's
// reason, such as its deadline) with the last lines of its log. A Job whose
// pod cannot start (its image cannot be pulled, say) is deleted, so that it
// never runs a down migration later, unobserved; so is one that has not
// started when ctx ends. A Job whose pod has started is never deleted: a
// down migration stopped half-way is worse than one that finishes.
func (r *JobRunner) Run(ctx context.Context, cfg DownConfig, incident, image string, vars map[string]string, out io.Writer) (JobRun, error) {
	if cfg.Kind != DownKubernetesJob {
		return JobRun{}, fmt.Errorf("run down job: kind %q: JobRunner runs kind kubernetes_job", cfg.Kind)
	}
	if err := cfg.Validate(); err != nil {
		return JobRun{}, fmt.Errorf("run down job: %w", err)
	}
	if incident == "" {
		return JobRun{}, errors.New("run down job: no incident id")
	}
	ns := cfg.Namespace
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout()+time.Minute)
	defer cancel()
	if err := r.CheckAccess(ctx, ns); err != nil {
		return JobRun{}, err
	}
	job, err := r.find(ctx, ns, incident)
	if err != nil {
		return JobRun{}, err
	}
	attached := job != nil
	if !attached {
		if image == "" {
			return JobRun{}, platforms.Userf(errors.New("run down job: no image"), "no image for the down Job: the bad release's image is not known")
		}
		job, err = r.api.createJob(ctx, DownJob(cfg, incident, image, vars))
		if apierrors.IsAlreadyExists(err) {
			// Created since find looked: by another attempt for this
			// incident (or another incident's of the same name, which
			// find refuses).
			if job, err = r.find(ctx, ns, incident); err == nil && job == nil {
				err = fmt.Errorf("run down job: job %s/%s exists but cannot be read", ns, JobName(incident))
			}
			if err != nil {
				return JobRun{}, err
			}
			attached = true
		} else if err != nil {
			return JobRun{}, apiError("create", "jobs", ns, err)
		}
	}
	ref := ns + "/" + job.Name
	run := JobRun{Name: job.Name, Attached: attached}
	if cs := job.Spec.Template.Spec.Containers; len(cs) > 0 {
		run.Image = cs[0].Image
	}
	log := r.log.With("op", "db-down", "job", ref, "incident", incident)
	if attached {
		if job.DeletionTimestamp != nil {
			return run, platforms.Userf(fmt.Errorf("job %s is being deleted", ref),
				"the down Job %s started by an earlier attempt is being deleted (not yet started, or deleted by hand): rollbot does not start a second one. Check the migration table before anything else", ref)
		}
		log.InfoContext(ctx, "attached to the down job started by an earlier attempt", "image", run.Image)
		fmt.Fprintf(out, "attached to job %s started by an earlier attempt (image %s)\n", ref, run.Image)
	} else {
		log.InfoContext(ctx, "down job created", "image", image)
		fmt.Fprintf(out, "job %s created with image %s\n", ref, image)
	}

	tail := &lineTail{w: out, max: failTailLines}
	pod, done, err := r.waitStart(ctx, job)
	if err != nil {
		return run, err
	}
	var logs *logStream
	if pod != "" {
		log.InfoContext(ctx, "down job pod started", "pod", pod)
		logs = r.follow(ctx, ns, pod, tail)
	}
	if done == nil {
		done, err = r.waitDone(ctx, job)
	}
	if logs != nil {
		r.finishLogs(ctx, ns, pod, logs, tail, log)
	}
	if err != nil {
		return run, err
	}
	if err := r.outcome(ctx, cfg, done, pod, tail.lines()); err != nil {
		log.WarnContext(ctx, "down job failed", "err", err)
		return run, err
	}
	log.InfoContext(ctx, "down job complete")
	return run, nil
}

// waitStart polls the Job and its pods until the pod has started (running
// or already ended: its log exists), or the Job ended without one. A pod
// that cannot start, or ctx ending first, deletes the Job.
func (r *JobRunner) waitStart(ctx context.Context, job *batchv1.Job) (pod string, done *batchv1.Job, err error) {
	ns, ref := job.Namespace, job.Namespace+"/"+job.Name
	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	for {
		j, err := r.api.getJob(ctx, ns, job.Name)
		if err != nil {
			return "", nil, r.gone(ref, apiError("get", "jobs", ns, err), err)
		}
		if _, _, finished := jobFinished(j); finished {
			done = j
		}
		pods, err := r.api.jobPods(ctx, ns, job.UID)
		if err != nil {
			return "", nil, apiError("list", "pods", ns, err)
		}
		for _, p := range pods {
			switch p.Status.Phase {
			case corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed:
				return p.Name, done, nil
			}
		}
		if done != nil {
			return "", done, nil
		}
		for _, p := range pods {
			if why := podStuck(p); why != "" {
				cause := fmt.Errorf("job %s pod %s: %s", ref, p.Name, why)
				if derr := r.deleteJob(ctx, job); derr != nil {
					return "", nil, platforms.Userf(fmt.Errorf("%w; delete job: %w", cause, derr),
						"the down Job %s cannot start (%s) and rollbot could not delete it: delete it by hand before it starts unobserved (`kubectl -n %s delete job %s`)", ref, why, ns, job.Name)
				}
				return "", nil, platforms.Userf(cause,
					"the down Job %s cannot start (%s); rollbot deleted it so that it cannot run later unobserved. The database was not changed", ref, why)
			}
		}
		select {
		case <-ctx.Done():
			cause := fmt.Errorf("job %s did not start: %w", ref, ctx.Err())
			if derr := r.deleteJob(ctx, job); derr != nil {
				return "", nil, platforms.Userf(fmt.Errorf("%w; delete job: %w", cause, derr),
					"the down Job %s did not start in time and rollbot could not delete it: delete it by hand before it starts unobserved (`kubectl -n %s delete job %s`)", ref, ns, job.Name)
			}
			return "", nil, platforms.Userf(cause, "the down Job %s did not start in time; rollbot deleted it. The database was not changed", ref)
		case <-tick.C:
		}
	}
}

// deleteJob deletes job and its pods, even when ctx has ended.
func (r *JobRunner) deleteJob(ctx context.Context, job *batchv1.Job) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := r.api.deleteJob(ctx, job.Namespace, job.Name, job.UID)
	if err != nil && !apierrors.IsNotFound(err) {
		return apiError("delete", "jobs", job.Namespace, err)
	}
	r.log.InfoContext(ctx, "down job deleted before it started", "op", "db-down", "job", job.Namespace+"/"+job.Name)
	return nil
}

// gone turns "the Job is not found" into a user error saying so.
func (r *JobRunner) gone(ref string, wrapped, cause error) error {
	if apierrors.IsNotFound(cause) {
		return platforms.Userf(wrapped, "the down Job %s was deleted before it finished (not by rollbot): check the migration table before anything else", ref)
	}
	return wrapped
}

// waitDone watches the Job until it has completed or failed.
func (r *JobRunner) waitDone(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error) {
	ns, ref := job.Namespace, job.Namespace+"/"+job.Name
	for first := true; ; first = false {
		if !first {
			// The watch ended (server timeout, expired resourceVersion):
			// read the Job again and watch from there, not in a hot loop.
			select {
			case <-ctx.Done():
			case <-time.After(r.poll):
			}
		}
		if ctx.Err() != nil {
			return nil, r.stoppedWaiting(ctx, ref)
		}
		j, err := r.api.getJob(ctx, ns, job.Name)
		if err != nil {
			if ctx.Err() != nil {
				return nil, r.stoppedWaiting(ctx, ref)
			}
			return nil, r.gone(ref, apiError("get", "jobs", ns, err), err)
		}
		if _, _, finished := jobFinished(j); finished {
			return j, nil
		}
		w, err := r.api.watchJob(ctx, ns, job.Name, j.ResourceVersion)
		if err != nil {
			if ctx.Err() != nil {
				return nil, r.stoppedWaiting(ctx, ref)
			}
			return nil, apiError("watch", "jobs", ns, err)
		}
		j, err = nextFinished(ctx, w, ref)
		w.Stop()
		if err != nil || j != nil {
			return j, err
		}
	}
}

// nextFinished reads w until the Job has finished (the Job), the watch
// ends (nil, nil) or the Job is deleted (an error).
func nextFinished(ctx context.Context, w watch.Interface, ref string) (*batchv1.Job, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, nil
			}
			switch ev.Type {
			case watch.Deleted:
				return nil, platforms.Userf(fmt.Errorf("job %s deleted while running", ref),
					"the down Job %s was deleted before it finished (not by rollbot): check the migration table before anything else", ref)
			case watch.Added, watch.Modified:
				if j, ok := ev.Object.(*batchv1.Job); ok {
					if _, _, finished := jobFinished(j); finished {
						return j, nil
					}
				}
			case watch.Error:
				return nil, nil
			}
		}
	}
}

func (r *JobRunner) stoppedWaiting(ctx context.Context, ref string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return platforms.Userf(fmt.Errorf("job %s: %w", ref, ctx.Err()),
			"the down Job %s did not finish in time (its own deadline should have stopped it): check it and the migration table before anything else", ref)
	}
	return platforms.Userf(fmt.Errorf("job %s: %w", ref, ctx.Err()),
		"rollbot stopped waiting for the down Job %s, which may still be running: check it and the migration table before anything else", ref)
}

// outcome is nil for a completed Job, else a user error saying why it
// failed, with the end of its log.
func (r *JobRunner) outcome(ctx context.Context, cfg DownConfig, j *batchv1.Job, pod string, tail []string) error {
	ref := j.Namespace + "/" + j.Name
	complete, reason, _ := jobFinished(j)
	if complete {
		return nil
	}
	cause := fmt.Errorf("job %s failed: %s", ref, reason)
	var what string
	switch {
	case strings.HasPrefix(reason, batchv1.JobReasonDeadlineExceeded):
		what = fmt.Sprintf("did not finish within its timeout of %s and was stopped", cfg.timeout())
	case pod == "":
		what = fmt.Sprintf("failed before its pod started (%s)", reason)
	default:
		what = fmt.Sprintf("failed (%s)", reason)
		// The exit code says more than the Job's reason.
		if pods, err := r.api.jobPods(ctx, j.Namespace, j.UID); err == nil {
			for _, p := range pods {
				if t := terminated(p); p.Name == pod && t != nil {
					what = fmt.Sprintf("failed: its container exited with code %d", t.ExitCode)
					if t.Reason != "" && t.Reason != "Error" {
						what += " (" + t.Reason + ")"
					}
					cause = fmt.Errorf("%w: pod %s exit code %d", cause, pod, t.ExitCode)
				}
			}
		}
	}
	msg := fmt.Sprintf("the down Job %s %s: check the migration table before anything else", ref, what)
	switch {
	case len(tail) > 0:
		msg += ". The end of its log:\n> " + strings.Join(tail, "\n> ")
	case pod != "":
		msg += ". It wrote no log"
	}
	return platforms.Userf(cause, "%s", msg)
}

// terminated is the down container's terminated state, if any.
func terminated(p corev1.Pod) *corev1.ContainerStateTerminated {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == downContainer {
			return cs.State.Terminated
		}
	}
	return nil
}

// logStream follows a pod's log in the background.
type logStream struct {
	cancel context.CancelFunc
	done   chan struct{}
	// Set before done is closed:
	lines int   // lines read and passed on
	ended bool  // the server ended the stream: the log is complete
	err   error // why it broke, when it did
}

// follow copies the pod's log to w as it is written.
func (r *JobRunner) follow(ctx context.Context, ns, pod string, w io.Writer) *logStream {
	ctx, cancel := context.WithCancel(ctx)
	s := &logStream{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		rc, err := r.api.podLogs(ctx, ns, pod, true)
		if err != nil {
			s.err = err
			return
		}
		defer rc.Close()
		s.lines, s.ended, s.err = copyNewLines(w, rc, 0)
	}()
	return s
}

// finishLogs stops the log stream and passes on whatever it missed. A
// kubelet ends a follow stream when the container stops, which is before
// the Job controller marks the Job finished; not every node does (kwok
// never ends it), and a stream can break: so when the stream is still open
// or broke, the finished container's whole log is read once more and the
// lines already passed on are skipped.
func (r *JobRunner) finishLogs(ctx context.Context, ns, pod string, s *logStream, w io.Writer, log *slog.Logger) {
	s.cancel()
	<-s.done
	log.DebugContext(ctx, "down job log stream stopped", "pod", pod, "lines", s.lines, "ended", s.ended, "err", s.err)
	if s.ended || ctx.Err() != nil {
		// Complete; or rollbot stopped waiting, which the error says.
		return
	}
	if s.err != nil && !errors.Is(s.err, context.Canceled) {
		log.WarnContext(ctx, "down job log stream broke; reading the log again", "pod", pod, "err", s.err)
	}
	rc, err := r.api.podLogs(ctx, ns, pod, false)
	if err == nil {
		defer rc.Close()
		_, _, err = copyNewLines(w, rc, s.lines)
	}
	if err != nil {
		log.WarnContext(ctx, "read down job log", "pod", pod, "err", err)
		fmt.Fprintf(w, "(rollbot could not read the rest of pod %s's log; kubectl -n %s logs %s)\n", pod, ns, pod)
	}
}

// copyNewLines reads r line by line and writes each line from the
// skip-th on to w, one Write per line with its newline, each line cut to
// maxLineBytes (readCappedLine). It returns how many lines it read and
// whether r ended cleanly (EOF: the last line is passed on even without a
// newline). When r breaks, a partial last line is dropped: the next read
// of the log (skip = n) passes it on whole.
func copyNewLines(w io.Writer, r io.Reader, skip int) (n int, ended bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, cut, rerr := readCappedLine(br)
		complete := rerr == nil
		if rerr != nil && errors.Is(rerr, io.EOF) && line != "" {
			line, complete = line+"\n", true
		}
		if complete && cut > 0 {
			line = strings.TrimSuffix(line, "\n") + cutMarker(cut) + "\n"
		}
		if complete {
			if n >= skip {
				if _, err := io.WriteString(w, line); err != nil {
					return n, false, fmt.Errorf("write output: %w", err)
				}
			}
			n++
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return n, true, nil
			}
			return n, false, rerr
		}
	}
}

// lineTail passes writes on to w and keeps the last max lines.
type lineTail struct {
	w   io.Writer
	max int

	mu   sync.Mutex
	last []string
}

func (t *lineTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	for l := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if len(l) > 300 {
			l = l[:300] + "…"
		}
		t.last = append(t.last, l)
		if len(t.last) > t.max {
			t.last = t.last[1:]
		}
	}
	t.mu.Unlock()
	return t.w.Write(p)
}

func (t *lineTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.last...)
}

// jobFinished reads the Job's terminal condition: complete, or failed
// with its reason ("BackoffLimitExceeded: Job has reached the specified
// backoff limit").
func jobFinished(j *batchv1.Job) (complete bool, reason string, finished bool) {
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return true, "", true
		case batchv1.JobFailed:
			reason := c.Reason
			if c.Message != "" {
				reason += ": " + c.Message
			}
			return false, reason, true
		}
	}
	return false, "", false
}

// podStuck names a waiting reason that will not clear by itself.
func podStuck(p corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
				if w.Message == "" {
					return w.Reason
				}
				return w.Reason + ": " + w.Message
			}
		}
	}
	return ""
}

// apiError wraps an API error from verb on resource in ns, with a message
// a Slack user can act on when it is a permission or credential problem.
// client-go errors carry the request URL and the server's status, never
// the token.
func apiError(verb, resource, ns string, err error) error {
	cause := fmt.Errorf("%s %s in %s: %w", verb, resource, ns, err)
	switch {
	case apierrors.IsForbidden(err):
		return platforms.Userf(cause, "rollbot may not %s %s in namespace %s: add `%s` on %s to the Role %s bound to rollbot there (deploy/kubernetes/rbac.yaml)",
			verb, resource, ns, verb, resource, JobRole)
	case apierrors.IsUnauthorized(err):
		return platforms.Userf(cause, "the Kubernetes API rejected rollbot's credentials (expired or revoked token?): check the kubeconfig or ServiceAccount configured for the service")
	}
	return cause
}

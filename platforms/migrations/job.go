package migrations

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"rollbot/platforms"
)

// Labels on every down Job rollbot creates.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelOperation = "rollbot.io/operation"
	jobNameLabel   = "batch.kubernetes.io/job-name"
	downContainer  = "db-down"
	// KeepFinishedJob is how long a finished Job and its pod (and log) stay
	// for the postmortem.
	KeepFinishedJob = 24 * time.Hour
)

// DownJob builds the batch/v1 Job that runs the down command with image
// (normally the bad release's: DownConfig.ImageFor). It never retries
// (backoffLimit 0: a half-run down migration must not run twice), is bounded
// by cfg.Timeout (activeDeadlineSeconds) and is kept KeepFinishedJob after
// it ends. The container gets vars (Report.DownVars), cfg.Env and
// cfg.SecretEnv as secretKeyRef variables, and every key of
// cfg.EnvFromSecret; Kubernetes itself expands $(NAME) in the command.
func DownJob(cfg DownConfig, image string, vars map[string]string) *batchv1.Job {
	labels := map[string]string{LabelManagedBy: "rollbot", LabelOperation: "db-down"}
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
			GenerateName: "rollbot-db-down-",
			Namespace:    cfg.Namespace,
			Labels:       labels,
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

// jobAPI is the part of the Kubernetes API the runner uses.
type jobAPI interface {
	createJob(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error)
	getJob(ctx context.Context, ns, name string) (*batchv1.Job, error)
	jobPods(ctx context.Context, ns, job string) ([]corev1.Pod, error)
	podLogs(ctx context.Context, ns, pod string) (io.ReadCloser, error)
}

type clientsetJobs struct{ cs kubernetes.Interface }

func (c clientsetJobs) createJob(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error) {
	return c.cs.BatchV1().Jobs(job.Namespace).Create(ctx, job, metav1.CreateOptions{})
}

func (c clientsetJobs) getJob(ctx context.Context, ns, name string) (*batchv1.Job, error) {
	return c.cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
}

func (c clientsetJobs) jobPods(ctx context.Context, ns, job string) ([]corev1.Pod, error) {
	l, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: jobNameLabel + "=" + job})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func (c clientsetJobs) podLogs(ctx context.Context, ns, pod string) (io.ReadCloser, error) {
	return c.cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: downContainer, Follow: true}).Stream(ctx)
}

// JobRunner runs kind kubernetes_job down configurations.
type JobRunner struct {
	api  jobAPI
	log  *slog.Logger
	poll time.Duration
}

// NewJobRunner uses cs for the cluster the service runs in.
func NewJobRunner(cs kubernetes.Interface, log *slog.Logger) *JobRunner {
	return &JobRunner{api: clientsetJobs{cs}, log: log, poll: time.Second}
}

// Run creates the down Job (DownJob), streams its pod's log to out line by
// line, and waits until the Job completes or fails. It returns the Job's
// name (also on failure, once created) for the timeline.
func (r *JobRunner) Run(ctx context.Context, cfg DownConfig, image string, vars map[string]string, out io.Writer) (string, error) {
	if cfg.Kind != DownKubernetesJob {
		return "", fmt.Errorf("run down job: kind %q: JobRunner runs kind kubernetes_job", cfg.Kind)
	}
	if err := cfg.Validate(); err != nil {
		return "", fmt.Errorf("run down job: %w", err)
	}
	if image == "" {
		return "", platforms.Userf(errors.New("run down job: no image"), "no image for the down Job: the bad release's image is not known")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout()+time.Minute)
	defer cancel()
	job, err := r.api.createJob(ctx, DownJob(cfg, image, vars))
	if err != nil {
		return "", fmt.Errorf("create job in %s: %w", cfg.Namespace, err)
	}
	name := job.Name
	r.log.InfoContext(ctx, "down job created", "op", "db-down", "job", cfg.Namespace+"/"+name, "image", image)
	fmt.Fprintf(out, "job %s/%s created with image %s\n", cfg.Namespace, name, image)

	streamed := false
	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	for {
		j, err := r.api.getJob(ctx, cfg.Namespace, name)
		if err != nil {
			return name, fmt.Errorf("get job %s/%s: %w", cfg.Namespace, name, err)
		}
		if done, err := jobFinished(j); done {
			if err != nil {
				return name, platforms.Userf(fmt.Errorf("job %s/%s: %w", cfg.Namespace, name, err),
					"the down Job %s/%s failed (%v): see its output above", cfg.Namespace, name, err)
			}
			if !streamed {
				r.streamPod(ctx, cfg.Namespace, name, out)
			}
			return name, nil
		}
		if !streamed {
			pods, err := r.api.jobPods(ctx, cfg.Namespace, name)
			if err != nil {
				return name, fmt.Errorf("list pods of job %s/%s: %w", cfg.Namespace, name, err)
			}
			for _, p := range pods {
				if why := podStuck(p); why != "" {
					return name, platforms.Userf(fmt.Errorf("job %s/%s pod %s: %s", cfg.Namespace, name, p.Name, why),
						"the down Job %s/%s cannot start: %s", cfg.Namespace, name, why)
				}
				if p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
					streamed = true
					if err := r.streamLogs(ctx, cfg.Namespace, p.Name, out); err != nil {
						r.log.WarnContext(ctx, "down job log stream ended", "op", "db-down", "job", name, "err", err)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return name, platforms.Userf(fmt.Errorf("job %s/%s: %w", cfg.Namespace, name, ctx.Err()),
				"the down Job %s/%s did not finish in time: check it and the migration table", cfg.Namespace, name)
		case <-tick.C:
		}
	}
}

func (r *JobRunner) streamPod(ctx context.Context, ns, job string, out io.Writer) {
	pods, err := r.api.jobPods(ctx, ns, job)
	if err != nil {
		return
	}
	for _, p := range pods {
		_ = r.streamLogs(ctx, ns, p.Name, out)
	}
}

func (r *JobRunner) streamLogs(ctx context.Context, ns, pod string, out io.Writer) error {
	rc, err := r.api.podLogs(ctx, ns, pod)
	if err != nil {
		return err
	}
	defer rc.Close()
	return copyLines(out, rc, nil)
}

// jobFinished reads the Job's terminal condition.
func jobFinished(j *batchv1.Job) (bool, error) {
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return true, nil
		case batchv1.JobFailed:
			return true, fmt.Errorf("%s: %s", c.Reason, c.Message)
		}
	}
	return false, nil
}

// podStuck names a waiting reason that will not clear by itself.
func podStuck(p corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError":
				return w.Reason + ": " + w.Message
			}
		}
	}
	return ""
}

package kube

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"rollbot/platforms"
)

// isTestFailed reports a failed JSON patch "test" operation, which the API
// server answers with 422 Unprocessable Entity.
func isTestFailed(err error) bool { return apierrors.IsInvalid(err) }

// timeout is how long a write waits for its rollout: RolloutTimeout, or
// the Deployment's progress deadline plus a minute (the controller reports
// ProgressDeadlineExceeded first unless it is down).
func (a *Adapter) timeout(d *appsv1.Deployment) time.Duration {
	if a.cfg.RolloutTimeout > 0 {
		return a.cfg.RolloutTimeout
	}
	deadline := defaultProgressDeadline
	if d.Spec.ProgressDeadlineSeconds != nil {
		deadline = time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second
	}
	return deadline + time.Minute
}

// waitRollout waits like `kubectl rollout status` for the rollout that the
// write producing after (from before) started. It fails when the
// Deployment exceeds its progress deadline (a ProgressDeadlineExceeded
// condition newer than the one before the write, if any), is paused, or
// its template is changed by someone else meanwhile.
func (a *Adapter) waitRollout(ctx context.Context, before, after *appsv1.Deployment, what string, progress platforms.ProgressFunc) (*appsv1.Deployment, error) {
	var stale *metav1.Time
	if c := progressingCondition(before); c != nil && c.Reason == timedOutReason {
		stale = c.LastUpdateTime.DeepCopy()
	}
	// The controller reports a missed progress deadline in a condition, but
	// only when it syncs the Deployment again, which under load can come
	// late. rollbot also keeps its own count: no change in updated or
	// available pods for the deadline plus a grace period is the same verdict.
	var (
		lastUpdated, lastReady = -1, -1
		lastChange             = a.now()
	)
	return a.wait(ctx, after, a.timeout(after), func(d *appsv1.Deployment) (platforms.Progress, bool, error) {
		p := platforms.Progress{Updated: int(d.Status.UpdatedReplicas), Ready: int(d.Status.AvailableReplicas), Desired: replicas(d)}
		if p.Updated != lastUpdated || p.Ready != lastReady {
			lastUpdated, lastReady, lastChange = p.Updated, p.Ready, a.now()
		}
		if !equalIgnoreHash(&d.Spec.Template, &after.Spec.Template) {
			return p, false, a.changedUnderneath(d, "its pod template changed (now image "+imageOf(&d.Spec.Template.Spec, a.containerOrFirst(d))+")")
		}
		if d.Spec.Paused {
			return p, false, a.changedUnderneath(d, "it was paused")
		}
		if d.Status.ObservedGeneration < d.Generation {
			p.Message = "Waiting for deployment spec update to be observed..."
			return p, false, nil
		}
		c := progressingCondition(d)
		controllerSays := c != nil && c.Reason == timedOutReason && (stale == nil || !c.LastUpdateTime.Equal(stale))
		msg, done := rolloutMessage(d)
		stuck := !done && d.Spec.ProgressDeadlineSeconds != nil &&
			a.now().Sub(lastChange) > time.Duration(*d.Spec.ProgressDeadlineSeconds)*time.Second+progressGrace
		if controllerSays || stuck {
			deadline := "its progress deadline"
			if d.Spec.ProgressDeadlineSeconds != nil {
				deadline += fmt.Sprintf(" (%ds)", *d.Spec.ProgressDeadlineSeconds)
			}
			why := "no progress for longer than the deadline"
			if controllerSays {
				why = c.Message
			}
			return p, false, platforms.Userf(
				fmt.Errorf("wait for %s of %s: %w: %s", what, a.Target(), ErrProgressDeadline, why),
				"%s did not finish %s within %s: %d of %d updated pods are available. "+
					"The runbook's fallbacks: set the image explicitly, or scale to zero and investigate",
				a.Target(), what, deadline, d.Status.AvailableReplicas, d.Status.UpdatedReplicas)
		}
		p.Message, p.Done = msg, done
		return p, done, nil
	}, progress)
}

// progressGrace is how long past the progress deadline rollbot waits for
// the controller's own verdict before giving its own.
const progressGrace = 10 * time.Second

func (a *Adapter) containerOrFirst(d *appsv1.Deployment) string {
	if n, err := a.containerName(d); err == nil {
		return n
	}
	return ""
}

func (a *Adapter) changedUnderneath(d *appsv1.Deployment, what string) error {
	return platforms.Userf(fmt.Errorf("wait for %s: %s: %w", a.Target(), what, platforms.ErrConflict),
		"someone else changed %s while rollbot was waiting for its rollout: %s. Check its state before doing anything else",
		a.Target(), what)
}

func progressingCondition(d *appsv1.Deployment) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == appsv1.DeploymentProgressing {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

// rolloutMessage is `kubectl rollout status`'s message for an observed
// generation.
func rolloutMessage(d *appsv1.Deployment) (string, bool) {
	want := int32(replicas(d))
	s := d.Status
	switch {
	case s.UpdatedReplicas < want:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...", d.Name, s.UpdatedReplicas, want), false
	case s.Replicas > s.UpdatedReplicas:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...", d.Name, s.Replicas-s.UpdatedReplicas), false
	case s.AvailableReplicas < s.UpdatedReplicas:
		return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...", d.Name, s.AvailableReplicas, s.UpdatedReplicas), false
	}
	return fmt.Sprintf("deployment %q successfully rolled out", d.Name), true
}

// wait follows the Deployment with a watch (re-established with a fresh
// get when the server ends it) until check says done or fails, reporting
// each new progress message. It gives up after timeout.
func (a *Adapter) wait(ctx context.Context, d *appsv1.Deployment, timeout time.Duration,
	check func(*appsv1.Deployment) (platforms.Progress, bool, error), progress platforms.ProgressFunc,
) (*appsv1.Deployment, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := platforms.Progress{}
	eval := func(d *appsv1.Deployment) (bool, error) {
		p, done, err := check(d)
		if err != nil {
			return false, err
		}
		if p.Message != "" && p != last {
			last = p
			if progress != nil {
				progress(p)
			}
		}
		return done, nil
	}
	timedOut := func(err error) error {
		if parent.Err() != nil {
			// The caller gave up (its own deadline or cancellation).
			return fmt.Errorf("wait for %s: %w", a.Target(), parent.Err())
		}
		msg := strings.TrimSuffix(last.Message, "...")
		if msg == "" {
			msg = "no progress reported"
		}
		return platforms.Userf(fmt.Errorf("wait for %s: %w", a.Target(), err),
			"rollbot stopped waiting for %s after %s: %s", a.Target(), timeout.Round(time.Second), msg)
	}
	for {
		if done, err := eval(d); done || err != nil {
			return d, err
		}
		w, err := a.deployments.Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", a.cfg.Deployment).String(),
			ResourceVersion: d.ResourceVersion,
		})
		if err != nil {
			if ctx.Err() != nil {
				return d, timedOut(ctx.Err())
			}
			return d, a.apiError("watch", "deployments", err)
		}
		// A stuck rollout sends no events: re-check the last state now and
		// then, so rollbot's own progress-deadline count can fire.
		tick := time.NewTicker(2 * time.Second)
	events:
		for {
			var ev watch.Event
			select {
			case e, ok := <-w.ResultChan():
				if !ok {
					break events
				}
				ev = e
			case <-tick.C:
				if done, err := eval(d); done || err != nil {
					tick.Stop()
					w.Stop()
					return d, err
				}
				continue
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				nd, ok := ev.Object.(*appsv1.Deployment)
				if !ok {
					continue
				}
				d = nd
				if done, err := eval(d); done || err != nil {
					tick.Stop()
					w.Stop()
					return d, err
				}
			case watch.Deleted:
				tick.Stop()
				w.Stop()
				return d, platforms.Userf(fmt.Errorf("wait for %s: %w", a.Target(), platforms.ErrNotFound),
					"%s was deleted while rollbot was waiting for its rollout", a.Target())
			case watch.Error:
				// e.g. 410 Gone: the resourceVersion is too old; start again from a get.
			}
		}
		tick.Stop()
		w.Stop()
		if ctx.Err() != nil {
			return d, timedOut(ctx.Err())
		}
		nd, err := a.deployments.Get(ctx, a.cfg.Deployment, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return d, timedOut(ctx.Err())
			}
			return d, a.apiError("get", "deployments", err)
		}
		d = nd
	}
}

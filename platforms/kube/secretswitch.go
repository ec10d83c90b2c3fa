package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	coreclient "k8s.io/client-go/kubernetes/typed/core/v1"

	"rollbot/platforms"
)

// SecretSwitchConfig is services.<name>.database.restore.secret: after a
// restore, the restored endpoint is written into one key of a Secret the
// app reads its database address from, and the Deployment is restarted
// so its pods read it.
type SecretSwitchConfig struct {
	// Namespace of the Secret; default: the service's namespace.
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	Key       string `yaml:"key"`
	// Format is the value written, with {host}, {port} and {endpoint}
	// (host:port) replaced; default "{endpoint}". Keep credentials out of
	// it: they stay in their own keys.
	Format string `yaml:"format"`
	// Restart is the Deployment restarted afterwards (in Namespace);
	// default: the service's Deployment.
	Restart string `yaml:"restart"`
}

// Validate checks the fields; errors name the field.
func (c SecretSwitchConfig) Validate() error {
	var errs []error
	if c.Namespace != "" {
		if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("namespace: %q is not a valid namespace name", c.Namespace))
		}
	}
	if c.Name == "" {
		errs = append(errs, errors.New("name: required (the Secret that holds the database endpoint)"))
	} else if msgs := validation.IsDNS1123Subdomain(c.Name); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("name: %q is not a valid Secret name", c.Name))
	}
	if c.Key == "" {
		errs = append(errs, errors.New("key: required (the Secret key the app reads the endpoint from)"))
	} else if msgs := validation.IsConfigMapKey(c.Key); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("key: %q is not a valid Secret key", c.Key))
	}
	if c.Format != "" && !strings.Contains(c.Format, "{host}") && !strings.Contains(c.Format, "{endpoint}") {
		errs = append(errs, errors.New("format: must contain {host} or {endpoint}"))
	}
	if c.Restart != "" {
		if msgs := validation.IsDNS1123Subdomain(c.Restart); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("restart: %q is not a valid Deployment name", c.Restart))
		}
	}
	return errors.Join(errs...)
}

// Annotations rollbot sets for an endpoint switch: on the Secret, the
// incident whose restored endpoint it holds; on the restarted pod
// template, the incident it was restarted for (so a resumed switch does
// not restart twice) and kubectl's restart stamp.
const (
	SwitchedForAnnotation  = "rollbot.io/endpoint-switched-for"
	RestartedForAnnotation = "rollbot.io/restarted-for"
	restartedAtAnnotation  = "kubectl.kubernetes.io/restartedAt"
)

// SecretSwitch points a service at a new database endpoint through a
// Secret and a restart.
type SecretSwitch struct {
	cfg     SecretSwitchConfig
	secrets coreclient.SecretInterface
	restart *Adapter // the Deployment restarted, with its rollout wait
	log     *slog.Logger
}

// NewSecretSwitch binds the switch to the service's cluster; svc is the
// service's kubernetes config (the defaults for namespace and restart).
func NewSecretSwitch(cs kubernetes.Interface, svc Config, cfg SecretSwitchConfig, log *slog.Logger) *SecretSwitch {
	if cfg.Namespace == "" {
		cfg.Namespace = svc.Namespace
	}
	if cfg.Restart == "" {
		cfg.Restart = svc.Deployment
	}
	if cfg.Format == "" {
		cfg.Format = "{endpoint}"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc := svc
	rc.Namespace, rc.Deployment = cfg.Namespace, cfg.Restart
	return &SecretSwitch{cfg: cfg, secrets: cs.CoreV1().Secrets(cfg.Namespace), restart: NewWithClient(cs, rc, log), log: log}
}

// Describe says what Switch writes and restarts.
func (s *SecretSwitch) Describe() string {
	return fmt.Sprintf("write the restored endpoint into key %s of Secret %s/%s, then restart deployment %s/%s and wait for its rollout",
		s.cfg.Key, s.cfg.Namespace, s.cfg.Name, s.cfg.Namespace, s.cfg.Restart)
}

func (s *SecretSwitch) value(endpoint string) string {
	host, port, _ := strings.Cut(endpoint, ":")
	return strings.NewReplacer("{endpoint}", endpoint, "{host}", host, "{port}", port).Replace(s.cfg.Format)
}

// Switch writes endpoint into the Secret key (compare-and-set on its
// resourceVersion) unless it is there already, restarts the Deployment
// unless its pod template was restarted for this incident already, and
// waits for the rollout. The Secret's values are never logged or shown.
func (s *SecretSwitch) Switch(ctx context.Context, incident, endpoint string, steps platforms.SwitchSteps) (string, error) {
	if steps.Before == nil {
		steps.Before = func(context.Context, string) error { return nil }
	}
	if steps.Note == nil {
		steps.Note = func(string) {}
	}
	name := s.cfg.Namespace + "/" + s.cfg.Name
	want := s.value(endpoint)
	sec, err := s.secrets.Get(ctx, s.cfg.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", platforms.Userf(fmt.Errorf("%w: secret %s", platforms.ErrNotFound, name), "Secret %s does not exist: nothing was switched. Create it or fix database.restore.secret, then switch by hand", name)
	case err != nil:
		return "", s.restart.apiError("get", "secrets", err)
	}
	if string(sec.Data[s.cfg.Key]) == want {
		steps.Note(fmt.Sprintf("Secret %s key %s already holds the restored endpoint %s", name, s.cfg.Key, endpoint))
	} else {
		if err := steps.Before(ctx, fmt.Sprintf("writing the restored endpoint %s into key %s of Secret %s", endpoint, s.cfg.Key, name)); err != nil {
			return "", err
		}
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		sec.Data[s.cfg.Key] = []byte(want)
		if sec.Annotations == nil {
			sec.Annotations = map[string]string{}
		}
		sec.Annotations[SwitchedForAnnotation] = incident
		// Update carries the resourceVersion read: a concurrent change fails.
		if _, err := s.secrets.Update(ctx, sec, metav1.UpdateOptions{FieldManager: "rollbot"}); err != nil {
			if apierrors.IsConflict(err) {
				return "", platforms.Userf(fmt.Errorf("%w: secret %s", platforms.ErrConflict, name), "Secret %s changed while rollbot wrote it: nothing was switched. Check who changes it, then retry or switch by hand", name)
			}
			return "", platforms.Userf(err, "writing Secret %s failed (%s): nothing was switched; the app still uses the old endpoint. Switch by hand", name, s.userMsg(ctx, "endpoint switch: write the Secret", s.restart.apiError("update", "secrets", err)))
		}
		s.log.InfoContext(ctx, "secret updated with the restored endpoint", "op", "switch", "incident", incident, "secret", name, "key", s.cfg.Key)
	}

	d, err := s.restart.deployments.Get(ctx, s.cfg.Restart, metav1.GetOptions{})
	if err != nil {
		return "", platforms.Userf(err, "Secret %s holds the restored endpoint, but reading deployment %s/%s failed (%s): restart it by hand (kubectl rollout restart deployment/%s -n %s)",
			name, s.cfg.Namespace, s.cfg.Restart, s.userMsg(ctx, "endpoint switch: read the deployment", s.restart.apiError("get", "deployments", err)), s.cfg.Restart, s.cfg.Namespace)
	}
	after := d
	if d.Spec.Template.Annotations[RestartedForAnnotation] == incident {
		steps.Note(fmt.Sprintf("deployment %s/%s was already restarted for %s", s.cfg.Namespace, s.cfg.Restart, incident))
	} else {
		if err := steps.Before(ctx, fmt.Sprintf("restarting deployment %s/%s so its pods read the new endpoint", s.cfg.Namespace, s.cfg.Restart)); err != nil {
			return "", err
		}
		now := time.Now().UTC().Format(time.RFC3339)
		ops := []patchOp{}
		if d.Spec.Template.Annotations == nil {
			ops = append(ops, patchOp{Op: "add", Path: "/spec/template/metadata/annotations", Value: map[string]string{}})
		}
		ops = append(ops,
			patchOp{Op: "add", Path: "/spec/template/metadata/annotations/" + pointer(RestartedForAnnotation), Value: incident},
			patchOp{Op: "add", Path: "/spec/template/metadata/annotations/" + pointer(restartedAtAnnotation), Value: now})
		if after, err = s.restart.patchDeployment(ctx, d, ops, false); err != nil {
			return "", platforms.Userf(err, "Secret %s holds the restored endpoint, but restarting deployment %s/%s failed (%s): restart it by hand (kubectl rollout restart deployment/%s -n %s)",
				name, s.cfg.Namespace, s.cfg.Restart, s.userMsg(ctx, "endpoint switch: restart", err), s.cfg.Restart, s.cfg.Namespace)
		}
	}
	if _, err := s.restart.waitRollout(ctx, d, after, "the restart", func(p platforms.Progress) { steps.Note(p.Message) }); err != nil {
		return "", platforms.Userf(err, "Secret %s holds the restored endpoint and deployment %s/%s was restarted, but its rollout did not finish (%s). Check the pods", name, s.cfg.Namespace, s.cfg.Restart, s.userMsg(ctx, "endpoint switch: wait for the restart", err))
	}
	return fmt.Sprintf("Secret %s key %s holds the restored endpoint %s and deployment %s/%s was restarted with it", name, s.cfg.Key, endpoint, s.cfg.Namespace, s.cfg.Restart), nil
}

// userMsg is err's user message, else a reference to the log line that
// holds it.
func (s *SecretSwitch) userMsg(ctx context.Context, op string, err error) string {
	if m, ok := platforms.UserMessage(err); ok {
		return m
	}
	return platforms.SeeLog(ctx, s.log, op, err, "op", "endpoint-switch")
}

package kube

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"rollbot/platforms"
)

// Admission keeps a DO_NOT_DEPLOY image out of one namespace with a
// ValidatingAdmissionPolicy and its binding (CEL, no webhook): Pods and
// workloads (Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs,
// CronJobs) whose containers use the image — by tag or by digest — are
// refused with a message naming the incident and how to lift it. One
// policy per namespace and service, with one validation per forbidden
// image; lifting the last one deletes the policy and its binding.
//
// It needs a ClusterRole (policies and bindings are cluster-scoped):
// deploy/kubernetes/rbac.yaml, rollbot-admission.
type Admission struct {
	policies admissionPolicies
	bindings admissionBindings
	ns, svc  string
	log      *slog.Logger
}

type admissionPolicies interface {
	Get(context.Context, string, metav1.GetOptions) (*admissionv1.ValidatingAdmissionPolicy, error)
	Create(context.Context, *admissionv1.ValidatingAdmissionPolicy, metav1.CreateOptions) (*admissionv1.ValidatingAdmissionPolicy, error)
	Update(context.Context, *admissionv1.ValidatingAdmissionPolicy, metav1.UpdateOptions) (*admissionv1.ValidatingAdmissionPolicy, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
}

type admissionBindings interface {
	Create(context.Context, *admissionv1.ValidatingAdmissionPolicyBinding, metav1.CreateOptions) (*admissionv1.ValidatingAdmissionPolicyBinding, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
}

// NewAdmission builds the admission guard of service in namespace.
func NewAdmission(cs kubernetes.Interface, namespace, service string, log *slog.Logger) *Admission {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Admission{policies: cs.AdmissionregistrationV1().ValidatingAdmissionPolicies(),
		bindings: cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings(), ns: namespace, svc: service, log: log}
}

var _ platforms.AdmissionGuard = (*Admission)(nil)

// Where implements platforms.AdmissionGuard.
func (a *Admission) Where() string { return "namespace " + a.ns }

// Name is the policy's (and its binding's) name.
func (a *Admission) Name() string { return "rollbot-do-not-deploy." + a.ns + "." + a.svc }

// annotationImages lists the refused images, space-separated, on the policy.
const annotationImages = "rollbot.io/images"

var digestRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// validationFor is the CEL rule that refuses image (a reference with a
// tag) and, when digest is set, any reference to that digest.
func validationFor(image, digest string, m platforms.ImageMark) admissionv1.Validation {
	conds := []string{fmt.Sprintf("i == %s", celString(image))}
	if digest != "" {
		conds = append(conds, fmt.Sprintf("i.endsWith(%s)", celString("@"+digest)))
	}
	version := image
	if i := strings.LastIndex(image, ":"); i >= 0 && !strings.Contains(image[i+1:], "/") {
		version = image[i+1:]
	}
	msg := fmt.Sprintf("image %s is marked DO_NOT_DEPLOY by rollbot (%s, by %s): an approver lifts it with /rollback allow %s %s", image, m.Incident, m.By, m.Service, version)
	return admissionv1.Validation{
		Expression: fmt.Sprintf("!variables.images.exists(i, %s)", strings.Join(conds, " || ")),
		Message:    msg,
		Reason:     ptr(metav1.StatusReasonForbidden),
	}
}

func celString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func ptr[T any](v T) *T { return &v }

// The CEL variables: the pod spec of a Pod or of a workload's pod
// template (a CronJob's job template's), and every container image in it.
const (
	podSpecExpr = `object.kind == 'Pod' ? object.spec : (object.kind == 'CronJob' ? object.spec.jobTemplate.spec.template.spec : object.spec.template.spec)`
	imagesExpr  = `variables.spec.containers.map(c, c.image) + (has(variables.spec.initContainers) ? variables.spec.initContainers.map(c, c.image) : [])`
)

func (a *Admission) policy(validations []admissionv1.Validation, images []string) *admissionv1.ValidatingAdmissionPolicy {
	rule := func(group, version string, resources ...string) admissionv1.NamedRuleWithOperations {
		return admissionv1.NamedRuleWithOperations{RuleWithOperations: admissionv1.RuleWithOperations{
			Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
			Rule:       admissionv1.Rule{APIGroups: []string{group}, APIVersions: []string{version}, Resources: resources},
		}}
	}
	return &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: a.Name(), Labels: map[string]string{"app.kubernetes.io/managed-by": "rollbot"},
			Annotations: map[string]string{annotationImages: strings.Join(images, " ")}},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{
				rule("", "v1", "pods"),
				rule("apps", "v1", "deployments", "replicasets", "statefulsets", "daemonsets"),
				rule("batch", "v1", "jobs", "cronjobs"),
			}},
			Variables:   []admissionv1.Variable{{Name: "spec", Expression: podSpecExpr}, {Name: "images", Expression: imagesExpr}},
			Validations: validations,
		},
	}
}

// Forbid refuses image (and its digest, when known) in the namespace. An
// image already forbidden is left as it is.
func (a *Admission) Forbid(ctx context.Context, image, digest string, m platforms.ImageMark) (platforms.Result, error) {
	if digest != "" && !digestRe.MatchString(digest) {
		digest = ""
	}
	cur, err := a.policies.Get(ctx, a.Name(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		p := a.policy([]admissionv1.Validation{validationFor(image, digest, m)}, []string{image})
		if _, err := a.policies.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return platforms.Result{}, a.apiErr(err, "create the admission policy")
		}
	case err != nil:
		return platforms.Result{}, a.apiErr(err, "read the admission policy")
	default:
		images := strings.Fields(cur.Annotations[annotationImages])
		if slices.Contains(images, image) {
			return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s is already refused in namespace %s (policy %s)", image, a.ns, a.Name())}, nil
		}
		images = append(images, image)
		cur.Spec.Validations = append(cur.Spec.Validations, validationFor(image, digest, m))
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[annotationImages] = strings.Join(images, " ")
		// The update carries the resourceVersion read: a concurrent change fails it.
		if _, err := a.policies.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return platforms.Result{}, a.apiErr(err, "update the admission policy")
		}
	}
	b := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: a.Name(), Labels: map[string]string{"app.kubernetes.io/managed-by": "rollbot"}},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        a.Name(),
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			MatchResources: &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": a.ns}}},
		},
	}
	if _, err := a.bindings.Create(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return platforms.Result{}, a.apiErr(err, "bind the admission policy")
	}
	a.log.Info("image refused by admission policy", "op", "admission", "policy", a.Name(), "image", image)
	return platforms.Result{Outcome: platforms.Done, Detail: fmt.Sprintf("namespace %s refuses %s (ValidatingAdmissionPolicy %s)", a.ns, image, a.Name())}, nil
}

// Allow lifts the refusal of the image whose reference or tag is version.
func (a *Admission) Allow(ctx context.Context, version string) (platforms.Result, error) {
	cur, err := a.policies.Get(ctx, a.Name(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return platforms.Result{Outcome: platforms.Skipped, Detail: "namespace " + a.ns + " refuses no image of " + a.svc}, nil
	}
	if err != nil {
		return platforms.Result{}, a.apiErr(err, "read the admission policy")
	}
	images := strings.Fields(cur.Annotations[annotationImages])
	idx := slices.IndexFunc(images, func(img string) bool {
		return img == version || strings.HasSuffix(img, ":"+version) || strings.HasSuffix(img, "@"+version)
	})
	if idx < 0 {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("namespace %s does not refuse %s", a.ns, version)}, nil
	}
	image := images[idx]
	images = slices.Delete(images, idx, idx+1)
	if len(images) == 0 {
		if err := a.bindings.Delete(ctx, a.Name(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return platforms.Result{}, a.apiErr(err, "delete the admission policy binding")
		}
		if err := a.policies.Delete(ctx, a.Name(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &cur.ResourceVersion}}); err != nil && !apierrors.IsNotFound(err) {
			return platforms.Result{}, a.apiErr(err, "delete the admission policy")
		}
	} else {
		cur.Spec.Validations = slices.DeleteFunc(cur.Spec.Validations, func(v admissionv1.Validation) bool {
			return strings.HasPrefix(v.Message, "image "+image+" is marked DO_NOT_DEPLOY")
		})
		cur.Annotations[annotationImages] = strings.Join(images, " ")
		if _, err := a.policies.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return platforms.Result{}, a.apiErr(err, "update the admission policy")
		}
	}
	a.log.Info("admission refusal lifted", "op", "admission", "policy", a.Name(), "image", image)
	return platforms.Result{Outcome: platforms.Done, Detail: fmt.Sprintf("namespace %s accepts %s again", a.ns, image)}, nil
}

func (a *Admission) apiErr(err error, what string) error {
	switch {
	case apierrors.IsForbidden(err):
		return platforms.Userf(err, "Kubernetes refused rollbot to %s: bind the ClusterRole rollbot-admission of deploy/kubernetes/rbac.yaml", what)
	case apierrors.IsConflict(err):
		return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrConflict, err), "the admission policy %s changed while rollbot wrote it; run the command again", a.Name())
	}
	return fmt.Errorf("%s %s: %w", what, a.Name(), err)
}

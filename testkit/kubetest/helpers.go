package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"rollbot/testkit/wait"
)

// WaitTimeout bounds every wait of the helpers below.
const WaitTimeout = 60 * time.Second

// Poll calls cond every 50ms until it returns true or WaitTimeout passes,
// then fails the test naming what it waited for and the last error
// (testkit/wait; cond's ctx ends with WaitTimeout).
func Poll(t testing.TB, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	var lastErr error
	wait.Every(t, 50*time.Millisecond, WaitTimeout, what, func() (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			lastErr = err
		}
		return ok, lastErr
	})
}

func randSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// CreateNamespace creates a namespace named prefix-<random>, waits for its
// default ServiceAccount (pods need it) and returns its name. It is deleted
// on t.Cleanup.
func CreateNamespace(t testing.TB, cs kubernetes.Interface, prefix string) string {
	t.Helper()
	ctx := context.Background()
	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + randSuffix()}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{}) })
	Poll(t, "ServiceAccount "+ns.Name+"/default", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
	return ns.Name
}

// NewDeployment returns a Deployment of name with one container "app"
// running image, labels app=<name>, a rolling update that surges one pod at
// a time, and a history of 10 revisions; callers may adjust it before
// creating it.
func NewDeployment(ns, name, image string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
	history := int32(10)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels,
			Annotations: map[string]string{"kubernetes.io/change-cause": "deploy " + image}},
		Spec: appsv1.DeploymentSpec{
			Replicas:             &replicas,
			Selector:             &metav1.LabelSelector{MatchLabels: labels},
			RevisionHistoryLimit: &history,
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero, MaxSurge: &one}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: image}},
					// kwok's node: no real kubelet, so nothing to pull or run.
					Tolerations: []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
				},
			},
		},
	}
}

// CreateDeployment creates NewDeployment(ns, name, image, replicas) and
// waits until it has rolled out.
func CreateDeployment(t testing.TB, cs kubernetes.Interface, ns, name, image string, replicas int32) *appsv1.Deployment {
	t.Helper()
	return Create(t, cs, NewDeployment(ns, name, image, replicas))
}

// Create creates d and waits until it has rolled out.
func Create(t testing.TB, cs kubernetes.Interface, d *appsv1.Deployment) *appsv1.Deployment {
	t.Helper()
	if _, err := cs.AppsV1().Deployments(d.Namespace).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment %s/%s: %v", d.Namespace, d.Name, err)
	}
	return WaitRolledOut(t, cs, d.Namespace, d.Name)
}

// SetImage sets the image of the Deployment's first container (as `kubectl
// set image` does, recording a change-cause), retrying on conflicts. It
// does not wait; see WaitRolledOut.
func SetImage(t testing.TB, cs kubernetes.Interface, ns, name, image string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		d.Spec.Template.Spec.Containers[0].Image = image
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations["kubernetes.io/change-cause"] = "deploy " + image
		_, err = cs.AppsV1().Deployments(ns).Update(context.Background(), d, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("set image of %s/%s to %s: %v", ns, name, image, err)
	}
}

// Get returns the Deployment ns/name as it is now.
func Get(t testing.TB, cs kubernetes.Interface, ns, name string) *appsv1.Deployment {
	t.Helper()
	d, err := cs.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s/%s: %v", ns, name, err)
	}
	return d
}

// RolloutDone is `kubectl rollout status`'s completion test.
func RolloutDone(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return d.Generation <= d.Status.ObservedGeneration &&
		d.Status.UpdatedReplicas >= want &&
		d.Status.Replicas <= d.Status.UpdatedReplicas &&
		d.Status.AvailableReplicas >= d.Status.UpdatedReplicas
}

// WaitRolledOut waits until the Deployment's rollout is complete and
// returns it; it fails the test on ProgressDeadlineExceeded.
func WaitRolledOut(t testing.TB, cs kubernetes.Interface, ns, name string) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	Poll(t, "rollout of deployment "+ns+"/"+name, func(ctx context.Context) (bool, error) {
		var err error
		d, err = cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" && d.Generation <= d.Status.ObservedGeneration {
				t.Fatalf("deployment %s/%s exceeded its progress deadline: %s", ns, name, c.Message)
			}
		}
		return RolloutDone(d), nil
	})
	return d
}

// PodImages returns the images of the Deployment's non-terminating pods
// (first container), and how many of them are Ready.
func PodImages(t testing.TB, cs kubernetes.Interface, ns, app string) (images []string, ready int) {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		images = append(images, p.Spec.Containers[0].Image)
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready++
			}
		}
	}
	return images, ready
}

// LoadRole reads the first Role of a YAML file of one or more documents
// (other kinds, e.g. the ServiceAccount and RoleBinding, are skipped). In
// deploy/kubernetes/rbac.yaml that is the Kubernetes adapter's Role,
// "rollbot"; see LoadRoleNamed for the others.
func LoadRole(path string) (*rbacv1.Role, error) {
	roles, err := loadRoles(path)
	if err != nil {
		return nil, err
	}
	return roles[0], nil
}

// LoadRoleNamed reads the Role called name from a YAML file of one or
// more documents.
func LoadRoleNamed(path, name string) (*rbacv1.Role, error) {
	roles, err := loadRoles(path)
	if err != nil {
		return nil, err
	}
	for _, r := range roles {
		if r.Name == name {
			return r, nil
		}
	}
	return nil, fmt.Errorf("%s: no Role named %q", path, name)
}

// loadRoles returns the file's Roles in order; at least one, and no two
// with the same name.
func loadRoles(path string) ([]*rbacv1.Role, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var roles []*rbacv1.Role
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if ro, ok := obj.(*rbacv1.Role); ok {
			for _, prev := range roles {
				if prev.Name == ro.Name {
					return nil, fmt.Errorf("%s: two Roles named %q", path, ro.Name)
				}
			}
			roles = append(roles, ro)
		}
	}
	if len(roles) == 0 {
		return nil, fmt.Errorf("%s: no Role", path)
	}
	return roles, nil
}

// KubeconfigFor writes a kubeconfig whose user is a new ServiceAccount in
// ns bound (RoleBinding) to exactly the Role in roleYAMLPath (applied in ns
// under its own name), and returns its path.
func (c *Cluster) KubeconfigFor(t testing.TB, ns, roleYAMLPath string) string {
	t.Helper()
	role, err := LoadRole(roleYAMLPath)
	if err != nil {
		t.Fatal(err)
	}
	path, _ := c.KubeconfigForRules(t, ns, role.Name, role.Rules)
	return path
}

// KubeconfigForRole is KubeconfigFor with the Role called role of
// roleYAMLPath (a file may hold several).
func (c *Cluster) KubeconfigForRole(t testing.TB, ns, roleYAMLPath, role string) string {
	t.Helper()
	r, err := LoadRoleNamed(roleYAMLPath, role)
	if err != nil {
		t.Fatal(err)
	}
	path, _ := c.KubeconfigForRules(t, ns, r.Name, r.Rules)
	return path
}

// KubeconfigForRules creates in ns a Role named role with rules (replacing
// one of that name), a ServiceAccount bound to it, and writes a kubeconfig
// with a token for it. It returns the kubeconfig's path and the token (so
// tests can check it never leaks).
func (c *Cluster) KubeconfigForRules(t testing.TB, ns, role string, rules []rbacv1.PolicyRule) (path, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	path, token, err := c.ServiceAccountKubeconfig(ctx, ns, role, rules, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path, token
}

// ServiceAccountKubeconfig is KubeconfigForRules for code without a
// testing.TB (cmd/k8s-testbed): the kubeconfig is written into dir.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, ns, role string, rules []rbacv1.PolicyRule, dir string) (path, token string, err error) {
	return c.serviceAccountKubeconfig(ctx, ns, []*rbacv1.Role{{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: rules}}, dir)
}

// KubeconfigForRoles is KubeconfigFor with one ServiceAccount bound (one
// RoleBinding each) to several Roles of roleYAMLPath, named roles, as
// rollbot is bound to both Roles of deploy/kubernetes/rbac.yaml.
func (c *Cluster) KubeconfigForRoles(t testing.TB, ns, roleYAMLPath string, roles ...string) string {
	t.Helper()
	var rs []*rbacv1.Role
	for _, name := range roles {
		r, err := LoadRoleNamed(roleYAMLPath, name)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	path, _, err := c.serviceAccountKubeconfig(ctx, ns, rs, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// serviceAccountKubeconfig creates (or replaces) each Role in ns, a new
// ServiceAccount bound to each, and a kubeconfig with a token for it.
func (c *Cluster) serviceAccountKubeconfig(ctx context.Context, ns string, roles []*rbacv1.Role, dir string) (path, token string, err error) {
	cs := c.AdminClient
	if len(roles) == 0 {
		return "", "", fmt.Errorf("service account in %s: no Role", ns)
	}
	sa := "sa-" + roles[0].Name + "-" + randSuffix()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		return "", "", fmt.Errorf("create service account %s/%s: %w", ns, sa, err)
	}
	var rules []rbacv1.PolicyRule
	for i, role := range roles {
		r := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns}, Rules: role.Rules}
		if _, err := cs.RbacV1().Roles(ns).Create(ctx, r, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			if _, err := cs.RbacV1().Roles(ns).Update(ctx, r, metav1.UpdateOptions{}); err != nil {
				return "", "", fmt.Errorf("update role %s/%s: %w", ns, role.Name, err)
			}
		} else if err != nil {
			return "", "", fmt.Errorf("create role %s/%s: %w", ns, role.Name, err)
		}
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: sa},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
		}
		if i > 0 {
			rb.Name = fmt.Sprintf("%s-%d", sa, i)
		}
		if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			return "", "", fmt.Errorf("create role binding %s/%s: %w", ns, rb.Name, err)
		}
		rules = append(rules, role.Rules...)
	}
	day := int64(24 * 3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &day}}, metav1.CreateOptions{})
	if err != nil {
		return "", "", fmt.Errorf("request token for %s/%s: %w", ns, sa, err)
	}
	path = filepath.Join(dir, sa+".kubeconfig")
	if err := writeKubeconfig(path, c.Server, c.CAFile, sa, tr.Status.Token); err != nil {
		return "", "", err
	}
	// The authorizer works from an informer cache: wait until it allows
	// the first verb of every rule to the new ServiceAccount.
	user := "system:serviceaccount:" + ns + ":" + sa
	for _, rule := range rules {
		if len(rule.Verbs) == 0 || len(rule.Resources) == 0 {
			continue
		}
		group := ""
		if len(rule.APIGroups) > 0 {
			group = rule.APIGroups[0]
		}
		res, sub, _ := strings.Cut(rule.Resources[0], "/")
		attrs := &authorizationv1.ResourceAttributes{Namespace: ns, Verb: rule.Verbs[0], Group: group, Resource: res, Subresource: sub}
		if len(rule.ResourceNames) > 0 { // a rule narrowed by name allows only those
			attrs.Name = rule.ResourceNames[0]
		}
		err := c.poll(ctx, fmt.Sprintf("RBAC to allow %s %s to %s", attrs.Verb, rule.Resources[0], user), func() (bool, error) {
			r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: attrs},
			}, metav1.CreateOptions{})
			if err != nil {
				return false, err
			}
			return r.Status.Allowed, nil
		})
		if err != nil {
			return "", "", err
		}
	}
	return path, tr.Status.Token, nil
}

// LoadClusterRole reads the ClusterRole called name from a YAML file of
// one or more documents.
func LoadClusterRole(path, name string) (*rbacv1.ClusterRole, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no ClusterRole named %q", path, name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if cr, ok := obj.(*rbacv1.ClusterRole); ok && cr.Name == name {
			return cr, nil
		}
	}
}

// BindClusterRole binds the ClusterRole called name of roleYAMLPath (created
// as name-<ns>, so tests in other namespaces do not share it) to the
// ServiceAccount that the kubeconfig at kubeconfigPath (from KubeconfigFor…
// in ns) uses, and waits until the apiserver authorises verb on resource
// for it. Both are deleted on t.Cleanup.
func (c *Cluster) BindClusterRole(t testing.TB, ns, kubeconfigPath, roleYAMLPath, name, verb, resource string) {
	t.Helper()
	ctx := context.Background()
	kc, err := clientcmd.LoadFromFile(kubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	sa := kc.Contexts[kc.CurrentContext].AuthInfo
	cr, err := LoadClusterRole(roleYAMLPath, name)
	if err != nil {
		t.Fatal(err)
	}
	cr.Name += "-" + ns
	cs := c.AdminClient
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: cr.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.RbacV1().ClusterRoleBindings().Delete(ctx, cr.Name, metav1.DeleteOptions{})
		cs.RbacV1().ClusterRoles().Delete(ctx, cr.Name, metav1.DeleteOptions{})
	})
	Poll(t, "RBAC: "+sa+" may "+verb+" "+resource, func(ctx context.Context) (bool, error) {
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: "system:serviceaccount:" + ns + ":" + sa, ResourceAttributes: &authorizationv1.ResourceAttributes{Resource: resource, Verb: verb}}}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed, err
	})
}

// SetNodeCondition sets one condition of a node through the status
// subresource, as its kubelet reports it (kwok's heartbeat rewrites the
// conditions of the nodes it manages every 20-45 s).
func SetNodeCondition(ctx context.Context, cs kubernetes.Interface, node string, c corev1.NodeCondition) error {
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	c.LastHeartbeatTime, c.LastTransitionTime = metav1.Now(), metav1.Now()
	i := slices.IndexFunc(n.Status.Conditions, func(x corev1.NodeCondition) bool { return x.Type == c.Type })
	if i < 0 {
		n.Status.Conditions = append(n.Status.Conditions, c)
	} else {
		n.Status.Conditions[i] = c
	}
	_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// CreateSickNode creates a node no kubelet (and no kwok) runs, tainted so
// that the scheduler puts nothing on it, with the given conditions; pods
// bound to it by nodeName stay Pending. It is deleted on t.Cleanup.
func CreateSickNode(t testing.TB, cs kubernetes.Interface, name string, conds ...corev1.NodeCondition) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "rollbot.dev/test", Effect: corev1.TaintEffectNoSchedule}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}) })
	for _, c := range conds {
		if err := SetNodeCondition(ctx, cs, name, c); err != nil {
			t.Fatal(err)
		}
	}
}

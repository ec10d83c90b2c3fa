package kube_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/wait"
)

// TestAdmissionRefusesTheBadImage runs on the real apiserver: after Forbid,
// creating a Deployment (or a Pod) with the bad image in the namespace is
// refused with the policy's message, by tag and by digest, and so are a
// Pod (by a container or an init container), a StatefulSet and a CronJob
// with it; another namespace and other images are unaffected; after Allow
// it is accepted.
func TestAdmissionRefusesTheBadImage(t *testing.T) {
	c := cluster(t)
	ns := kubetest.CreateNamespace(t, c.AdminClient, "adm")
	other := kubetest.CreateNamespace(t, c.AdminClient, "adm-other")
	const (
		bad    = "registry.example.com/team/myapp:v3"
		digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	)
	a := kube.NewAdmission(clusterRoleClient(t, c, "rollbot-admission"), ns, "myapp", nil)
	t.Cleanup(func() { a.Allow(context.Background(), "v3") })
	ctx := context.Background()
	res, err := a.Forbid(ctx, bad, digest, platforms.ImageMark{Service: "myapp", Incident: "RB-4", By: "U0BOB"})
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Forbid = %+v, %v", res, err)
	}
	if again, err := a.Forbid(ctx, bad, digest, platforms.ImageMark{Service: "myapp", Incident: "RB-4", By: "U0BOB"}); err != nil || again.Outcome != platforms.Skipped {
		t.Errorf("second Forbid = %+v, %v", again, err)
	}

	n := 0
	create := func(ns, image string) error {
		n++
		d := kubetest.NewDeployment(ns, fmt.Sprintf("probe-%d", n), image, 0)
		_, err := c.AdminClient.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
		return err
	}
	// The policy takes effect once the apiserver has loaded it.
	err = wait.Until(ctx, 30*time.Second, "the admission policy to refuse "+bad, func() (bool, error) {
		err := create(ns, bad)
		return apierrors.IsForbidden(err) || apierrors.IsInvalid(err), err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = create(ns, bad)
	if err == nil || !strings.Contains(err.Error(), "image "+bad+" is marked DO_NOT_DEPLOY by rollbot (RB-4, by U0BOB)") || !strings.Contains(err.Error(), "/rollback allow myapp v3") {
		t.Errorf("refusal = %v", err)
	}
	if err := create(ns, "registry.example.com/team/myapp@"+digest); err == nil {
		t.Error("the bad image by digest was accepted")
	}
	if err := create(ns, "registry.example.com/team/myapp:v2"); err != nil {
		t.Errorf("a good image was refused: %v", err)
	}
	// Pods and the other workloads, by any of their containers (init
	// containers too); a CronJob's pod template lies one level deeper.
	podSpec := func(image string, init bool) corev1.PodSpec {
		s := corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/team/sidecar:v1"}},
			Tolerations: []corev1.Toleration{{Key: "kwok.x-k8s.io/node", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}}
		if init {
			s.InitContainers = []corev1.Container{{Name: "init", Image: image}}
		} else {
			s.Containers = append(s.Containers, corev1.Container{Name: "bad", Image: image})
		}
		return s
	}
	labels := map[string]string{"app": "probe"}
	tmpl := func(image string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec(image, false)}
	}
	for _, w := range []struct {
		kind   string
		create func(name, image string) error
	}{
		{"Pod", func(name, image string) error {
			_, err := c.AdminClient.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: podSpec(image, false)}, metav1.CreateOptions{})
			return err
		}},
		{"Pod init container", func(name, image string) error {
			_, err := c.AdminClient.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: podSpec(image, true)}, metav1.CreateOptions{})
			return err
		}},
		{"StatefulSet", func(name, image string) error {
			_, err := c.AdminClient.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl(image)}}, metav1.CreateOptions{})
			return err
		}},
		{"CronJob", func(name, image string) error {
			job := tmpl(image)
			job.Spec.RestartPolicy = corev1.RestartPolicyNever
			_, err := c.AdminClient.BatchV1().CronJobs(ns).Create(ctx, &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", Suspend: new(true), JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: job}}}}, metav1.CreateOptions{})
			return err
		}},
	} {
		n++
		err := w.create(fmt.Sprintf("probe-%d", n), bad)
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(fmt.Sprint(err), "is marked DO_NOT_DEPLOY by rollbot (RB-4") {
			t.Errorf("%s with the bad image: %v, want the policy's refusal", w.kind, err)
		}
		n++
		if err := w.create(fmt.Sprintf("probe-%d", n), "registry.example.com/team/myapp:v2"); err != nil {
			t.Errorf("%s with a good image was refused: %v", w.kind, err)
		}
	}
	if err := create(other, bad); err != nil {
		t.Errorf("another namespace refused the image: %v", err)
	}

	res, err = a.Allow(ctx, "v3")
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Allow = %+v, %v", res, err)
	}
	err = wait.Until(ctx, 30*time.Second, "the admission policy to let "+bad+" in again", func() (bool, error) {
		err := create(ns, bad)
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AdminClient.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, a.Name(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the policy is still there after the last image was allowed: %v", err)
	}
}

// clusterRoleClient is a client whose identity is a new ServiceAccount
// bound (ClusterRoleBinding) to exactly the ClusterRole name of
// deploy/kubernetes/rbac.yaml.
func clusterRoleClient(t *testing.T, c *kubetest.Cluster, name string) kubernetes.Interface {
	t.Helper()
	ctx := context.Background()
	b, err := os.ReadFile(rbacFile)
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.ClusterRole
	for _, doc := range strings.Split(string(b), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if cr, ok := obj.(*rbacv1.ClusterRole); err == nil && ok && cr.Name == name {
			role = cr
		}
	}
	if role == nil {
		t.Fatalf("%s has no ClusterRole %s", rbacFile, name)
	}
	ns := kubetest.CreateNamespace(t, c.AdminClient, "sa")
	unique := name + "-" + ns
	role.Name = unique
	if _, err := c.AdminClient.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AdminClient.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "rollbot"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: unique},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: unique},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "rollbot", Namespace: ns}}}
	if _, err := c.AdminClient.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.AdminClient.RbacV1().ClusterRoleBindings().Delete(context.Background(), unique, metav1.DeleteOptions{})
		c.AdminClient.RbacV1().ClusterRoles().Delete(context.Background(), unique, metav1.DeleteOptions{})
	})
	tr, err := c.AdminClient.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "rollbot", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path, err := c.WriteKubeconfig("kubeconfig-"+unique, "rollbot", tr.Status.Token)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kube.Clientset(kube.Config{Kubeconfig: path, Context: "kubetest", Namespace: ns, Deployment: "x"})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

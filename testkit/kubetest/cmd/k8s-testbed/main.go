// Command k8s-testbed starts the same Kubernetes control plane as rollbot's
// tests (package kubetest) for trying rollbot by hand, and keeps it running
// until interrupted (^C), then stops it and removes its files.
//
//	go run ./testkit/kubetest/cmd/k8s-testbed            # or .ci/k8s-testbed.sh
//	go run ./testkit/kubetest/cmd/k8s-testbed -demo      # + namespace prod, Deployment myapp (3 × v1), rollbot's Role
//
// It prints the admin kubeconfig path and, with -demo, a kubeconfig for a
// ServiceAccount bound to the Role in deploy/kubernetes/rbac.yaml, to use
// as `kubeconfig:` in rollbot's config. The binaries are found or built as
// for the tests (ROLLBOT_K8S_BIN, the cache, or .ci/setup.d/k8s.sh).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rollbot/testkit/kubetest"
)

func main() {
	demo := flag.Bool("demo", false, "create namespace prod with Deployment myapp (3 replicas of registry.local/myapp:v1) and a kubeconfig for rollbot's Role")
	ns := flag.String("namespace", "prod", "namespace for -demo")
	role := flag.String("role", "", "Role YAML for -demo's kubeconfig (default: deploy/kubernetes/rbac.yaml of this checkout)")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(*demo, *ns, *role); err != nil {
		log.Fatal(err)
	}
}

func run(demo bool, ns, rolePath string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	c, err := kubetest.StartCluster(ctx, kubetest.Options{Logf: log.Printf})
	if err != nil {
		return err
	}
	defer c.Stop()
	log.Printf("control plane up in %s", time.Since(start).Round(time.Millisecond))
	fmt.Printf("\nexport KUBECONFIG=%s   # admin (system:masters)\n", c.AdminKubeconfig)
	fmt.Printf("process logs: %s/*.log\n", c.Dir)

	if demo {
		if err := setupDemo(ctx, c, ns, rolePath); err != nil {
			return err
		}
	}
	fmt.Println("\nrunning; ^C stops the cluster and removes its files (KUBETEST_KEEP=1 keeps them)")
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Print("stopping")
			return nil
		case <-tick.C:
			if err := c.Err(); err != nil {
				return err
			}
		}
	}
}

func setupDemo(ctx context.Context, c *kubetest.Cluster, ns, rolePath string) error {
	cs := c.AdminClient
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	for {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, kubetest.NewDeployment(ns, "myapp", "registry.local/myapp:v1", 3), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if rolePath == "" {
		root, err := kubetest.RepoRoot()
		if err != nil {
			return err
		}
		rolePath = filepath.Join(root, "deploy", "kubernetes", "rbac.yaml")
	}
	role, err := kubetest.LoadRole(rolePath)
	if err != nil {
		return err
	}
	path, _, err := c.ServiceAccountKubeconfig(ctx, ns, role.Name, role.Rules, c.Dir)
	if err != nil {
		return err
	}
	fmt.Printf("\ndeployment %s/myapp: 3 × registry.local/myapp:v1 (tags ending in -broken crash-loop, -unready never get Ready)\n", ns)
	fmt.Printf("rollbot's kubeconfig (Role %s from %s): %s\n", role.Name, rolePath, path)
	fmt.Printf("rollbot config:\n  kubernetes: {kubeconfig: %s, namespace: %s, deployment: myapp}\n", path, ns)
	return nil
}

package kubetest

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"rollbot/testkit/wait"
)

func TestMain(m *testing.M) {
	// Find or build the binaries before m.Run, outside go test's -timeout.
	if _, err := BinDir(log.Printf); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// The script that builds the binaries and this package agree on where
// they are cached.
func TestToolsHashMatchesSetupScript(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(root, ".ci", "setup.d", "k8s.sh"))
	if err != nil {
		t.Fatal(err)
	}
	kwok := regexp.MustCompile(`(?m)^KWOK_VERSION=(\S+)`).FindSubmatch(script)
	hashLine := regexp.MustCompile(`(?m)^hash=.*$`).Find(script)
	if kwok == nil || hashLine == nil {
		t.Fatal("k8s.sh has no KWOK_VERSION= or hash= line")
	}
	if string(kwok[1]) != KwokVersion {
		t.Errorf("k8s.sh builds kwok %s, kubetest.KwokVersion is %s", kwok[1], KwokVersion)
	}
	cmd := exec.Command("bash", "-c", "set -euo pipefail; KWOK_VERSION="+string(kwok[1])+"; "+string(hashLine)+`; echo "$hash"`)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want, err := ToolsHash()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("k8s.sh hash %q, ToolsHash %q", got, want)
	}
}

func TestBinDirFromEnvMustBeComplete(t *testing.T) {
	t.Setenv("ROLLBOT_K8S_BIN", t.TempDir())
	_, err := BinDir(t.Logf)
	if err == nil || !strings.Contains(err.Error(), "ROLLBOT_K8S_BIN") || !strings.Contains(err.Error(), "kube-apiserver") {
		t.Fatalf("BinDir with an empty ROLLBOT_K8S_BIN: %v; want an error naming it and the missing binaries", err)
	}
}

// The cluster serves, notices a process that dies, and Stop leaves no
// process or file behind.
func TestClusterDetectsExitAndStopsClean(t *testing.T) {
	c := Start(t)
	ctx := context.Background()
	if _, err := c.AdminClient.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{}); err != nil {
		t.Fatalf("get node: %v", err)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("Err() on a healthy cluster: %v", err)
	}
	byName := map[string]*proc{}
	for _, p := range c.procs {
		byName[p.name] = p
	}
	kwok, sched := byName["kwok"], byName["kube-scheduler"]
	if kwok == nil || sched == nil {
		t.Fatalf("processes %v; want kwok and kube-scheduler", byName)
	}
	// kwok is started again when it dies (it sometimes panics at start):
	// a new process, and the node it plays stays Ready.
	old := kwok.pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "kwok to be started again", func() (bool, error) { return kwok.pid() != old, nil })
	if err := c.Err(); err != nil {
		t.Fatalf("Err() after kwok was started again = %v; want nil", err)
	}
	if log := c.Logs("kwok", 200); !strings.Contains(log, "kubetest: kwok exited (signal: killed); starting it again") {
		t.Errorf("kwok's log does not note the restart:\n%s", log)
	}
	ns := CreateNamespace(t, c.AdminClient, "restart")
	CreateDeployment(t, c.AdminClient, ns, "app", "registry.local/app:v1", 1)
	WaitRolledOut(t, c.AdminClient, ns, "app")
	// Any other process's exit is reported.
	if err := syscall.Kill(sched.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the cluster to report the scheduler's exit", func() (bool, error) { return c.Err() != nil, nil })
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "kube-scheduler exited") {
		t.Fatalf("Err() after killing kube-scheduler = %v; want it reported", err)
	}
	pids := []int{}
	for _, p := range c.procs {
		pids = append(pids, p.pid())
	}
	c.Stop()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d still running after Stop", pid)
		}
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", c.Dir, err)
	}
}

// Writes has what the API server answered to a ServiceAccount's writes,
// refused ones included, and nothing of the admin's or of access reviews.
func TestWritesAreTheServiceAccountsAsAnswered(t *testing.T) {
	c := Start(t)
	ctx := context.Background()
	ns := CreateNamespace(t, c.AdminClient, "audit")
	d := CreateDeployment(t, c.AdminClient, ns, "app", "registry.local/app:v1", 1) // the admin's: not kept
	kubeconfig, _ := c.KubeconfigForRules(t, ns, "patcher", []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "patch"}}})
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pause := []byte(`{"spec":{"paused":true}}`)
	if _, err := sa.AppsV1().Deployments(ns).Patch(ctx, "app", types.MergePatchType, pause, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	stale := []byte(fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"spec":{"paused":false}}`, d.ResourceVersion))
	if _, err := sa.AppsV1().Deployments(ns).Patch(ctx, "app", types.MergePatchType, stale, metav1.PatchOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("a patch on a stale resourceVersion: %v, want a conflict", err)
	}
	if _, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "delete", Group: "apps", Resource: "deployments"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ws, err := c.Writes(ns)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range ws {
		got = append(got, fmt.Sprintf("%s %d ok=%v", w, w.Code, w.OK()))
		if !strings.HasPrefix(w.User, "system:serviceaccount:"+ns+":") || w.Group != "apps" || w.Namespace != ns {
			t.Errorf("write %+v", w)
		}
	}
	if want := []string{"patch deployments/app 200 ok=true", "patch deployments/app 409 ok=false"}; !slices.Equal(got, want) {
		t.Errorf("Writes(%s) = %q, want %q", ns, got, want)
	}
	if other, err := c.Writes("default"); err != nil || len(other) != 0 {
		t.Errorf("Writes(default) = %v, %v; want none", other, err)
	}
}

// Two builders of one cache take turns: k8s.sh waits while another holds
// the build lock, then finds the other's result and builds nothing.
func TestSetupScriptWaitsForAnotherBuild(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	hash, err := ToolsHash()
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	lock, err := os.OpenFile(filepath.Join(cache, ".k8s-build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(root, ".ci", "setup.d", "k8s.sh"))
	cmd.Env = append(os.Environ(), "ROLLBOT_CACHE="+cache, "ENVFILE=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}()
	select {
	case err := <-done:
		done <- err
		t.Fatalf("k8s.sh ended while another build held the lock: %v\n%s", err, stderr.String())
	case <-time.After(time.Second):
	}
	if strings.Contains(stderr.String(), "building") {
		t.Fatalf("k8s.sh started building beside another build:\n%s", stderr.String())
	}
	// The other build finishes.
	bin := filepath.Join(cache, "k8s-"+hash, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("k8s.sh after the other build: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("k8s.sh still running 30 s after the other build ended:\n%s", stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != bin || strings.Contains(stderr.String(), "building") {
		t.Errorf("k8s.sh printed %q (stderr %q); want the other build's %s and no build", got, stderr.String(), bin)
	}
}

// Shared is one cluster for every test of the process, alive after the
// test that started it ended, and gone after StopShared.
func TestSharedOutlivesTheFirstTest(t *testing.T) {
	var first *Cluster
	t.Run("first", func(t *testing.T) { first = Shared(t) })
	t.Run("second", func(t *testing.T) {
		c := Shared(t)
		if c != first {
			t.Fatalf("second Shared = %p, want the first cluster %p", c, first)
		}
		ns := CreateNamespace(t, c.AdminClient, "shared")
		if _, err := c.AdminClient.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{}); err != nil {
			t.Fatalf("the shared cluster after the first test ended: %v", err)
		}
	})
	StopShared()
	if _, err := os.Stat(first.Dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind by StopShared: %v", first.Dir, err)
	}
}

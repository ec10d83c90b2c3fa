// Package kubetest runs a real Kubernetes control plane for tests: etcd,
// kube-apiserver (RBAC enforced), kube-controller-manager (deployment,
// replicaset, job, serviceaccount, garbage collector and namespace
// controllers), kube-scheduler and kwok, which plays the kubelet of one
// fake node. Every process listens on a random 127.0.0.1 port, has a start
// deadline, is watched for an early exit, and is stopped (SIGTERM, then
// SIGKILL) by Stop.
//
// kwok runs the Stages in kwok-stages.yaml: pods become Ready at once,
// except those whose image tag is "broken" or ends in "-broken" (crash-loop:
// never Ready, restarts counting up) or "unready"/"-unready" (Running,
// never Ready) or "missing"/"-missing" (the image cannot be pulled: Pending,
// waiting in ErrImagePull). A Job's pod runs and then completes with exit code 0,
// unless its image tag is "fail" or ends in "-fail": then its container
// exits with code 1 and the pod fails. kwok also
// serves container logs (kubectl logs, pods/log): every container's log is
// the file Cluster.ContainerLog (SetContainerLog), and the previous
// container's log is Cluster.PreviousContainerLog (SetPreviousContainerLog).
// The API server keeps an audit log of every write made with a
// ServiceAccount's credentials (the code under test's): Cluster.Writes
// counts them on the platform's side.
//
// Start one cluster per test package from TestMain (StartCluster) or per
// test (Start); it takes a few seconds once the binaries exist (BinDir).
package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"rollbot/testkit/nettest"
	"rollbot/testkit/wait"
)

//go:embed kwok-stages.yaml
var kwokStages []byte

// NodeName is the kwok node pods are scheduled to.
const NodeName = "kwok-node-0"

// Cluster is a running control plane.
type Cluster struct {
	// Dir holds data, certificates, kubeconfigs and each process's log
	// (<name>.log). It is removed by Stop.
	Dir string
	// Server is the API server URL, https://127.0.0.1:<port>.
	Server string
	// CAFile is the API server's self-signed certificate.
	CAFile string
	// AdminKubeconfig is a kubeconfig for a system:masters user.
	AdminKubeconfig string
	AdminConfig     *rest.Config
	AdminClient     kubernetes.Interface
	// ContainerLog is the file kwok serves as every container's log; see
	// SetContainerLog.
	ContainerLog string
	// PreviousContainerLog is the file kwok serves as every container's
	// previous log (kubectl logs --previous); see SetPreviousContainerLog.
	PreviousContainerLog string
	// AuditLog is the API server's audit log of the ServiceAccounts'
	// writes (JSON lines); see Writes.
	AuditLog string

	mu    sync.Mutex
	procs []*proc
	stop  sync.Once
}

type proc struct {
	name string
	log  string
	done chan struct{}
	err  error // set before done is closed

	mu       sync.Mutex
	cmd      *exec.Cmd // the running process (a restart replaces it)
	stopping bool
}

// signal sends sig to the process now running.
func (p *proc) signal(sig os.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopping = true
	_ = p.cmd.Process.Signal(sig)
}

// kwokRestarts is how often kwok is started again after it died. kwok
// v0.8.0 sometimes panics while it first matches its Stages (a nil
// pointer in its CEL registry, seen once in CI: every test of the package
// then failed); it keeps no state of its own (it reconciles the node and
// pods from the API server), so starting it again is safe.
const kwokRestarts = 3

// Options tune StartCluster. The zero value is fine.
type Options struct {
	// BinDir holds the binaries; empty means BinDir(Logf).
	BinDir string
	// Logf reports progress; nil discards it.
	Logf func(format string, args ...any)
	// Timeout bounds the start once the binaries exist (default 90s).
	Timeout time.Duration
}

// Start starts a cluster for one test and stops it on t.Cleanup. It fails
// the test with the reason when the cluster cannot start.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, err := StartCluster(context.Background(), Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

var shared struct {
	once    sync.Once
	cluster *Cluster
	err     error
}

// Shared is one cluster for the tests of this process that only use
// namespaced objects of their own (CreateNamespace): each control plane
// costs a core for a while as it starts and a share of one while it runs,
// so tests that can share one do. It starts on first use; StopShared
// (from TestMain) stops it, and it dies with the process in any case.
// A test that touches what is cluster-wide (nodes, cluster roles,
// webhooks, CRDs, the container log files, the audit log of another
// namespace) uses Start.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.once.Do(func() {
		// Not t.Logf: the cluster outlives the test that started it.
		logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
		shared.cluster, shared.err = StartCluster(context.Background(), Options{Logf: logf})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	if err := shared.cluster.Err(); err != nil {
		t.Fatalf("the shared cluster: %v", err)
	}
	return shared.cluster
}

// StopShared stops the cluster Shared started, if any.
func StopShared() {
	if shared.cluster != nil {
		shared.cluster.Stop()
	}
}

// StartCluster starts etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok, creates the kwok node, and returns once pods can
// be created. On error nothing is left running.
func StartCluster(ctx context.Context, opts Options) (_ *Cluster, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bin := opts.BinDir
	if bin == "" {
		if bin, err = BinDir(logf); err != nil {
			return nil, err
		}
	} else if err := checkBinDir(bin); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()

	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	c := &Cluster{Dir: dir}
	defer func() {
		if err != nil {
			err = fmt.Errorf("kubetest: %w", err)
			c.Stop()
		}
	}()

	token, err := c.writeCredentials()
	if err != nil {
		return nil, err
	}
	ports, err := nettest.FreePorts(4)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	if _, err := c.run(bin, "etcd",
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return nil, err
	}
	if err := c.waitHTTP(ctx, "etcd", etcdURL+"/health", nil); err != nil {
		return nil, err
	}

	c.Server = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	c.CAFile = filepath.Join(dir, "certs", "apiserver.crt")
	audit, err := c.auditFlags()
	if err != nil {
		return nil, err
	}
	if _, err := c.run(bin, "kube-apiserver", append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]), "--cert-dir=" + filepath.Join(dir, "certs"),
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--endpoint-reconciler-type=none", "--profiling=false",
		"--disable-admission-plugins=TaintNodesByCondition",
		// Container logs come from kwok's server at the node's InternalIP
		// (its Hostname does not resolve).
		"--kubelet-preferred-address-types=InternalIP",
	}, audit...)...); err != nil {
		return nil, err
	}
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	if err := c.waitHTTP(ctx, "kube-apiserver", c.Server+"/readyz", insecure); err != nil {
		return nil, err
	}
	logf("kubetest: etcd and kube-apiserver ready in %s", time.Since(start).Round(time.Millisecond))

	if c.AdminKubeconfig, err = c.WriteKubeconfig("admin.kubeconfig", "admin", token); err != nil {
		return nil, err
	}
	if c.AdminConfig, err = clientcmd.BuildConfigFromFlags("", c.AdminKubeconfig); err != nil {
		return nil, err
	}
	c.AdminConfig.QPS, c.AdminConfig.Burst = 100, 200
	if c.AdminClient, err = kubernetes.NewForConfig(c.AdminConfig); err != nil {
		return nil, err
	}

	kwokConfig := filepath.Join(dir, "kwok.yaml")
	if err := c.writeKwokConfig(kwokConfig); err != nil {
		return nil, err
	}
	kwokAddr := "127.0.0.1:" + strconv.Itoa(ports[3])
	for _, p := range []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", []string{"--kubeconfig=" + c.AdminKubeconfig,
			"--controllers=deployment,replicaset,statefulset,daemonset,job,serviceaccount,garbagecollector,namespace",
			"--leader-elect=false", "--secure-port=0"}},
		{"kube-scheduler", []string{"--kubeconfig=" + c.AdminKubeconfig, "--leader-elect=false", "--secure-port=0"}},
		{"kwok", []string{"--kubeconfig=" + c.AdminKubeconfig, "--config=" + kwokConfig,
			"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
			"--node-ip=127.0.0.1", "--node-port=" + strconv.Itoa(ports[3]), "--server-address=" + kwokAddr,
			"--tls-cert-file=" + filepath.Join(dir, "kwok.crt"), "--tls-private-key-file=" + filepath.Join(dir, "kwok.key")}},
	} {
		if _, err := c.run(bin, p.name, p.args...); err != nil {
			return nil, err
		}
	}

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        NodeName,
		Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": NodeName},
	}}
	if err := c.poll(ctx, "create node "+NodeName, func() (bool, error) {
		_, err := c.AdminClient.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		return err == nil || apierrors.IsAlreadyExists(err), nil
	}); err != nil {
		return nil, err
	}
	if err := c.poll(ctx, "node "+NodeName+" Ready (kwok)", func() (bool, error) {
		n, err := c.AdminClient.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	}); err != nil {
		return nil, err
	}
	if err := c.poll(ctx, "ServiceAccount default/default (kube-controller-manager)", func() (bool, error) {
		_, err := c.AdminClient.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return nil, err
	}
	logf("kubetest: control plane %s ready in %s (%s)", K8sVersion, time.Since(start).Round(time.Millisecond), dir)
	return c, nil
}

// writeKwokConfig writes kwok's Stages and a ClusterLogs that serves
// ContainerLog as the log of every container, plus the TLS key pair of
// kwok's kubelet server (the API server does not verify it: it has no
// --kubelet-certificate-authority).
func (c *Cluster) writeKwokConfig(path string) error {
	c.ContainerLog = filepath.Join(c.Dir, "container.log")
	c.PreviousContainerLog = filepath.Join(c.Dir, "previous.log")
	if err := c.SetContainerLog(); err != nil {
		return err
	}
	if err := c.SetPreviousContainerLog(); err != nil {
		return err
	}
	logs := fmt.Sprintf(`
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: rollbot-all-containers
spec:
  logs:
  - logsFile: %q
    previousLogsFile: %q
`, c.ContainerLog, c.PreviousContainerLog)
	if err := os.WriteFile(path, append(slices.Clone(kwokStages), logs...), 0o600); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: NodeName},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "kwok.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Dir, "kwok.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// SetContainerLog replaces what kwok serves as every container's log
// (kubectl logs, the pods/log subresource) with lines. Unlike a kubelet,
// kwok never ends a log stream with follow=true: it cannot tell that the
// container stopped.
func (c *Cluster) SetContainerLog(lines ...string) error {
	return c.WriteContainerLog(false, func(w io.Writer) error {
		for _, l := range lines {
			if err := WriteLogLine(w, l); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetPreviousContainerLog replaces what kwok serves as every container's
// previous log (kubectl logs --previous).
func (c *Cluster) SetPreviousContainerLog(lines ...string) error {
	return c.WriteContainerLog(true, func(w io.Writer) error {
		for _, l := range lines {
			if err := WriteLogLine(w, l); err != nil {
				return err
			}
		}
		return nil
	})
}

// WriteContainerLog replaces the current (or previous) container log with
// what write writes (lines in CRI format: WriteLogLine), for logs too big
// to hold in memory.
func (c *Cluster) WriteContainerLog(previous bool, write func(w io.Writer) error) error {
	path := c.ContainerLog
	if previous {
		path = c.PreviousContainerLog
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = write(bw)
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// WriteLogLine writes one log line in the CRI log format kwok reads:
// time stream tag message.
func WriteLogLine(w io.Writer, line string) error {
	_, err := fmt.Fprintf(w, "%s stdout F %s\n", time.Now().UTC().Format(time.RFC3339Nano), line)
	return err
}

// writeCredentials writes the service-account signing key pair and the
// static token file with one system:masters user; it returns that token.
func (c *Cluster) writeCredentials() (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return "", err
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b)
	if err := os.WriteFile(filepath.Join(c.Dir, "tokens.csv"), []byte(token+",admin,admin-uid,system:masters\n"), 0o600); err != nil {
		return "", err
	}
	return token, nil
}

// WriteKubeconfig writes a kubeconfig named file in the cluster's
// directory for a bearer token, with one context named "kubetest".
func (c *Cluster) WriteKubeconfig(file, user, token string) (string, error) {
	path := filepath.Join(c.Dir, file)
	return path, writeKubeconfig(path, c.Server, c.CAFile, user, token)
}

func writeKubeconfig(path, server, caFile, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: caFile}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user}
	cfg.CurrentContext = "kubetest"
	return clientcmd.WriteToFile(*cfg, path)
}

// run starts bin/name with args, its output in Dir/name.log.
func (c *Cluster) run(bin, name string, args ...string) (*proc, error) {
	restarts := 0
	if name == "kwok" {
		restarts = kwokRestarts
	}
	logPath := filepath.Join(c.Dir, name+".log")
	p := &proc{name: name, log: logPath, done: make(chan struct{})}
	start := func() (*exec.Cmd, *os.File, error) {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, err
		}
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = c.Dir
		cmd.Stdout, cmd.Stderr = f, f
		// Die with the test process even if it is killed; own process
		// group so that a terminal's ^C reaches the test first.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		if err := cmd.Start(); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("start %s: %w", name, err)
		}
		return cmd, f, nil
	}
	cmd, f, err := start()
	if err != nil {
		return nil, err
	}
	p.cmd = cmd
	go func() {
		for {
			err := cmd.Wait()
			f.Close()
			p.mu.Lock()
			again := !p.stopping && restarts > 0
			if again {
				restarts--
				appendNote(logPath, fmt.Sprintf("--- kubetest: %s exited (%v); starting it again ---", name, err))
				if cmd, f, err = start(); err == nil {
					p.cmd = cmd
					p.mu.Unlock()
					continue
				}
			}
			p.err = err
			p.mu.Unlock()
			close(p.done)
			return
		}
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// appendNote adds a line of kubetest's own to a process's log.
func appendNote(path, line string) {
	if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		fmt.Fprintf(f, "\n%s\n", line)
		f.Close()
	}
}

// pid is the process now running.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Err reports the first control-plane process that has exited, with the
// end of its log; nil while all run.
func (c *Cluster) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		select {
		case <-p.done:
			b, _ := os.ReadFile(p.log)
			return fmt.Errorf("%s exited (%v); end of %s:\n%s", p.name, p.err, p.log, tail(string(b), 20))
		default:
		}
	}
	return nil
}

// poll calls cond every 50ms (testkit/wait) until it returns true, an
// error, the context ends or a process exits.
func (c *Cluster) poll(ctx context.Context, what string, cond func() (bool, error)) error {
	timeout := 24 * time.Hour // bounded by ctx (StartCluster's timeout)
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	return wait.UntilEvery(ctx, 50*time.Millisecond, timeout, what, func() (bool, error) {
		if err := c.Err(); err != nil {
			return false, wait.Stop(err)
		}
		ok, err := cond()
		if err != nil {
			return false, wait.Stop(err)
		}
		return ok, nil
	})
}

func (c *Cluster) waitHTTP(ctx context.Context, what, url string, client *http.Client) error {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	return c.poll(ctx, what+" at "+url, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// Stop stops the processes in reverse start order (SIGTERM, SIGKILL after
// 5s) and removes Dir. Safe to call more than once.
func (c *Cluster) Stop() {
	c.stop.Do(func() {
		c.mu.Lock()
		procs := c.procs
		c.mu.Unlock()
		for i := len(procs) - 1; i >= 0; i-- {
			p := procs[i]
			select {
			case <-p.done:
				continue
			default:
			}
			p.signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				p.signal(syscall.SIGKILL)
				<-p.done
			}
		}
		if c.Dir != "" && os.Getenv("KUBETEST_KEEP") == "" {
			_ = os.RemoveAll(c.Dir)
		}
	})
}

// Logs returns the end of a process's log (e.g. "kube-controller-manager").
func (c *Cluster) Logs(name string, lines int) string {
	b, err := os.ReadFile(filepath.Join(c.Dir, name+".log"))
	if err != nil {
		return err.Error()
	}
	return tail(string(bytes.TrimSpace(b)), lines)
}

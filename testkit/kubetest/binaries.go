package kubetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Versions of the control plane. K8sVersion and the etcd version are fixed
// by .ci/k8s-tools/go.mod and .ci/etcd-tools/go.mod; KwokVersion must match
// .ci/setup.d/k8s.sh.
const (
	K8sVersion  = "v1.37.2"
	KwokVersion = "v0.8.0"
)

// Binaries are the programs the testbed runs.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}

// RepoRoot is the rollbot checkout this package was built from.
func RepoRoot() (string, error) {
	isRoot := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, ".ci", "k8s-tools", "go.sum"))
		return err == nil
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", "..")); isRoot(root) {
			return root, nil
		}
	}
	// Built with -trimpath, or moved: look upwards from the working directory.
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("kubetest: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if isRoot(d) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("kubetest: cannot find the rollbot repository (.ci/k8s-tools/go.sum) from %s: run from inside the checkout or set ROLLBOT_K8S_BIN", dir)
		}
	}
}

// ToolsHash identifies a build of the binaries: sha256 over the tools
// modules' go.sum files and the kwok version, first 16 hex digits — the same
// as .ci/setup.d/k8s.sh computes.
func ToolsHash() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{".ci/k8s-tools/go.sum", ".ci/etcd-tools/go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return "", fmt.Errorf("kubetest: tools hash: %w", err)
		}
		h.Write(b)
	}
	fmt.Fprintf(h, "kwok %s\n", KwokVersion)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// cacheRoots are where built binaries are looked for, in order:
// $ROLLBOT_CACHE (default /var/cache/rollbot), then the user's cache dir.
func cacheRoots() []string {
	var roots []string
	if c := os.Getenv("ROLLBOT_CACHE"); c != "" {
		roots = append(roots, c)
	} else {
		roots = append(roots, "/var/cache/rollbot")
	}
	if c, err := os.UserCacheDir(); err == nil {
		roots = append(roots, filepath.Join(c, "rollbot"))
	}
	return roots
}

func checkBinDir(dir string) error {
	var missing []string
	for _, b := range Binaries {
		st, err := os.Stat(filepath.Join(dir, b))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s lacks %s", dir, strings.Join(missing, ", "))
	}
	return nil
}

// BinDir returns a directory holding every program in Binaries:
// $ROLLBOT_K8S_BIN when set (set by .ci/run), else the cache directory for
// the current ToolsHash, else it builds them by running .ci/setup.d/k8s.sh
// (about 10 minutes of CPU on a cold Go build cache; call it before
// testing.M.Run so that go test's -timeout does not apply). logf reports
// what it does.
func BinDir(logf func(format string, args ...any)) (string, error) {
	if dir := os.Getenv("ROLLBOT_K8S_BIN"); dir != "" {
		if err := checkBinDir(dir); err != nil {
			return "", fmt.Errorf("kubetest: ROLLBOT_K8S_BIN: %w; unset it or run .ci/setup.d/k8s.sh", err)
		}
		return dir, nil
	}
	hash, err := ToolsHash()
	if err != nil {
		return "", err
	}
	for _, root := range cacheRoots() {
		dir := filepath.Join(root, "k8s-"+hash, "bin")
		if checkBinDir(dir) == nil {
			return dir, nil
		}
	}
	return build(hash, logf)
}

func build(hash string, logf func(format string, args ...any)) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	if _, err := exec.LookPath("go"); err != nil {
		return "", errors.New("kubetest: the control-plane binaries are not built and there is no `go` on PATH to build them: run .ci/setup.d/k8s.sh or set ROLLBOT_K8S_BIN")
	}
	var cache string
	var tried []string
	for _, r := range cacheRoots() {
		if err := os.MkdirAll(r, 0o755); err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", r, err))
			continue
		}
		f, err := os.CreateTemp(r, ".probe")
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", r, err))
			continue
		}
		f.Close()
		os.Remove(f.Name())
		cache = r
		break
	}
	if cache == "" {
		return "", fmt.Errorf("kubetest: no writable cache directory to build the control plane into (%s): set ROLLBOT_CACHE", strings.Join(tried, "; "))
	}
	logf("kubetest: building etcd, kube-apiserver, kube-controller-manager, kube-scheduler %s and kwok %s into %s/k8s-%s (≈10 min on a cold Go build cache)", K8sVersion, KwokVersion, cache, hash)
	start := time.Now()
	cmd := exec.Command("bash", filepath.Join(root, ".ci", "setup.d", "k8s.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "ROLLBOT_CACHE="+cache, "ENVFILE=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kubetest: building the control plane with .ci/setup.d/k8s.sh failed: %w\n%s", err, tail(stderr.String(), 40))
	}
	dir := strings.TrimSpace(stdout.String())
	if err := checkBinDir(dir); err != nil {
		return "", fmt.Errorf("kubetest: .ci/setup.d/k8s.sh finished but %w", err)
	}
	logf("kubetest: built the control plane in %s", time.Since(start).Round(time.Second))
	return dir, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Package dockertest holds the helpers that rollbot's Docker adapter tests
// (platforms/swarm, platforms/compose and the end-to-end tests) share: a
// client for the engine of this machine, sample service images built FROM
// scratch (the engine has no images and cannot pull), a swarm that is
// initialised for the tests and left again by the last test binary using it
// (EnsureSwarm, from TestMain), and swarm services of those images for a
// test (Service, Deploy, WaitTasks).
//
// Images are named rollbot-sampleapp:<tag> and stay in the engine's image
// store after the tests, cached by tag: each carries a label with the hash
// of its content (binaries + Dockerfile), and a build is skipped when an
// image with the same tag and hash already exists.
//
// Health: scratch has no curl, so every image gets a tiny static
// healthcheck binary (./healthcheck) and
// HEALTHCHECK CMD ["/healthcheck","http://127.0.0.1:8080/health"], unless
// the variant asks for NoHealthcheck. The sample service itself is not
// changed.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"rollbot/testkit/wait"
)

// Repo is the repository name of every sample image.
const Repo = "rollbot-sampleapp"

// hashLabel carries the content hash of a built image.
const hashLabel = "rollbot.dockertest.hash"

// Connect returns a client for the engine named by DOCKER_HOST (or the
// local socket) and checks that the engine answers.
func Connect(ctx context.Context) (*client.Client, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("the Docker engine at %s does not answer (the Docker tests need the engine of this machine running): %w", cli.DaemonHost(), err)
	}
	return cli, nil
}

// Client is Connect for tests: it fails the test when the engine is unreachable.
func Client(t testing.TB) *client.Client {
	t.Helper()
	cli, err := Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Variant is one build of the sample service.
type Variant struct {
	// Tag is the image tag: the image is rollbot-sampleapp:<Tag>.
	Tag string
	// Version is main.version (what /version answers); default Tag.
	Version      string
	ErrorRatio   string // main.errorRatio, e.g. "0.3"
	FailHealth   bool   // /health answers 503
	CrashOnStart bool   // exits 1 right after start
	// NoHealthcheck leaves the HEALTHCHECK out of the image, so only an
	// HTTP check from outside can tell whether the service is healthy.
	NoHealthcheck bool
}

// Ref is the image reference of the variant.
func (v Variant) Ref() string { return Repo + ":" + v.Tag }

func (v Variant) ldflags() string {
	ver := v.Version
	if ver == "" {
		ver = v.Tag
	}
	flags := []string{"-X main.version=" + ver}
	if v.ErrorRatio != "" {
		flags = append(flags, "-X main.errorRatio="+v.ErrorRatio)
	}
	if v.FailHealth {
		flags = append(flags, "-X main.failHealth=true")
	}
	if v.CrashOnStart {
		flags = append(flags, "-X main.crashOnStart=true")
	}
	return strings.Join(flags, " ")
}

func (v Variant) dockerfile() string {
	var b strings.Builder
	b.WriteString("FROM scratch\nCOPY sampleapp /sampleapp\n")
	if !v.NoHealthcheck {
		b.WriteString("COPY healthcheck /healthcheck\n")
		b.WriteString(`HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["/healthcheck","http://127.0.0.1:8080/health"]` + "\n")
	}
	b.WriteString("EXPOSE 8080\nENTRYPOINT [\"/sampleapp\"]\n")
	return b.String()
}

var (
	buildMu  sync.Mutex
	binCache = map[string][]byte{} // go package + ldflags -> binary
)

// moduleRoot finds the directory of rollbot's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the rollbot module")
	}
	return filepath.Dir(mod), nil
}

// goBuild builds a static binary of pkg with ldflags and returns its bytes.
func goBuild(ctx context.Context, pkg, ldflags string) ([]byte, error) {
	key := pkg + "\x00" + ldflags
	if b, ok := binCache[key]; ok {
		return b, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dockertest-build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %w: %s", pkg, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	binCache[key] = b
	return b, nil
}

// Image builds (or finds cached) the sample service image of v and
// returns its reference, rollbot-sampleapp:<tag>.
func Image(ctx context.Context, cli *client.Client, v Variant) (string, error) {
	if v.Tag == "" {
		return "", errors.New("dockertest image: tag required")
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	app, err := goBuild(ctx, "rollbot/examples/sampleapp", v.ldflags())
	if err != nil {
		return "", err
	}
	files := map[string][]byte{"Dockerfile": []byte(v.dockerfile()), "sampleapp": app}
	if !v.NoHealthcheck {
		hc, err := goBuild(ctx, "rollbot/testkit/dockertest/healthcheck", "-s -w")
		if err != nil {
			return "", err
		}
		files["healthcheck"] = hc
	}
	h := sha256.New()
	for _, name := range []string{"Dockerfile", "sampleapp", "healthcheck"} {
		fmt.Fprintf(h, "%s %d\n", name, len(files[name]))
		h.Write(files[name])
	}
	sum := hex.EncodeToString(h.Sum(nil))
	ref := v.Ref()
	if img, err := cli.ImageInspect(ctx, ref); err == nil && img.Config != nil && img.Config.Labels[hashLabel] == sum {
		return ref, nil
	} else if err != nil && !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect image %s: %w", ref, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{"Dockerfile", "sampleapp", "healthcheck"} {
		b, ok := files[name]
		if !ok {
			continue
		}
		mode := int64(0o755)
		if name == "Dockerfile" {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return "", err
		}
		if _, err := tw.Write(b); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	res, err := cli.ImageBuild(ctx, &buf, client.ImageBuildOptions{
		Tags:        []string{ref},
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{hashLabel: sum, "rollbot.dockertest": "true"},
	})
	if err != nil {
		return "", fmt.Errorf("build image %s: %w", ref, err)
	}
	defer res.Body.Close()
	if err := readBuildStream(res.Body); err != nil {
		return "", fmt.Errorf("build image %s: %w", ref, err)
	}
	return ref, nil
}

// readBuildStream drains a build's JSON message stream and returns the
// first error message in it.
func readBuildStream(r io.Reader) error {
	dec := json.NewDecoder(r)
	var log strings.Builder
	for {
		var msg struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		log.WriteString(msg.Stream)
		if msg.Error != "" {
			return fmt.Errorf("%s (build log: %s)", msg.Error, log.String())
		}
	}
}

// MustImage is Image for tests.
func MustImage(t testing.TB, cli *client.Client, v Variant) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ref, err := Image(ctx, cli, v)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// Name returns prefix plus a random suffix, for services, projects and
// containers that must not clash with a parallel test run.
func Name(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestLabel marks the swarm services tests create (value "true"): the last
// test binary to leave the test swarm removes any of them that a killed
// test run left behind.
const TestLabel = "rollbot.test"

// swarmLabel marks a swarm that dockertest initialised.
const swarmLabel = "rollbot.dockertest.initialised"

const swarmLock = "/tmp/rollbot-dockertest-swarm.lock"

// EnsureSwarm makes the engine a single-node swarm manager for the tests.
// Several test binaries may use the swarm at once: each holds a shared
// lock on a file while it does. The returned release func drops that lock
// and, when no other test binary holds it and the swarm was initialised by
// dockertest (not by the machine's owner), leaves the swarm and removes
// the docker_gwbridge network that swarm init created.
func EnsureSwarm(ctx context.Context, cli *client.Client) (release func(context.Context) error, err error) {
	f, err := os.OpenFile(swarmLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("swarm lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("swarm lock: %w", err)
	}
	fail := func(err error) (func(context.Context) error, error) {
		f.Close()
		return nil, err
	}
	info, err := cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return fail(fmt.Errorf("docker info: %w", err))
	}
	switch info.Info.Swarm.LocalNodeState {
	case swarm.LocalNodeStateActive:
		if !info.Info.Swarm.ControlAvailable {
			return fail(errors.New("this engine is a swarm worker, not a manager: the swarm tests need a manager"))
		}
	case swarm.LocalNodeStateInactive:
		gwExisted := networkExists(ctx, cli, "docker_gwbridge")
		_, err := cli.SwarmInit(ctx, client.SwarmInitOptions{
			ListenAddr:    "127.0.0.1:2377",
			AdvertiseAddr: "127.0.0.1",
			Spec: swarm.Spec{Annotations: swarm.Annotations{Labels: map[string]string{
				swarmLabel: "true", "rollbot.dockertest.gwbridge-existed": fmt.Sprint(gwExisted),
			}}},
		})
		if err != nil {
			// Another test binary may have initialised it in the meantime.
			if info2, err2 := cli.Info(ctx, client.InfoOptions{}); err2 != nil || info2.Info.Swarm.LocalNodeState != swarm.LocalNodeStateActive {
				return fail(fmt.Errorf("swarm init: %w", err))
			}
		}
	default:
		return fail(fmt.Errorf("swarm is in state %q; expected active or inactive", info.Info.Swarm.LocalNodeState))
	}
	return func(ctx context.Context) error {
		defer f.Close()
		// Still used by another test binary? Then it will leave.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return nil
		}
		sw, err := cli.SwarmInspect(ctx, client.SwarmInspectOptions{})
		if err != nil {
			return fmt.Errorf("swarm inspect: %w", err)
		}
		labels := sw.Swarm.Spec.Labels
		if labels[swarmLabel] != "true" {
			return nil // the machine's own swarm: leave it as it was
		}
		svcs, err := cli.ServiceList(ctx, client.ServiceListOptions{})
		if err != nil {
			return fmt.Errorf("service list: %w", err)
		}
		// No other test binary runs (the lock says so): test services left
		// now come from a killed run. Anything else is someone's own.
		var others []string
		for _, s := range svcs.Items {
			if s.Spec.Labels[TestLabel] != "true" {
				others = append(others, s.Spec.Name)
				continue
			}
			if _, err := cli.ServiceRemove(ctx, s.ID, client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				return fmt.Errorf("remove stale test service %s: %w", s.Spec.Name, err)
			}
		}
		if len(others) > 0 {
			return fmt.Errorf("not leaving the test swarm: services %v exist that no test created", others)
		}
		if _, err := cli.SwarmLeave(ctx, client.SwarmLeaveOptions{Force: true}); err != nil {
			return fmt.Errorf("swarm leave: %w", err)
		}
		if labels["rollbot.dockertest.gwbridge-existed"] == "false" {
			// The bridge may still have the ingress sandbox attached for a moment.
			err := wait.UntilEvery(ctx, 200*time.Millisecond, 20*time.Second, "docker_gwbridge to be removed", func() (bool, error) {
				_, err := cli.NetworkRemove(ctx, "docker_gwbridge", client.NetworkRemoveOptions{})
				return err == nil || cerrdefs.IsNotFound(err), err
			})
			if err != nil {
				return err
			}
		}
		return nil
	}, nil
}

func networkExists(ctx context.Context, cli *client.Client, name string) bool {
	_, err := cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	return err == nil
}

// Service starts a replicated swarm service of image for a test, with
// host-mode published port 8080 (the routing mesh is not needed) and short
// restart, monitor and stop timings; it waits until the tasks run and
// removes the service (and waits for its containers to go) when the test
// ends. It returns the service name.
func Service(t testing.TB, cli *client.Client, image string, replicas uint64) string {
	t.Helper()
	return ServiceWith(t, cli, image, ServiceOptions{Replicas: replicas})
}

// ServiceOptions are the settings of ServiceWith.
type ServiceOptions struct {
	Replicas uint64 // default 1
	// PublishedPort publishes the container's 8080 on this port of the
	// host (host mode, so at most one task per node); 0: a port the
	// engine picks, per task and per IP family.
	PublishedPort uint32
	// Env is the containers' environment, e.g. SAMPLEAPP_SELF_LOAD=20.
	Env []string
}

// ServiceWith is Service with options.
func ServiceWith(t testing.TB, cli *client.Client, image string, o ServiceOptions) string {
	t.Helper()
	ctx := context.Background()
	name := Name("rollbot-test-")
	delay := time.Second
	replicas := o.Replicas
	if replicas == 0 {
		replicas = 1
	}
	upd := &swarm.UpdateConfig{Parallelism: 1, Monitor: 2 * time.Second, FailureAction: swarm.UpdateFailureActionPause}
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name, Labels: map[string]string{TestLabel: "true"}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: image, Env: o.Env, StopGracePeriod: &delay},
			RestartPolicy: &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionAny, Delay: &delay},
		},
		Mode:           swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		UpdateConfig:   upd,
		RollbackConfig: upd,
		EndpointSpec: &swarm.EndpointSpec{Ports: []swarm.PortConfig{
			{Protocol: "tcp", TargetPort: 8080, PublishedPort: o.PublishedPort, PublishMode: swarm.PortConfigPublishModeHost},
		}},
	}
	res, err := cli.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: spec})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	t.Cleanup(func() {
		if _, err := cli.ServiceRemove(context.Background(), res.ID, client.ServiceRemoveOptions{}); err != nil {
			t.Errorf("remove service %s: %v", name, err)
		}
		// Wait for its containers to go, so the swarm can be left cleanly.
		wait.Every(t, 200*time.Millisecond, time.Minute, "the containers of "+name+" to go", func() (bool, error) {
			l, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
				Filters: make(client.Filters).Add("label", "com.docker.swarm.service.id="+res.ID)})
			if err != nil {
				return false, err
			}
			return len(l.Items) == 0, fmt.Errorf("%d containers of %s left", len(l.Items), name)
		})
	})
	WaitTasks(t, cli, name, image, int(replicas), true)
	return name
}

// WaitTasks waits until n tasks of the service run image (as written in
// the spec); with all, no other task of the service may be meant to run.
func WaitTasks(t testing.TB, cli *client.Client, service, image string, n int, all bool) []swarm.Task {
	t.Helper()
	var running []swarm.Task
	wait.Every(t, 200*time.Millisecond, 90*time.Second, "tasks of "+service, func() (bool, error) {
		tasks, err := cli.TaskList(context.Background(), client.TaskListOptions{Filters: make(client.Filters).Add("service", service).Add("desired-state", "running")})
		if err != nil {
			return false, err
		}
		running = running[:0]
		for _, tk := range tasks.Items {
			if tk.Status.State == swarm.TaskStateRunning && tk.Spec.ContainerSpec != nil && tk.Spec.ContainerSpec.Image == image {
				running = append(running, tk)
			}
		}
		return len(running) == n && (!all || len(tasks.Items) == n), fmt.Errorf("%d/%d tasks running %s (%d meant to run)", len(running), n, image, len(tasks.Items))
	})
	return running
}

// Deploy updates the service's image the way a CI pipeline would.
func Deploy(t testing.TB, cli *client.Client, service, image string) {
	t.Helper()
	ctx := context.Background()
	s, err := cli.ServiceInspect(ctx, service, client.ServiceInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := s.Service.Spec
	spec.TaskTemplate.ContainerSpec.Image = image
	if _, err := cli.ServiceUpdate(ctx, s.Service.ID, client.ServiceUpdateOptions{Version: s.Service.Version, Spec: spec}); err != nil {
		t.Fatalf("deploy %s: %v", image, err)
	}
}

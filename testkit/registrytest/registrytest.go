// Package registrytest runs Debian's docker-registry (the CNCF
// distribution registry) on 127.0.0.1 for a test, with its own config
// file and temporary storage, optionally behind htpasswd basic auth, and
// pushes small FROM-scratch images to it (one layer holding one file,
// an OCI image config, an OCI manifest) with oras-go.
package registrytest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"rollbot/testkit/nettest"
	"rollbot/testkit/wait"
)

// Binary is Debian's registry (package docker-registry).
const Binary = "/usr/bin/docker-registry"

// Options configure a registry.
type Options struct {
	// User and Password, when set, put the registry behind htpasswd basic
	// auth with this one account.
	User, Password string
}

// Registry is a running docker-registry.
type Registry struct {
	Host string // "127.0.0.1:port"
	opts Options
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs a registry for the life of t. A missing binary fails the
// test (install the docker-registry package).
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("registrytest: %s not found (apt-get install docker-registry): %v", Binary, err)
	}
	dir := t.TempDir()
	r := &Registry{opts: o, dir: dir}
	auth := ""
	if o.User != "" {
		h, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(o.User+":"+string(h)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: rollbot-test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	var lastErr error
	for range 3 {
		port := nettest.FreePort(t)
		r.Host = "127.0.0.1:" + strconv.Itoa(port)
		conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
%s`, filepath.Join(dir, "storage"), r.Host, auth)
		if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if lastErr = r.start(); lastErr == nil {
			t.Cleanup(r.Stop)
			return r
		}
	}
	t.Fatalf("registrytest: %v", lastErr)
	return nil
}

func (r *Registry) start() error {
	logf, err := os.Create(filepath.Join(r.dir, "log"))
	if err != nil {
		return err
	}
	r.cmd = exec.Command(Binary, "serve", filepath.Join(r.dir, "config.yml"))
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", Binary, err)
	}
	r.done = make(chan struct{})
	go func() { r.cmd.Wait(); logf.Close(); close(r.done) }()
	err = wait.Until(context.Background(), 15*time.Second, "docker-registry to answer on "+r.Host, func() (bool, error) {
		select {
		case <-r.done:
			b, _ := os.ReadFile(filepath.Join(r.dir, "log"))
			return false, wait.Stop(fmt.Errorf("docker-registry exited: %s", b))
		default:
		}
		resp, err := http.Get("http://" + r.Host + "/v2/")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized, fmt.Errorf("HTTP %d", resp.StatusCode)
	})
	if err != nil {
		r.Stop()
	}
	return err
}

// Stop kills the registry (a registry that is down, for tests of that).
func (r *Registry) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// Repository is a client of repo ("myapp") in this registry, with the
// registry's account if it has one.
func (r *Registry) Repository(t testing.TB, repo string) *remote.Repository {
	t.Helper()
	rr, err := remote.NewRepository(r.Host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	rr.PlainHTTP = true
	if r.opts.User != "" {
		rr.Client = &auth.Client{Client: http.DefaultClient, Cache: auth.NewCache(),
			Credential: auth.StaticCredential(r.Host, auth.Credential{Username: r.opts.User, Password: r.opts.Password})}
	}
	return rr
}

// PushImage pushes a FROM-scratch image to repo:tag whose one layer holds
// /version with the given text, and returns its manifest descriptor.
func (r *Registry) PushImage(t testing.TB, repo, tag, version string) ocispec.Descriptor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rr := r.Repository(t, repo)
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	body := []byte(version + "\n")
	tw.WriteHeader(&tar.Header{Name: "version", Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0)})
	tw.Write(body)
	tw.Close()
	layerDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageLayer, layer.Bytes())
	cfg, _ := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config:   ocispec.ImageConfig{Cmd: []string{"/version"}, Labels: map[string]string{"version": version}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDesc.Digest}},
	})
	cfgDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, cfg)
	man, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: cfgDesc, Layers: []ocispec.Descriptor{layerDesc}})
	manDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, man)
	for _, b := range []struct {
		d ocispec.Descriptor
		c []byte
	}{{layerDesc, layer.Bytes()}, {cfgDesc, cfg}} {
		if err := rr.Push(ctx, b.d, bytes.NewReader(b.c)); err != nil {
			t.Fatalf("registrytest: push blob to %s: %v", repo, err)
		}
	}
	if err := rr.PushReference(ctx, manDesc, bytes.NewReader(man), tag); err != nil {
		t.Fatalf("registrytest: push %s:%s: %v", repo, tag, err)
	}
	return manDesc
}

package registry_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"rollbot/platforms"
	"rollbot/platforms/registry"
	"rollbot/testkit/logtest"
	"rollbot/testkit/registrytest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func newMarker(t *testing.T, conf registry.Config, env map[string]string, logs io.Writer) *registry.Marker {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	m, err := registry.New(conf, func(k string) string { return env[k] }, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var mark = platforms.ImageMark{Service: "myapp", Incident: "RB-7", By: "U0BOB", Reason: "5xx spike", At: time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)}

// readMarks reads back the DO_NOT_DEPLOY referrers of desc, as any OCI
// client would, and the manifest of each.
func readMarks(t *testing.T, reg *registrytest.Registry, repo string, desc ocispec.Descriptor) []ocispec.Manifest {
	t.Helper()
	rr := reg.Repository(t, repo)
	var out []ocispec.Manifest
	err := rr.Referrers(ctx(t), desc, registry.ArtifactType, func(refs []ocispec.Descriptor) error {
		for _, d := range refs {
			b, err := content.FetchAll(ctx(t), rr, d)
			if err != nil {
				return err
			}
			var m ocispec.Manifest
			if err := json.Unmarshal(b, &m); err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read referrers: %v", err)
	}
	return out
}

func TestMarkImageReferrerWithFallbackTag(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	good := reg.PushImage(t, "team/myapp", "v2", "v2")
	bad := reg.PushImage(t, "team/myapp", "v3", "v3")
	m := newMarker(t, registry.Config{PlainHTTP: true}, nil, nil)
	image := reg.Host + "/team/myapp:v3"
	if p := m.Plan(image); !strings.Contains(p, "DO_NOT_DEPLOY") || strings.Contains(p, "delete") {
		t.Errorf("plan without delete_tag: %s", p)
	}

	res, err := m.MarkImage(ctx(t), image, mark)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != bad.Digest.String() || res.Existing || res.TagDeleted != "" || res.Repository != reg.Host+"/team/myapp" {
		t.Errorf("result %+v, bad image %s", res, bad.Digest)
	}
	// docker-registry 2.8 has no referrers API: the fallback tag holds the index.
	if want := "fallback tag " + strings.Replace(bad.Digest.String(), ":", "-", 1); res.Via != want {
		t.Errorf("via %q, want %q", res.Via, want)
	}
	if !strings.HasPrefix(res.Link, "http://"+reg.Host+"/v2/team/myapp/manifests/sha256:") {
		t.Errorf("link %q", res.Link)
	}
	marks := readMarks(t, reg, "team/myapp", bad)
	if len(marks) != 1 {
		t.Fatalf("%d marks on the bad image, want 1", len(marks))
	}
	got := marks[0]
	if got.ArtifactType != registry.ArtifactType || got.Subject == nil || got.Subject.Digest != bad.Digest {
		t.Errorf("mark artifactType %q subject %+v", got.ArtifactType, got.Subject)
	}
	for k, v := range map[string]string{registry.AnnotationIncident: "RB-7", registry.AnnotationWho: "U0BOB",
		registry.AnnotationWhen: "2026-12-03T06:00:00Z", registry.AnnotationReason: "5xx spike", registry.AnnotationService: "myapp"} {
		if got.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, got.Annotations[k], v)
		}
	}
	if n := len(readMarks(t, reg, "team/myapp", good)); n != 0 {
		t.Errorf("the good image has %d marks", n)
	}

	// Again for the same incident (a takeover): found, not made twice.
	again, err := m.MarkImage(ctx(t), image, mark)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Existing || again.Referrer != res.Referrer {
		t.Errorf("second mark %+v, first %+v", again, res)
	}
	if n := len(readMarks(t, reg, "team/myapp", bad)); n != 1 {
		t.Errorf("%d marks after the second call, want 1", n)
	}
}

func TestMarkImageDeletesTag(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	good := reg.PushImage(t, "myapp", "v2", "v2")
	bad := reg.PushImage(t, "myapp", "v3", "v3")
	logs := &logtest.Buffer{}
	m := newMarker(t, registry.Config{PlainHTTP: true, DeleteTag: true, Repository: reg.Host + "/myapp"}, nil, logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	if p := m.Plan("app:v3"); !strings.Contains(p, "delete its tag `v3`") {
		t.Errorf("plan: %s", p)
	}
	res, err := m.MarkImage(ctx(t), "app:v3", mark) // the platform's own name; the configured repository is used
	if err != nil {
		t.Fatal(err)
	}
	if res.TagDeleted != "v3" {
		t.Errorf("result %+v", res)
	}
	rr := reg.Repository(t, "myapp")
	if _, err := rr.Resolve(ctx(t), "v3"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("tag v3 still resolves: %v", err)
	}
	if d, err := rr.Resolve(ctx(t), "v2"); err != nil || d.Digest != good.Digest {
		t.Errorf("good tag v2: %v %v", d.Digest, err)
	}
	if n := len(readMarks(t, reg, "myapp", bad)); n != 1 {
		t.Errorf("%d marks on the bad digest after the tag was deleted, want 1", n)
	}
}

func TestMarkImageCredentials(t *testing.T) {
	const user, pass = "ci-rollbot", "s3cret-registry-pass-91"
	reg := registrytest.Start(t, registrytest.Options{User: user, Password: pass})
	bad := reg.PushImage(t, "myapp", "v3", "v3")
	image := reg.Host + "/myapp:v3"

	t.Run("environment", func(t *testing.T) {
		m := newMarker(t, registry.Config{PlainHTTP: true, UsernameEnv: "REG_USER", PasswordEnv: "REG_PASS"}, map[string]string{"REG_USER": user, "REG_PASS": pass}, nil)
		if _, err := m.MarkImage(ctx(t), image, mark); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("docker config", func(t *testing.T) {
		dir := t.TempDir()
		cfg := `{"auths":{"` + reg.Host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte(user+":"+pass)) + `"}}}`
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		m := newMarker(t, registry.Config{PlainHTTP: true, DockerConfig: filepath.Join(dir, "config.json")}, nil, nil)
		res, err := m.MarkImage(ctx(t), image, platforms.ImageMark{Incident: "RB-8", By: "U0BOB"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Existing {
			t.Error("a mark of another incident was taken for this one's")
		}
		if n := len(readMarks(t, reg, "myapp", bad)); n != 2 {
			t.Errorf("%d marks, want 2 (RB-7, RB-8)", n)
		}
	})
	t.Run("refused", func(t *testing.T) {
		const wrong = "wrong-pass-never-logged-77"
		logs := &logtest.Buffer{}
		m := newMarker(t, registry.Config{PlainHTTP: true, UsernameEnv: "REG_USER", PasswordEnv: "REG_PASS"}, map[string]string{"REG_USER": user, "REG_PASS": wrong}, logs)
		_, err := m.MarkImage(ctx(t), image, mark)
		msg, ok := platforms.UserMessage(err)
		if !ok || !strings.Contains(msg, "refused rollbot's credentials (HTTP 401)") || !strings.Contains(msg, "$REG_USER") {
			t.Fatalf("error %v, user message %q", err, msg)
		}
		for _, s := range []string{err.Error(), msg, logs.String()} {
			if strings.Contains(s, wrong) || strings.Contains(s, base64.StdEncoding.EncodeToString([]byte(user+":"+wrong))) {
				t.Errorf("the password leaked: %s", s)
			}
		}
	})
}

func TestMarkImageRegistryDown(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	reg.PushImage(t, "myapp", "v3", "v3")
	reg.Stop()
	m := newMarker(t, registry.Config{PlainHTTP: true}, nil, nil)
	_, err := m.MarkImage(ctx(t), reg.Host+"/myapp:v3", mark)
	msg, ok := platforms.UserMessage(err)
	if !ok || !strings.Contains(msg, "the registry "+reg.Host+" is not reachable (connection refused)") {
		t.Fatalf("error %v, user message %q", err, msg)
	}
}

func TestMarkImageNeedsARegistry(t *testing.T) {
	m := newMarker(t, registry.Config{}, nil, nil)
	_, err := m.MarkImage(ctx(t), "app:v3", mark)
	if msg, ok := platforms.UserMessage(err); !ok || !strings.Contains(msg, "set registry.repository") {
		t.Fatalf("error %v, user message %q", err, msg)
	}
	if err := (registry.Config{UsernameEnv: "U"}).Validate(); err == nil || !strings.Contains(err.Error(), "password_env") {
		t.Errorf("half-set credentials accepted: %v", err)
	}
}

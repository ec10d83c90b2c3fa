package bot

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"

	"rollbot/handlers"
	"rollbot/platforms/registry"
	"rollbot/platforms/sim"
	"rollbot/state"
	"rollbot/testkit/registrytest"
	"rollbot/testkit/slackemu"
)

// registryService is a simulated service whose versions are images pushed
// to reg (FROM scratch), marked through conf.
func registryService(t *testing.T, reg *registrytest.Registry, conf registry.Config, env map[string]string) *handlers.Service {
	t.Helper()
	for _, v := range []string{"v1", "v2", "v3"} {
		reg.PushImage(t, "myapp", v, v)
	}
	img := func(tag string) string { return reg.Host + "/myapp:" + tag }
	s, err := sim.New("myapp", sim.Config{Versions: []sim.Version{{Artifact: img("v1")}, {Artifact: img("v2")}, {Artifact: img("v3"), Bad: true}}, StepDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m, err := registry.New(conf, func(k string) string { return env[k] }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return &handlers.Service{Name: "myapp", Platform: s, Metrics: s, Health: s, HasHealth: true, HasSmoke: true,
		Approvers: handlers.Access{Groups: []string{slackemu.GroupOnCall}}, Registry: m}
}

// rollBack runs /rollback myapp to its end, confirmed by bob, and returns
// the assessment and the post-rollback actions.
func rollBack(t *testing.T, h *harness) (slackemu.Message, slackemu.Message) {
	t.Helper()
	h.slash(slackemu.UserAlice, `myapp --reason "checkout 5xx"`)
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitStatus("RB-1", state.Completed)
	in, err := h.store.Get(context.Background(), "RB-1")
	if err != nil {
		t.Fatal(err)
	}
	post, ok := h.emu.Message(slackemu.ChannelIncident, in.Messages["postactions"])
	if !ok {
		t.Fatalf("no post-rollback actions message\n%s", h.dump())
	}
	return a, post
}

// TestRegistryMarkThroughSlack: a rollback through the local Slack server
// marks the bad image in Debian's docker-registry (an OCI artifact whose
// subject is the bad digest, found through the referrers tag-schema
// fallback, as that registry has no referrers API), deletes its tag (the
// approver confirmed it with the rollback), leaves the good tag alone,
// ticks the §6 registry item with what was done, and /rollback history
// shows the mark.
func TestRegistryMarkThroughSlack(t *testing.T) {
	heavy(t)
	reg := registrytest.Start(t, registrytest.Options{})
	svc := registryService(t, reg, registry.Config{PlainHTTP: true, DeleteTag: true}, nil)
	rr := reg.Repository(t, "myapp")
	ctx := context.Background()
	bad, err := rr.Resolve(ctx, "v3")
	if err != nil {
		t.Fatal(err)
	}
	good, err := rr.Resolve(ctx, "v2")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	a, post := rollBack(t, h)
	wantAll(t, "assessment", a.PlainText(), "DO_NOT_DEPLOY in `"+reg.Host+"/myapp`", "delete its tag `v3`")
	wantAll(t, "post-rollback actions", post.PlainText(), ":white_check_mark: Remove bad image from registry or mark as deprecated · marked by rollbot in `"+reg.Host+"/myapp`",
		"refers to `"+bad.Digest.String()[:19]+"`", "fallback tag sha256-", "tag `v3` deleted")
	if strings.Contains(post.PlainText(), "registry|") {
		t.Errorf("the registry item still has its Done button")
	}

	// The mark, read back from the registry as any OCI client would.
	var marks []ocispec.Manifest
	err = rr.Referrers(ctx, bad, registry.ArtifactType, func(refs []ocispec.Descriptor) error {
		for _, d := range refs {
			b, err := content.FetchAll(ctx, rr, d)
			if err != nil {
				return err
			}
			var m ocispec.Manifest
			if err := json.Unmarshal(b, &m); err != nil {
				return err
			}
			marks = append(marks, m)
		}
		return nil
	})
	if err != nil || len(marks) != 1 {
		t.Fatalf("marks on the bad digest: %d, %v", len(marks), err)
	}
	ann := marks[0].Annotations
	if ann[registry.AnnotationIncident] != "RB-1" || ann[registry.AnnotationWho] != slackemu.UserBob || ann[registry.AnnotationReason] != "checkout 5xx" || marks[0].Subject.Digest != bad.Digest {
		t.Errorf("mark annotations %v subject %v", ann, marks[0].Subject)
	}
	if when, err := time.Parse(time.RFC3339, ann[registry.AnnotationWhen]); err != nil || time.Since(when) > time.Minute {
		t.Errorf("mark time %q: %v", ann[registry.AnnotationWhen], err)
	}
	if _, err := rr.Resolve(ctx, "v3"); !errors.Is(err, errdef.ErrNotFound) {
		t.Errorf("tag v3 still there: %v", err)
	}
	if d, err := rr.Resolve(ctx, "v2"); err != nil || d.Digest != good.Digest {
		t.Errorf("good tag v2 changed: %v %v", d.Digest, err)
	}

	// rollbot's record: history, the timeline, and the gate by digest.
	h.slash(slackemu.UserAlice, "history myapp")
	h.waitFor("history with the registry mark", ephemeralFor(slackemu.UserAlice, "Registry marks"))
	evs := h.wantSteps("RB-1", "request", "assess", "confirm", "stop", "rollback", "verify", "postactions")
	if !slices.ContainsFunc(evs, func(e state.Event) bool {
		return strings.HasPrefix(e.Detail, "marking "+reg.Host+"/myapp:v3 DO_NOT_DEPLOY in")
	}) ||
		!slices.ContainsFunc(evs, func(e state.Event) bool { return strings.HasPrefix(e.Detail, "registry: marked by rollbot") }) {
		t.Errorf("registry mark not on the timeline: %+v", evs)
	}
	if code, out := deployableCLI(t, h, "--service", "myapp", "--version", bad.Digest.String()); code != ExitNotDeployable || !strings.Contains(out, "RB-1") {
		t.Errorf("the bad digest through the gate: exit %d\n%s", code, out)
	}
}

// TestRegistryMarkFailuresDoNotHoldUp: a registry that refuses rollbot's
// credentials, or is down, gives a clear line under the §6 registry item;
// the rest of the post-rollback actions is done, and the password is in
// no Slack message and no log line.
func TestRegistryMarkFailuresDoNotHoldUp(t *testing.T) {
	heavy(t)
	const user, pass, wrong = "rollbot", "right-registry-pass-55", "wrong-registry-pass-66"
	for _, c := range []struct {
		name string
		down bool
		want string
	}{
		{"credentials refused", false, "refused rollbot's credentials (HTTP 401)"},
		{"registry down", true, "is not reachable (connection refused)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			reg := registrytest.Start(t, registrytest.Options{User: user, Password: pass})
			svc := registryService(t, reg, registry.Config{PlainHTTP: true, UsernameEnv: "REG_USER", PasswordEnv: "REG_PASS"},
				map[string]string{"REG_USER": user, "REG_PASS": wrong})
			if c.down {
				reg.Stop()
			}
			h := newHarness(t, []*handlers.Service{svc}, fastEngine()) // no redaction: the password must never get near a message
			_, post := rollBack(t, h)
			wantAll(t, "post-rollback actions", post.PlainText(),
				":white_check_mark: Tag the bad deployment DO_NOT_DEPLOY", "reminder scheduled",
				":white_large_square: Remove bad image from registry or mark as deprecated", "registry mark of `"+reg.Host+"/myapp:v3` not made", c.want,
				"mark or remove the image by hand")
			if len(h.emu.Scheduled()) != 1 {
				t.Errorf("postmortem reminder not scheduled")
			}
			if m, _ := h.store.Marks(context.Background(), "myapp"); m[reg.Host+"/myapp:v3"].Incident != "RB-1" {
				t.Errorf("rollbot's own mark missing: %+v", m)
			}
			for _, m := range h.emu.Messages(slackemu.ChannelIncident) {
				if strings.Contains(m.PlainText(), wrong) {
					t.Errorf("the password is in a Slack message")
				}
			}
			if strings.Contains(h.logs.String(), wrong) {
				t.Errorf("the password is in the log")
			}
		})
	}
}

// hangingProxy forwards to the registry, but after forwarding the first
// write of the referrers fallback index (the last write of a mark) it
// holds the answer until the client gives up, and says so on hung.
func hangingProxy(t *testing.T, reg *registrytest.Registry) (host string, hung <-chan struct{}) {
	t.Helper()
	target, _ := url.Parse("http://" + reg.Host)
	rp := httputil.NewSingleHostReverseProxy(target)
	ch := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/sha256-") {
			first := false
			once.Do(func() { first = true })
			if first {
				rec := httptest.NewRecorder()
				rp.ServeHTTP(rec, r)
				close(ch)
				<-r.Context().Done()
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), ch
}

// TestRegistryMarkOnceAcrossRestart: the bot stops while it makes the
// registry mark (the registry has it, the answer never came); the next
// bot takes the incident over, finds the mark by its incident annotation
// and does not push a second one, and the checklist says so.
func TestRegistryMarkOnceAcrossRestart(t *testing.T) {
	heavy(t)
	reg := registrytest.Start(t, registrytest.Options{})
	proxy, hung := hangingProxy(t, reg)
	svc := registryService(t, reg, registry.Config{PlainHTTP: true, Repository: proxy + "/myapp"}, nil)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	select {
	case <-hung:
	case <-time.After(30 * time.Second):
		t.Fatalf("the registry mark never reached the registry\n%s", h.dump())
	}
	h.stop() // the replica stops with the mark made but not acknowledged
	h.start()
	h.waitFor("takeover report", textHas("RB-1 resumed by"))
	h.waitStatus("RB-1", state.Completed)
	post := h.waitFor("post-rollback checklist", textHas("Post-rollback actions"))
	wantAll(t, "post-rollback actions", post.PlainText(), ":white_check_mark: Remove bad image from registry", "already made before a takeover")

	rr := reg.Repository(t, "myapp")
	ctx := context.Background()
	bad, err := rr.Resolve(ctx, "v3")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = rr.Referrers(ctx, bad, registry.ArtifactType, func(refs []ocispec.Descriptor) error { n += len(refs); return nil })
	if err != nil || n != 1 {
		t.Errorf("%d marks on the bad image (%v), want 1", n, err)
	}
	in, _ := h.store.Get(ctx, "RB-1")
	if in.Steps["registry"] != "done" {
		t.Errorf("registry step %q, want done", in.Steps["registry"])
	}
}

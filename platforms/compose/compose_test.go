package compose

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"go.yaml.in/yaml/v3"

	"rollbot/platforms"
	"rollbot/platforms/internal/docker"
	"rollbot/testkit/dockertest"
	"rollbot/testkit/wait"
)

// Images: v1 good, v2 fails its health check; the -nohc ones have no
// HEALTHCHECK, so only an HTTP check from outside sees v2's failure.
var (
	good     = dockertest.Variant{Tag: "v1"}
	bad      = dockertest.Variant{Tag: "v2", FailHealth: true}
	goodNoHC = dockertest.Variant{Tag: "v1-nohc", Version: "v1", NoHealthcheck: true}
	badNoHC  = dockertest.Variant{Tag: "v2-nohc", Version: "v2", FailHealth: true, NoHealthcheck: true}
	cli      *client.Client
)

func TestMain(m *testing.M) {
	ctx := context.Background()
	var err error
	if cli, err = dockertest.Connect(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "compose tests:", err)
		os.Exit(1)
	}
	for _, v := range []dockertest.Variant{good, bad, goodNoHC, badNoHC} {
		if _, err := dockertest.Image(ctx, cli, v); err != nil {
			fmt.Fprintln(os.Stderr, "compose tests:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	cli.Close()
	os.Exit(code)
}

// project is a docker-compose project for a test (dockertest.Project).
type project struct {
	*dockertest.Project
	t *testing.T
}

func newProject(t *testing.T, compose string) *project {
	t.Helper()
	return &project{Project: dockertest.NewProject(t, cli, compose), t: t}
}

func (p *project) adapter(cfg Config, opts ...Option) *Adapter {
	p.t.Helper()
	cfg.Project = p.Name
	a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
	if err != nil {
		p.t.Fatal(err)
	}
	return a
}

// get fetches path from the container's published 8080.
func get(t *testing.T, c container.InspectResponse, path string) (int, string) {
	t.Helper()
	code, body, err := tryGet(c, path)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

func tryGet(c container.InspectResponse, path string) (int, string, error) {
	bs := c.NetworkSettings.Ports[network.MustParsePort("8080/tcp")]
	if len(bs) == 0 {
		return 0, "", fmt.Errorf("container %s publishes no 8080", name(c))
	}
	resp, err := docker.HealthClient().Get(fmt.Sprintf("http://127.0.0.1:%s%s", bs[0].HostPort, path))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

type memHistory map[string][]platforms.Revision

func (h memHistory) Deployed(ctx context.Context, key string) ([]platforms.Revision, error) {
	return h[key], nil
}

// twoServices has web, with every kind of setting a recreate must keep and
// its tag from a variable (so the file does not pin it), and api.
const twoServices = `version: "3.7"
services:
  web:
    image: rollbot-sampleapp:${WEB_TAG:-v1}
    ports: ["127.0.0.1::8080"]
    environment:
      FOO: bar
    labels:
      team: payments
    restart: unless-stopped
    healthcheck:
      test: ["CMD", "/healthcheck", "http://127.0.0.1:8080/health"]
      interval: 2s
      timeout: 2s
      retries: 2
    volumes:
      - data:/data
      - /cache
    networks:
      default: {}
      backend:
        aliases: [web-backend]
  api:
    image: rollbot-sampleapp:v1
    ports: ["127.0.0.1::8080"]
volumes:
  data: {}
networks:
  backend: {}
`

func mountsByDest(c container.InspectResponse) map[string]string {
	out := map[string]string{}
	for _, m := range c.Mounts {
		out[m.Destination] = m.Name
	}
	return out
}

// TestRecreateRollsBackOneService: web is deployed on v2 (bad) next to
// api; rolling web back recreates it on v1 with all its settings, checks
// its health over HTTP, and leaves api alone.
func TestRecreateRollsBackOneService(t *testing.T) {
	parallel(t)
	p := newProject(t, twoServices)
	p.Compose([]string{"WEB_TAG=v1"}, "up", "-d")
	p.Compose([]string{"WEB_TAG=v2"}, "up", "-d", "web")
	apiBefore := p.Container("api")
	webBad := p.Container("web")
	if webBad.Config.Image != bad.Ref() {
		t.Fatalf("web runs %s after the bad deploy", webBad.Config.Image)
	}

	hist := memHistory{"web": {{ID: "v2", Artifact: bad.Ref()}, {ID: "v1", Artifact: good.Ref()}}}
	a := p.adapter(Config{Service: "web", HealthPath: "/health"}, WithHistory(hist, "web"))
	ctx := context.Background()
	snap, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Current.ID != "v2" || snap.Health.Desired != 1 || snap.Health.Ready != 0 {
		t.Errorf("snapshot: current %+v, health %+v; want v2 with 0/1 ready", snap.Current, snap.Health)
	}
	lkg, ok := platforms.LastKnownGood(snap.History, snap.Current, nil)
	if !ok || lkg.Artifact != good.Ref() {
		t.Fatalf("last known good = %+v from %+v", lkg, snap.History)
	}

	var progress []platforms.Progress
	var mu sync.Mutex
	res, err := a.Rollback(ctx, lkg, false, func(pr platforms.Progress) { mu.Lock(); progress = append(progress, pr); mu.Unlock() })
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if res.Outcome != platforms.Done || !strings.Contains(res.Plan[0], "recreate with image rollbot-sampleapp:v2 -> rollbot-sampleapp:v1") {
		t.Errorf("result = %+v", res)
	}
	if last := progress[len(progress)-1]; !last.Done || last.Ready != 1 {
		t.Errorf("last progress = %+v", last)
	}

	web := p.Container("web")
	checks := []struct {
		what string
		ok   bool
	}{
		{"new container", web.ID != webBad.ID},
		{"same name", web.Name == webBad.Name},
		{"image v1", web.Config.Image == good.Ref()},
		{"env FOO=bar", slices.Contains(web.Config.Env, "FOO=bar")},
		{"label team", web.Config.Labels["team"] == "payments" && web.Config.Labels[labelProject] == p.Name},
		{"restart policy", web.HostConfig.RestartPolicy.Name == "unless-stopped"},
		{"port on 127.0.0.1", len(web.HostConfig.PortBindings[network.MustParsePort("8080/tcp")]) == 1 &&
			web.HostConfig.PortBindings[network.MustParsePort("8080/tcp")][0].HostIP.String() == "127.0.0.1"},
		{"compose healthcheck (2s)", web.Config.Healthcheck != nil && web.Config.Healthcheck.Interval == 2*time.Second},
		{"healthy", web.State.Health != nil && web.State.Health.Status == container.Healthy},
		{"named volume", mountsByDest(web)["/data"] == mountsByDest(webBad)["/data"] && mountsByDest(web)["/data"] != ""},
		{"anonymous volume kept", mountsByDest(web)["/cache"] == mountsByDest(webBad)["/cache"] && mountsByDest(web)["/cache"] != ""},
		{"default network", web.NetworkSettings.Networks[p.Name+"_default"] != nil},
		{"backend alias", web.NetworkSettings.Networks[p.Name+"_backend"] != nil &&
			slices.Contains(web.NetworkSettings.Networks[p.Name+"_backend"].Aliases, "web-backend") &&
			slices.Contains(web.NetworkSettings.Networks[p.Name+"_backend"].Aliases, "web")},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("recreated web: %s: no", c.what)
		}
	}
	if code, body := get(t, web, "/version"); code != 200 || body != "v1" {
		t.Errorf("web /version = %d %q, want v1", code, body)
	}
	api := p.Container("api")
	if api.ID != apiBefore.ID || api.State.StartedAt != apiBefore.State.StartedAt {
		t.Errorf("api was touched: %s started %s, before %s started %s", api.ID[:12], api.State.StartedAt, apiBefore.ID[:12], apiBefore.State.StartedAt)
	}
	l, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", labelProject+"="+p.Name)})
	if err != nil || len(l.Items) != 2 {
		t.Errorf("project has %d containers after the rollback, want 2 (the replaced one removed): %v", len(l.Items), err)
	}
	snap, err = a.Snapshot(ctx)
	if err != nil || snap.Current.ID != "v1" || snap.Health.Ready != 1 {
		t.Errorf("snapshot after rollback: %+v, %v", snap, err)
	}
}

// pinned pins web's tag in the file, as a CI pipeline that edits it does.
const pinned = `version: "3.7"
services:
  web:
    image: rollbot-sampleapp:%s  # pinned by CI
    ports: ["127.0.0.1::8080"]
  api:
    image: "rollbot-sampleapp:v1"
    ports: ["127.0.0.1::8080"]
`

// TestComposeFileMode: the file pins the tag, so the rollback edits it and
// runs docker-compose up; afterwards file and containers agree.
func TestComposeFileMode(t *testing.T) {
	parallel(t)
	p := newProject(t, fmt.Sprintf(pinned, "v1"))
	p.Compose(nil, "up", "-d")
	p.Write(fmt.Sprintf(pinned, "v2"))
	p.Compose(nil, "up", "-d")
	apiBefore := p.Container("api")

	a := p.adapter(Config{Service: "web", HealthPath: "/health"})
	ctx := context.Background()
	res, err := a.Rollback(ctx, platforms.Revision{ID: "v1"}, true, nil)
	if err != nil || res.Outcome != platforms.Planned || len(res.Plan) != 2 ||
		res.Plan[0] != fmt.Sprintf("edit %s: services.web.image rollbot-sampleapp:v2 -> rollbot-sampleapp:v1", p.File) ||
		!strings.Contains(res.Plan[1], "up -d --no-deps --no-build web") {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(p.File); string(b) != fmt.Sprintf(pinned, "v2") {
		t.Fatalf("dry run changed the file:\n%s", b)
	}
	res, err = a.Rollback(ctx, platforms.Revision{ID: "v1"}, false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("rollback = %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(p.File); string(b) != fmt.Sprintf(pinned, "v1") {
		t.Errorf("file after rollback:\n%s\nwant the tag edited and the rest (comment, quotes) kept", b)
	}
	web := p.Container("web")
	if code, body := get(t, web, "/version"); web.Config.Image != good.Ref() || code != 200 || body != "v1" {
		t.Errorf("web runs %s, /version %d %q", web.Config.Image, code, body)
	}
	// docker-compose agrees: another up changes nothing.
	p.Compose(nil, "up", "-d")
	if again := p.Container("web"); again.ID != web.ID {
		t.Errorf("docker-compose up recreated web after the rollback: the file and the container disagree")
	}
	if api := p.Container("api"); api.ID != apiBefore.ID || api.State.StartedAt != apiBefore.State.StartedAt {
		t.Errorf("api was touched")
	}
}

// TestHTTPHealthIsChecked: the images have no HEALTHCHECK; v2-nohc answers
// /health with 503. With health_path the adapter sees that over HTTP,
// fails, and puts the previous container back; without it the same move
// "succeeds", which is what the HTTP check is for.
func TestHTTPHealthIsChecked(t *testing.T) {
	parallel(t)
	p := newProject(t, `version: "3.7"
services:
  web:
    image: rollbot-sampleapp:${WEB_TAG}
    ports: ["127.0.0.1::8080"]
`)
	p.Compose([]string{"WEB_TAG=v1-nohc"}, "up", "-d")
	before := p.Container("web")
	ctx := context.Background()

	// 30 s: under a loaded CI the new container took more than 15 s to
	// answer at all, and the message must carry its 503.
	a := p.adapter(Config{Service: "web", HealthPath: "/health", Timeout: 30 * time.Second})
	_, err := a.SetArtifact(ctx, badNoHC.Ref(), false, nil)
	msg, _ := platforms.UserMessage(err)
	if err == nil || !strings.Contains(msg, "did not become healthy") || !strings.Contains(msg, "503") || !strings.Contains(msg, "put the previous container") {
		t.Fatalf("set v2-nohc with health_path: err %v, message %q", err, msg)
	}
	after := p.Container("web")
	if after.ID != before.ID || !after.State.Running || after.Name != before.Name {
		t.Errorf("previous container not back: id %s (was %s), running %v, name %s", after.ID[:12], before.ID[:12], after.State.Running, after.Name)
	}
	wait.Every(t, 200*time.Millisecond, 10*time.Second, "the restored web to answer v1", func() (bool, error) {
		code, body, err := tryGet(after, "/version")
		return err == nil && code == 200 && body == "v1", fmt.Errorf("restored web /version = %d %q %v", code, body, err)
	})

	res, err := p.adapter(Config{Service: "web", Timeout: 10 * time.Second}).SetArtifact(ctx, badNoHC.Ref(), false, nil)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("without health_path: %+v, %v", res, err)
	}
	web := p.Container("web")
	wait.Every(t, 200*time.Millisecond, 10*time.Second, "v2-nohc to fail its health check", func() (bool, error) {
		code, _, err := tryGet(web, "/health")
		return err == nil && code == http.StatusServiceUnavailable, fmt.Errorf("v2-nohc /health = %d %v; the test premise (it fails health) is wrong", code, err)
	})
}

// racingAPI runs race right after the adapter read the service and before
// it writes: at the target image check, or (listAt > 0) at the listAt-th
// container listing.
type racingAPI struct {
	dockerAPI
	race   func()
	listAt int
	lists  int
	once   sync.Once
}

func (r *racingAPI) ImageInspect(ctx context.Context, ref string, o ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	if r.listAt == 0 {
		r.once.Do(r.race)
	}
	return r.dockerAPI.ImageInspect(ctx, ref, o...)
}

func (r *racingAPI) ContainerList(ctx context.Context, o client.ContainerListOptions) (client.ContainerListResult, error) {
	r.lists++
	if r.listAt > 0 && r.lists == r.listAt {
		r.once.Do(r.race)
	}
	return r.dockerAPI.ContainerList(ctx, o)
}

// TestConcurrentChangeIsAConflict: a deploy between the adapter's read and
// its write makes the rollback fail with ErrConflict, in both modes, and
// the other change stays.
func TestConcurrentChangeIsAConflict(t *testing.T) {
	parallel(t)
	t.Run("recreate", func(t *testing.T) {
		p := newProject(t, twoServices)
		p.Compose([]string{"WEB_TAG=v2"}, "up", "-d", "web")
		a := p.adapter(Config{Service: "web"})
		var raced string
		a.api = &racingAPI{dockerAPI: a.api, race: func() {
			p.Compose([]string{"WEB_TAG=v1-nohc"}, "up", "-d", "--no-deps", "web")
			raced = p.Container("web").ID
		}}
		_, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, nil)
		if !errors.Is(err, platforms.ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
		if msg, _ := platforms.UserMessage(err); !strings.Contains(msg, "changed by someone else") {
			t.Errorf("user message %q", msg)
		}
		if web := p.Container("web"); web.ID != raced || web.Config.Image != goodNoHC.Ref() {
			t.Errorf("web is %s on %s, want the concurrent deploy's container on v1-nohc", web.ID[:12], web.Config.Image)
		}
	})
	for _, listAt := range []int{0, 2} { // at the image check; right before the file is written
		t.Run(fmt.Sprintf("compose_file/race_at_list_%d", listAt), func(t *testing.T) {
			p := newProject(t, fmt.Sprintf(pinned, "v2"))
			p.Compose(nil, "up", "-d", "web")
			a := p.adapter(Config{Service: "web", Mode: ModeComposeFile})
			edited := fmt.Sprintf(pinned, "v1-nohc")
			a.api = &racingAPI{dockerAPI: a.api, listAt: listAt, race: func() { p.Write(edited) }}
			_, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, nil)
			if !errors.Is(err, platforms.ErrConflict) {
				t.Fatalf("err = %v, want ErrConflict", err)
			}
			if b, _ := os.ReadFile(p.File); string(b) != edited {
				t.Errorf("the concurrent edit of the file was overwritten:\n%s", b)
			}
			if web := p.Container("web"); web.Config.Image != bad.Ref() {
				t.Errorf("web runs %s, want it untouched on v2", web.Config.Image)
			}
		})
	}
}

// TestMissingImage: a target the engine lacks fails before anything
// changes, with the FAQ's fallback in the message.
func TestMissingImage(t *testing.T) {
	parallel(t)
	p := newProject(t, fmt.Sprintf(pinned, "v1"))
	p.Compose(nil, "up", "-d", "web")
	before := p.Container("web")
	missing := dockertest.Name("rollbot-sampleapp:never-built-")
	_, err := p.adapter(Config{Service: "web"}).SetArtifact(context.Background(), missing, false, nil)
	if !errors.Is(err, platforms.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	msg, _ := platforms.UserMessage(err)
	for _, want := range []string{missing, "not present", "rebuild"} {
		if !strings.Contains(msg, want) {
			t.Errorf("user message %q lacks %q", msg, want)
		}
	}
	if after := p.Container("web"); after.ID != before.ID {
		t.Error("web was recreated")
	}
	if b, _ := os.ReadFile(p.File); string(b) != fmt.Sprintf(pinned, "v1") {
		t.Error("file changed")
	}
}

// TestAlreadyAtTargetDryRunStopScale covers the writes that change little
// or nothing.
func TestAlreadyAtTargetDryRunStopScale(t *testing.T) {
	parallel(t)
	p := newProject(t, twoServices)
	p.Compose([]string{"WEB_TAG=v1"}, "up", "-d")
	web := p.Container("web")
	a := p.adapter(Config{Service: "web"})
	ctx := context.Background()

	res, err := a.Rollback(ctx, platforms.Revision{ID: "v1"}, false, nil)
	if err != nil || res.Outcome != platforms.Skipped || !strings.Contains(res.Detail, "already runs rollbot-sampleapp:v1") {
		t.Errorf("rollback to current: %+v, %v", res, err)
	}
	res, err = a.Rollback(ctx, platforms.Revision{ID: "v2"}, true, nil)
	wantPlan := fmt.Sprintf("container %s (%s): recreate with image rollbot-sampleapp:v1 -> rollbot-sampleapp:v2, same env, ports 127.0.0.1:random->8080/tcp, networks %s_backend, %s_default, volumes, labels, restart policy unless-stopped",
		name(web), web.ID[:12], p.Name, p.Name)
	if err != nil || res.Outcome != platforms.Planned || len(res.Plan) != 1 || res.Plan[0] != wantPlan {
		t.Errorf("dry run: %+v, %v\nwant plan %q", res, err, wantPlan)
	}
	res, err = a.ScaleToZero(ctx, true)
	if err != nil || res.Outcome != platforms.Planned {
		t.Errorf("scale to zero dry run: %+v, %v", res, err)
	}
	if now := p.Container("web"); now.ID != web.ID || !now.State.Running {
		t.Fatal("dry runs changed web")
	}
	res, err = a.Stop(ctx, false)
	if err != nil || res.Outcome != platforms.Skipped {
		t.Errorf("stop: %+v, %v", res, err)
	}
	res, err = a.ScaleToZero(ctx, false)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("scale to zero: %+v, %v", res, err)
	}
	if now := p.Container("web"); now.State.Running {
		t.Error("web still runs after scale to zero")
	}
	if api := p.Container("api"); !api.State.Running {
		t.Error("scale to zero stopped api too")
	}
	res, err = a.ScaleToZero(ctx, false)
	if err != nil || res.Outcome != platforms.Skipped {
		t.Errorf("second scale to zero: %+v, %v", res, err)
	}
}

func TestEngineUnreachable(t *testing.T) {
	for _, host := range []string{"tcp://127.0.0.1:1", "unix:///nonexistent/docker.sock"} {
		t.Run(host, func(t *testing.T) {
			a, err := New(Config{Project: "p", Service: "web", Host: host}, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = a.Snapshot(context.Background())
			msg, ok := platforms.UserMessage(err)
			if !ok || !strings.Contains(msg, "cannot reach the Docker engine at "+host) {
				t.Errorf("err = %v, user message %q", err, msg)
			}
		})
	}
}

func TestNoContainers(t *testing.T) {
	a, err := New(Config{Project: dockertest.Name("rbt-absent"), Service: "web"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Snapshot(context.Background())
	if !errors.Is(err, platforms.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestHostCredentialsNeverShown(t *testing.T) {
	const secret = "s3cr3t-passw0rd"
	var logs bytes.Buffer
	_, err := New(Config{Project: "p", Service: "web", Host: "https://admin:" + secret + "@127.0.0.1:1"}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil || !strings.Contains(err.Error(), "host:") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
		t.Errorf("secret leaked: %q / %q", err, logs.String())
	}
}

func TestFindImage(t *testing.T) {
	tests := []struct {
		name, file string
		want       string // value found; "" none
		wantErr    bool
	}{
		{"plain", "services:\n  web:\n    image: app:v2\n", "app:v2", false},
		{"double quoted", "services:\n  web:\n    image: \"app:v2\" # c\n", "app:v2", false},
		{"single quoted", "services:\n  web:\n    image: 'app:v2'\n", "app:v2", false},
		{"other service", "services:\n  api:\n    image: app:v2\n", "", false},
		{"not a string", "services:\n  web:\n    image: [a]\n", "", true},
		{"block scalar", "services:\n  web:\n    image: >-\n      app:v2\n", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := findImage([]byte(tt.file), "web")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			got := ""
			if r != nil {
				got = r.value
				r.data = []byte(tt.file)
				edited := string(r.edited("app:v1"))
				if want := strings.Replace(tt.file, "app:v2", "app:v1", 1); edited != want {
					t.Errorf("edited = %q, want %q", edited, want)
				}
			}
			if got != tt.want {
				t.Errorf("value = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"minimal", Config{Project: "p", Service: "web"}, nil},
		{"empty", Config{}, []string{"project: required", "service: required"}},
		{"mode", Config{Project: "p", Service: "web", Mode: "pull"}, []string{"mode:"}},
		{"host", Config{Project: "p", Service: "web", Host: "ftp://x"}, []string{"host:"}},
		{"durations", Config{Project: "p", Service: "web", Timeout: -1, StopTimeout: -1}, []string{"timeout:", "stop_timeout:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}

// TestConfigYAML: the config decodes from the bot's YAML.
func TestConfigYAML(t *testing.T) {
	var cfg Config
	err := yaml.Unmarshal([]byte(`
project: shop
service: web
mode: compose_file
compose_files: [/srv/shop/docker-compose.yml, /srv/shop/docker-compose.prod.yml]
health_path: /health
timeout: 90s
stop_timeout: 5s
`), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Project != "shop" || cfg.Mode != ModeComposeFile || len(cfg.ComposeFiles) != 2 || cfg.Timeout != 90*time.Second || cfg.StopTimeout != 5*time.Second {
		t.Errorf("decoded %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}

// TestRecreateScaledService: with two containers, each is replaced in turn
// and progress counts them.
func TestRecreateScaledService(t *testing.T) {
	parallel(t)
	p := newProject(t, `version: "3.7"
services:
  web:
    image: rollbot-sampleapp:${WEB_TAG}
    ports: ["127.0.0.1::8080"]
`)
	p.Compose([]string{"WEB_TAG=v2"}, "up", "-d", "--scale", "web=2")
	a := p.adapter(Config{Service: "web", HealthPath: "/health"})
	var updated []int
	res, err := a.Rollback(context.Background(), platforms.Revision{ID: "v1"}, false, func(pr platforms.Progress) {
		if len(updated) == 0 || updated[len(updated)-1] != pr.Updated {
			updated = append(updated, pr.Updated)
		}
	})
	if err != nil || res.Outcome != platforms.Done || len(res.Plan) != 2 {
		t.Fatalf("rollback: %+v, %v", res, err)
	}
	if !slices.Equal(updated, []int{0, 1, 2}) {
		t.Errorf("progress counted updated containers %v, want [0 1 2]", updated)
	}
	webs := p.Containers("web")
	if len(webs) != 2 {
		t.Fatalf("%d web containers, want 2", len(webs))
	}
	for _, c := range webs {
		if c.Image != good.Ref() || c.State != container.StateRunning {
			t.Errorf("container %v: image %s, state %s", c.Names, c.Image, c.State)
		}
	}
}

package docker

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/testkit/dockertest"
)

func TestSameImageAndWithoutDigest(t *testing.T) {
	const d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	const d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	tests := []struct {
		a, b string
		same bool
	}{
		{"myapp:v1", "myapp:v1", true},
		{"myapp:v1", "docker.io/library/myapp:v1", true},
		{"myapp", "myapp:latest", true},
		{"myapp:v1", "myapp:v2", false},
		{"myapp:v1", "other:v1", false},
		{"myapp:v1@" + d1, "myapp:v1", true}, // swarm pinned a digest
		{"myapp:v1@" + d1, "myapp:v1@" + d2, false},
		{"registry:5000/team/myapp:v1", "registry:5000/team/myapp:v1", true},
		{"registry:5000/team/myapp:v1", "team/myapp:v1", false},
		{"Not A Ref", "Not A Ref", true},
		{"Not A Ref", "myapp:v1", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+"~"+tt.b, func(t *testing.T) {
			if got := SameImage(tt.a, tt.b); got != tt.same {
				t.Errorf("SameImage = %v, want %v", got, tt.same)
			}
			if got := SameImage(tt.b, tt.a); got != tt.same {
				t.Errorf("SameImage reversed = %v, want %v", got, tt.same)
			}
		})
	}
	for in, want := range map[string]string{
		"myapp:v1@" + d1: "myapp:v1",
		"myapp:v1":       "myapp:v1",
		"myapp@" + d1:    "myapp@" + d1, // no tag to show instead
		"Not A Ref":      "Not A Ref",
	} {
		if got := WithoutDigest(in); got != want {
			t.Errorf("WithoutDigest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTargetImage(t *testing.T) {
	tests := []struct {
		name    string
		to      platforms.Revision
		current string
		want    string
		userMsg string // substring of the user message when it fails
	}{
		{"artifact wins", platforms.Revision{ID: "v1", Artifact: "other:v0"}, "myapp:v2", "other:v0", ""},
		{"bare tag of the current repo", platforms.Revision{ID: "v1"}, "registry:5000/team/myapp:v2", "registry:5000/team/myapp:v1", ""},
		{"full reference as id", platforms.Revision{ID: "other:v1"}, "myapp:v2", "other:v1", ""},
		{"empty", platforms.Revision{}, "myapp:v2", "", "no target image"},
		{"bad tag", platforms.Revision{ID: "v 1"}, "myapp:v2", "", "not a valid image tag"},
		{"current unparsable", platforms.Revision{ID: "v1"}, "Not A Ref", "", "give the full image reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TargetImage(tt.to, tt.current)
			if tt.userMsg == "" {
				if err != nil || got != tt.want {
					t.Fatalf("TargetImage = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			msg, ok := platforms.UserMessage(err)
			if !ok || !strings.Contains(msg, tt.userMsg) {
				t.Fatalf("err = %v (user message %q), want one saying %q", err, msg, tt.userMsg)
			}
		})
	}
}

func TestRevisionFor(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	if r := RevisionFor("myapp:v1", "myapp", at); r.ID != "v1" || r.Artifact != "myapp:v1" || !r.CreatedAt.Equal(at) {
		t.Errorf("same repo: %+v", r)
	}
	if r := RevisionFor("other:v1", "myapp", at); r.ID != "other:v1" {
		t.Errorf("other repo: ID %q, want the whole reference", r.ID)
	}
}

func TestMergeHistory(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	rev := func(tag string, age int) platforms.Revision {
		return RevisionFor("myapp:"+tag, "myapp", t0.Add(-time.Duration(age)*time.Hour))
	}
	current := rev("v3", 0)
	local := []platforms.Revision{rev("v4", -1), rev("v3", 0), rev("v1", 5), rev("v0", 9)} // newest first
	prevSpec := []platforms.Revision{rev("v2", 2)}
	record := []platforms.Revision{rev("v3", 0), rev("v1", 5), {ID: "other:v9", Artifact: "docker.io/library/other:v9"}}
	got := MergeHistory(current, t0, local, prevSpec, record)
	var ids []string
	for _, r := range got {
		ids = append(ids, r.ID)
	}
	// v4 was built after the current image: not deployed, listed before it.
	want := []string{"v4", "v3", "v2", "v1", "other:v9", "v0"}
	if !slices.Equal(ids, want) {
		t.Fatalf("history = %v, want %v", ids, want)
	}
	if good, ok := platforms.LastKnownGood(got, current, nil); !ok || good.ID != "v2" {
		t.Errorf("last known good = %+v, want v2 (the previous spec)", good)
	}
	// Without a build time nothing counts as newer.
	if got := MergeHistory(current, time.Time{}, local); got[0].ID != "v3" {
		t.Errorf("without a build time the history starts with %s, want the current v3", got[0].ID)
	}
}

func TestValidateAndDisplayHost(t *testing.T) {
	tests := []struct {
		host, wantErr, display string
	}{
		{"", "", "the local engine"},
		{"unix:///var/run/docker.sock", "", "unix:///var/run/docker.sock"},
		{"tcp://10.0.0.1:2376", "", "tcp://10.0.0.1:2376"},
		{"ssh://me@host", "host: must not contain credentials", "ssh://host"},
		{"ftp://host", `host: scheme "ftp" not supported`, "ftp://host"},
		{"tcp://admin:s3cr3t@10.0.0.1:2376", "host: must not contain credentials", "tcp://10.0.0.1:2376"},
		{"%zz", "host: not a URL", "(unparsable host)"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			err := ValidateHost("host", tt.host)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("ValidateHost = %v, want %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("the error repeats the password: %v", err)
			}
			if got := DisplayHost(tt.host); got != tt.display {
				t.Errorf("DisplayHost = %q, want %q", got, tt.display)
			}
		})
	}
}

func TestPublishedHost(t *testing.T) {
	tests := []struct{ host, health, want string }{
		{"unix:///var/run/docker.sock", "", "127.0.0.1"},
		{"tcp://manager.internal:2376", "", "manager.internal"},
		{"tcp://manager.internal:2376", "10.0.0.9", "10.0.0.9"},
	}
	for _, tt := range tests {
		if got := NewEngine(tt.host).PublishedHost(tt.health); got != tt.want {
			t.Errorf("PublishedHost(%q, %q) = %q, want %q", tt.host, tt.health, got, tt.want)
		}
	}
}

// TestEngineUnreachable: the real client against closed addresses gives
// the user message, with the host as configured.
func TestEngineUnreachable(t *testing.T) {
	for _, host := range []string{"tcp://127.0.0.1:1", "unix:///nonexistent/docker.sock"} {
		t.Run(host, func(t *testing.T) {
			cli, err := NewClient(host, "")
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			e := NewEngine(host)
			err = e.RequireImage(context.Background(), cli, "myapp:v1")
			msg, ok := platforms.UserMessage(err)
			if !ok || !strings.Contains(msg, "cannot reach the Docker engine at "+host) {
				t.Errorf("err = %v, user message %q", err, msg)
			}
			if !strings.HasPrefix(err.Error(), "cannot reach") || !strings.Contains(err.Error(), "inspect image myapp:v1: ") {
				t.Errorf("cause not wrapped as op: cause: %v", err)
			}
		})
	}
}

func TestNewClientRefusesDockerHostCredentials(t *testing.T) {
	t.Setenv("DOCKER_HOST", "tcp://admin:s3cr3t@127.0.0.1:1")
	_, err := NewClient("", "")
	if err == nil || !strings.Contains(err.Error(), "DOCKER_HOST: must not contain credentials") || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v", err)
	}
}

// TestFirstOK: the first candidate answering 2xx wins; otherwise every
// attempt is in the error.
func TestFirstOK(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	closed := httptest.NewServer(nil)
	closedURL := closed.URL
	closed.Close()

	e := NewEngine("")
	ctx := context.Background()
	if err := e.FirstOK(ctx, []string{closedURL + "/health", bad.URL + "/health", ok.URL + "/health"}); err != nil {
		t.Errorf("one candidate answers 200, err = %v", err)
	}
	err := e.FirstOK(ctx, []string{closedURL + "/health", bad.URL + "/health"})
	if err == nil || !strings.Contains(err.Error(), "503 Service Unavailable") || !strings.Contains(err.Error(), closedURL) {
		t.Errorf("no candidate answers: err = %v", err)
	}
	if err := e.FirstOK(ctx, nil); err == nil {
		t.Error("no candidates: no error")
	}
}

type memHistory map[string][]platforms.Revision

func (h memHistory) Deployed(ctx context.Context, key string) ([]platforms.Revision, error) {
	return h[key], nil
}

type failingHistory struct{}

func (failingHistory) Deployed(context.Context, string) ([]platforms.Revision, error) {
	return nil, errors.New("redis down")
}

// TestHistoryAndRequireImageOnTheEngine reads the engine's local images
// of the sample repository and rollbot's record around a current image.
func TestHistoryAndRequireImageOnTheEngine(t *testing.T) {
	cli := dockertest.Client(t)
	v1 := dockertest.MustImage(t, cli, dockertest.Variant{Tag: "v1"})
	v2 := dockertest.MustImage(t, cli, dockertest.Variant{Tag: "v2", FailHealth: true})
	ctx := context.Background()
	e := NewEngine("")
	e.Record, e.RecordKey = memHistory{"myapp": {{ID: "gone", Artifact: dockertest.Repo + ":deleted-long-ago"}}}, "myapp"

	current := RevisionFor(v2, dockertest.Repo, time.Now())
	prev := RevisionFor(v1, dockertest.Repo, time.Time{})
	prev.ChangeCause = "previous spec"
	hist, err := e.History(ctx, cli, current, v2, []platforms.Revision{prev})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(hist, func(r platforms.Revision) bool { return r.Artifact == v2 })
	if i < 0 || i+2 >= len(hist) || hist[i+1].ChangeCause != "previous spec" || hist[i+2].ID != "gone" {
		t.Fatalf("history %+v: want current, then the previous spec, then rollbot's record", hist)
	}
	if n := len(slices.DeleteFunc(slices.Clone(hist), func(r platforms.Revision) bool { return !SameImage(r.Artifact, v1) })); n != 1 {
		t.Errorf("v1 listed %d times (previous spec and local image are one)", n)
	}

	if err := e.RequireImage(ctx, cli, v1); err != nil {
		t.Errorf("RequireImage(%s) = %v", v1, err)
	}
	missing := dockertest.Name(dockertest.Repo + ":never-built-")
	err = e.RequireImage(ctx, cli, missing)
	msg, _ := platforms.UserMessage(err)
	if !errors.Is(err, platforms.ErrNotFound) || !strings.Contains(msg, missing) || !strings.Contains(msg, "rebuild") {
		t.Errorf("missing image: err = %v, user message %q", err, msg)
	}

	e.Record = failingHistory{}
	if _, err := e.History(ctx, cli, current, v2); err == nil || !strings.Contains(err.Error(), "deployment record of myapp: redis down") {
		t.Errorf("a failing record: err = %v", err)
	}
}

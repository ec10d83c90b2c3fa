package probe

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"rollbot/testkit/promtest"
	"rollbot/testkit/wait"

	"rollbot/testkit/nettest"
)

func TestHealthCheck(t *testing.T) {
	app := promtest.StartSampleApp(t, promtest.BuildSampleApp(t))
	redirect := httptest.NewServer(http.RedirectHandler("/login?next=/health", http.StatusFound))
	defer redirect.Close()
	closed := nettest.ClosedAddr(t)
	silent := promtest.SilentAddr(t)

	t.Run("healthy", func(t *testing.T) {
		r := HealthCheck(context.Background(), app.URL+"/health")
		if !r.OK || r.Status != 200 || !strings.HasPrefix(r.Detail, "HTTP 200 OK in ") || r.Output != "" || r.Target != app.URL+"/health" {
			t.Fatalf("HealthCheck = %+v", r)
		}
	})
	t.Run("unhealthy", func(t *testing.T) {
		app.SetMode(t, "fail_health", "true")
		defer app.SetMode(t, "fail_health", "false")
		r := HealthCheck(context.Background(), app.URL+"/health")
		if r.OK || r.Status != 503 || !strings.HasPrefix(r.Detail, "HTTP 503 Service Unavailable in ") || r.Output != "unhealthy" {
			t.Fatalf("HealthCheck = %+v", r)
		}
	})
	t.Run("redirect is not healthy", func(t *testing.T) {
		r := HealthCheck(context.Background(), redirect.URL+"/health")
		if r.OK || r.Status != 302 || !strings.HasSuffix(r.Detail, ", redirect to /login") {
			t.Fatalf("HealthCheck = %+v", r)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		r := HealthCheck(context.Background(), "http://"+closed+"/health")
		if r.OK || r.Status != 0 || r.Detail != "connection refused" {
			t.Fatalf("HealthCheck = %+v", r)
		}
	})
	t.Run("no answer", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		r := HealthCheck(ctx, "http://"+silent+"/health")
		if r.OK || !strings.HasPrefix(r.Detail, "no answer within ") {
			t.Fatalf("HealthCheck = %+v", r)
		}
	})
	t.Run("credentials stay out", func(t *testing.T) {
		r := HealthCheck(context.Background(), "http://user:hunter2@"+closed+"/health?token=tok3n")
		for _, s := range []string{"hunter2", "tok3n"} {
			if strings.Contains(fmt.Sprintf("%+v", r), s) {
				t.Fatalf("result leaks %q: %+v", s, r)
			}
		}
		if r.Target != "http://"+closed+"/health" {
			t.Fatalf("Target = %q", r.Target)
		}
	})
	t.Run("not a URL", func(t *testing.T) {
		if r := HealthCheck(context.Background(), "localhost:8080/health"); r.OK || r.Detail != "not an http(s) URL" {
			t.Fatalf("HealthCheck = %+v", r)
		}
	})
}

func TestSmokeTest(t *testing.T) {
	ctx := context.Background()
	t.Run("pass keeps the last lines", func(t *testing.T) {
		r := SmokeTest(ctx, []string{"sh", "-c", "for i in $(seq 1 30); do echo line $i; done; printf 'no newline'"}, 10*time.Second)
		if !r.OK || r.ExitCode != 0 || !strings.HasPrefix(r.Detail, "exit 0 after ") {
			t.Fatalf("SmokeTest = %+v", r)
		}
		lines := strings.Split(r.Output, "\n")
		want := []string{"[11 earlier lines omitted]"}
		for i := 12; i <= 30; i++ {
			want = append(want, "line "+strconv.Itoa(i))
		}
		want = append(want, "no newline")
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Fatalf("Output =\n%s\nwant\n%s", r.Output, strings.Join(want, "\n"))
		}
	})
	t.Run("failure with output tail", func(t *testing.T) {
		r := SmokeTest(ctx, []string{"sh", "-c", "echo checking /work; echo 'boom: 500' >&2; exit 3"}, 10*time.Second)
		if r.OK || r.ExitCode != 3 || !strings.HasPrefix(r.Detail, "exit status 3 after ") || r.Output != "checking /work\nboom: 500" {
			t.Fatalf("SmokeTest = %+v", r)
		}
	})
	t.Run("timeout kills the process group", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		r := SmokeTest(ctx, []string{"sh", "-c", "echo started; sleep 60 & echo $! > " + pidFile + "; wait"}, 500*time.Millisecond)
		if r.OK || !r.TimedOut || r.ExitCode != -1 || r.Detail != "timed out after 500ms; killed" || r.Output != "started" {
			t.Fatalf("SmokeTest = %+v", r)
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid := strings.TrimSpace(string(b))
		wait.For(t, 5*time.Second, "the command's child "+pid+" to end after the timeout", func() (bool, error) { return !alive(pid), nil })
	})
	t.Run("the bot's secrets are not passed on", func(t *testing.T) {
		t.Setenv("SLACK_BOT_TOKEN", "xoxb-secret-value")
		r := Smoke{Command: []string{"sh", "-c", `echo "[$SLACK_BOT_TOKEN] [$SMOKE_URL] $PATH"`}, Env: []string{"SMOKE_URL=http://app/health"}, Timeout: 10 * time.Second}.Run(ctx)
		if !r.OK || !strings.HasPrefix(r.Output, "[] [http://app/health] ") || !strings.Contains(r.Output, "/bin") {
			t.Fatalf("SmokeTest = %+v", r)
		}
	})
	t.Run("cannot start", func(t *testing.T) {
		r := SmokeTest(ctx, []string{"/nonexistent/smoke"}, time.Second)
		if r.OK || r.ExitCode != -1 || r.Detail != "cannot run /nonexistent/smoke: no such file or directory" {
			t.Fatalf("SmokeTest = %+v", r)
		}
		if r := SmokeTest(ctx, nil, time.Second); r.OK || r.Detail != "no smoke test command configured" {
			t.Fatalf("SmokeTest(nil) = %+v", r)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		r := SmokeTest(cctx, []string{"sleep", "30"}, time.Minute)
		if r.OK || r.TimedOut || !strings.HasPrefix(r.Detail, "cancelled after ") {
			t.Fatalf("SmokeTest = %+v", r)
		}
	})
	t.Run("long lines are cut", func(t *testing.T) {
		r := SmokeTest(ctx, []string{"sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x; echo; echo end"}, 10*time.Second)
		lines := strings.Split(r.Output, "\n")
		if !r.OK || len(lines) != 2 || lines[0] != strings.Repeat("x", maxLineBytes)+"…" || lines[1] != "end" {
			t.Fatalf("SmokeTest = %+v", r)
		}
	})
}

// alive reports whether pid runs (a zombie waiting to be reaped is dead).
func alive(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func TestTail(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		n      int
		want   string
	}{
		{"empty", nil, 3, ""},
		{"fewer lines", []string{"a\nb\n"}, 3, "a\nb"},
		{"split writes", []string{"hel", "lo\nwor", "ld\n"}, 3, "hello\nworld"},
		{"drops oldest", []string{"1\n2\n3\n4\n5\n"}, 3, "[2 earlier lines omitted]\n3\n4\n5"},
		{"partial last line counts", []string{"1\n2\n3\n4"}, 3, "[1 earlier lines omitted]\n2\n3\n4"},
		{"crlf", []string{"a\r\nb\r\n"}, 3, "a\nb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTail(tt.n)
			for _, w := range tt.writes {
				fmt.Fprint(tl, w)
			}
			if got := tl.String(); got != tt.want {
				t.Fatalf("tail = %q, want %q", got, tt.want)
			}
		})
	}
}

// Probes is what the verification step runs: all health URLs must pass,
// and a failed smoke test shows its output.
func TestProbes(t *testing.T) {
	app := promtest.StartSampleApp(t, promtest.BuildSampleApp(t))
	closed := "http://" + nettest.ClosedAddr(t) + "/health"
	ctx := context.Background()
	tests := []struct {
		name       string
		p          Probes
		health     bool
		healthWant string
		smoke      bool
		smokeWant  string
	}{
		{"all pass", Probes{HealthURLs: []string{app.URL + "/health", app.URL + "/health?deep=1"}, SmokeCommand: []string{"true"}},
			true, "2/2 health URLs answer 2xx", true, "exit 0 after "},
		{"one URL fails", Probes{HealthURLs: []string{app.URL + "/health", closed}, SmokeCommand: []string{"sh", "-c", "echo checkout failed; exit 3"}},
			false, closed + ": connection refused", false, "exit status 3 after "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, detail, err := tt.p.Health(ctx)
			if err != nil || ok != tt.health || !strings.HasPrefix(detail, tt.healthWant) {
				t.Errorf("Health = %v, %q, %v; want %v, %q…", ok, detail, err, tt.health, tt.healthWant)
			}
			ok, detail, err = tt.p.Smoke(ctx)
			if err != nil || ok != tt.smoke || !strings.HasPrefix(detail, tt.smokeWant) {
				t.Errorf("Smoke = %v, %q, %v; want %v, %q…", ok, detail, err, tt.smoke, tt.smokeWant)
			}
			if !ok && !strings.HasSuffix(detail, "\n```checkout failed```") {
				t.Errorf("a failed smoke test's detail lacks its output: %q", detail)
			}
		})
	}
}

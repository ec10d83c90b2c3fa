package docker

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"rollbot/platforms"
	"rollbot/testkit/logtest"
)

// A container log the engine refuses with an error rollbot has no words
// for is said in the evidence file with a reference into the log, never
// as the engine's text (which may name paths, addresses, values); the log
// line with that reference holds the cause. A known refusal is said by its
// reason. The engine is an HTTP peer answering like dockerd.
func TestCaptureErrTextHasAReference(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(r.URL.Path, "/containers/gone/") {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"No such container: gone"}`))
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"message":"open /var/lib/docker/containers/web1/log.json: DB_PASSWORD=s3cr3t at 10.0.0.9"}`))
	}))
	defer srv.Close()
	host := "tcp://" + srv.Listener.Addr().String()
	cli, err := NewClient(host, "")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	lim := platforms.CaptureLimits{}.WithDefaults()

	logs := &logtest.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	_, _, err = TailLog(ctx, cli, "web1", false, lim)
	if err == nil {
		t.Fatal("the engine's 500 was not an error")
	}
	text := CaptureErr(ctx, log, "capture log", err, "container", "web1")
	if !strings.HasPrefix(text, "error, see the bot log, ref ") {
		t.Errorf("text = %q", text)
	}
	for _, raw := range []string{"s3cr3t", "10.0.0.9", "/var/lib/docker"} {
		if strings.Contains(text, raw) {
			t.Errorf("the text shows the engine's error (%q): %q", raw, text)
		}
	}
	line := logtest.RefLine(t, logs.String(), logtest.Ref(t, text))
	if !strings.Contains(line, `"msg":"capture log"`) || !strings.Contains(line, `"container":"web1"`) || !strings.Contains(line, "log.json") {
		t.Errorf("the referenced log line does not hold the cause: %s", line)
	}

	_, _, err = TailLog(ctx, cli, "gone", false, lim)
	if got := CaptureErr(ctx, log, "capture log", err, "container", "gone"); got != "not found" {
		t.Errorf("a missing container: %q, want its reason", got)
	}
}

package bot

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/state"
	"rollbot/testkit/promtest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// newStandaloneReplicas starts n `rollbot serve` processes on one
// redis-server of their own, with one service, myapp, configured by
// service (indented under services.myapp).
func newStandaloneReplicas(t *testing.T, n int, service func(stateFile string) string) *replicaSet {
	t.Helper()
	srv := redistest.Server(t)
	emu, err := slackemu.New(slackemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	opt, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	dir := t.TempDir()
	r := &replicaSet{t: t, bin: rollbotBinary(t), dir: dir, emu: emu, redisURL: srv.URL,
		prefix: "rb" + strconv.FormatInt(time.Now().UnixNano(), 36), stateFile: filepath.Join(dir, "sim.json"), procs: map[int]*exec.Cmd{}}
	r.store = state.New(rdb, r.prefix)
	cfg := fmt.Sprintf(`incident_channels: [%s]
redis_prefix: %s
lease: %s
query_timeout: 5s
services:
  myapp:
%s    approvers: {groups: [%s]}
`, slackemu.ChannelIncident, r.prefix, replicaLease, service(r.stateFile), slackemu.GroupOnCall)
	if err := os.WriteFile(filepath.Join(dir, "rollbot.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stopAll)
	for range n {
		r.start()
	}
	r.waitConnections(n)
	return r
}

// TestReplicasShareScrapeHistory: two `rollbot serve` processes on one
// redis-server; one scrapes the service (it holds the scrape lease) and
// pushes its samples to Redis. kill -9 of that process: the other takes
// the lease over within the lease (3s here) and a flush, keeps scraping,
// and the history from before the kill is still there: a dry run on the
// survivor measures a span that starts before the kill.
func TestReplicasShareScrapeHistory(t *testing.T) {
	heavy(t)
	app := promtest.StartSampleApp(t, promtest.BuildSampleApp(t), "-self-load", "20")
	r := newStandaloneReplicas(t, 2, func(stateFile string) string {
		return fmt.Sprintf(`    platform: simulated
    simulated:
      versions: [{artifact: "app:v1"}, {artifact: "app:v2"}]
      replicas: 1
      state_file: %s
    metrics:
      scrape: {url: %s/metrics, interval: 500ms, labels: {handler: /work}}
    windows: {assess: 2m}
`, stateFile, app.URL)
	})
	ctx := context.Background()
	history := func() state.ScrapeHistory {
		h, err := r.store.ScrapeHistory(ctx, "myapp")
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	var before state.ScrapeHistory
	wait.For(t, 30*time.Second, "one replica to scrape 12 samples", func() (bool, error) {
		before = history()
		return before.Owner != "" && len(before.Samples) >= 12, fmt.Errorf("owner %q, %d samples", before.Owner, len(before.Samples))
	})
	owner := before.Owner
	pid := ownerPID(t, &state.Incident{Owner: owner})
	r.kill(pid)
	killed := time.Now()

	var after state.ScrapeHistory
	wait.For(t, replicaLease+10*time.Second, "the other replica to take the scraping over", func() (bool, error) {
		after = history()
		return after.Owner != "" && after.Owner != owner, fmt.Errorf("owner %q", after.Owner)
	})
	t.Logf("scrape lease: %s killed, %s took over after %s", owner, after.Owner, time.Since(killed).Round(100*time.Millisecond))
	wait.For(t, 20*time.Second, "the new owner's samples", func() (bool, error) {
		after = history()
		return len(after.Samples) >= len(before.Samples)+6, fmt.Errorf("%d samples, %d before the kill", len(after.Samples), len(before.Samples))
	})
	if string(after.Samples[0]) != string(before.Samples[0]) {
		t.Fatalf("the oldest sample changed with the takeover: the history from before the kill is gone")
	}

	// The survivor assesses from the shared history: the 2m window is
	// longer than it, so the table says the span, which starts before
	// the kill.
	r.slash("myapp --dry-run")
	dry := r.wait("dry-run assessment", textHas("Plan (dry run"))
	got := measuredOver(t, dry.PlainText(), "Error rate")
	// More than 6 s of history came before the kill (12 samples at
	// 500ms); without it the span would start at the takeover, 3 s after
	// the kill. A 2 s margin tells the two apart; the shown span is
	// rounded and the dry run took time since it measured.
	if since := time.Since(killed); got < since+2*time.Second {
		t.Fatalf("measured %s, the kill was %s ago: the history from before the kill is not in it\n%s", got, since.Round(time.Second), dry.PlainText())
	}
	t.Logf("dry run on the survivor measured %s (the kill was %s ago)", got, time.Since(killed).Round(time.Second))
	if n := len(r.procs); n != 1 {
		t.Fatalf("%d replicas alive, want 1", n)
	}
}

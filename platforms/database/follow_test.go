package database

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/platforms/migrations"
	"rollbot/testkit/logtest"
	"rollbot/testkit/wait"
)

const (
	starterEnv    = "ROLLBOT_TEST_DB_DOWN_STARTER" // the incident
	starterDirEnv = "ROLLBOT_TEST_DB_DOWN_DIR"
	downURLEnv    = "ROLLBOT_TEST_SHOP_DOWN_URL"
)

func TestMain(m *testing.M) {
	if incident := os.Getenv(starterEnv); incident != "" {
		// A replica's down step, in a process of its own that the test
		// kills with SIGKILL.
		err := migrations.RunDown(context.Background(), followDown(os.Getenv(starterDirEnv)), incident, nil, os.Stdout)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// followDown is a down command that prints a line, waits for the file
// gate in dir, then fails when the file fail is there, else moves the
// shop's table back to 2 with psql.
func followDown(dir string) migrations.DownConfig {
	return migrations.DownConfig{Kind: migrations.DownCommand, Dir: dir, Timeout: time.Minute,
		SecretEnv: map[string]migrations.SecretRef{"DATABASE_URL": {Env: downURLEnv}},
		Command: []string{"sh", "-c", `echo "rolling back"
while [ ! -e gate ]; do sleep 0.05; done
if [ -e fail ]; then echo "error: no migration found for version 4 ($DATABASE_URL)" >&2; exit 1; fi
psql -q "$DATABASE_URL" -c "UPDATE schema_migrations SET version = 2"
echo "rolled back to 2"`}}
}

// TestRollBackFollowsCommandOnThisHost: the replica running a kind
// command down step is killed with SIGKILL (a real process running
// migrations.RunDown); its command goes on. The resumed RollBack on the
// same host finds its run directory: it says so, relays the command's
// output from the beginning, waits for its end and decides from the
// table — success when it is back, else a user error saying the command
// ended but the table is not back and its exit status was lost. The
// command is never run a second time.
func TestRollBackFollowsCommandOnThisHost(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatalf("psql (postgresql-client, with postgresql in .ci/apt-packages): %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	s := newShop(t, followDown(dir))
	t.Setenv(downURLEnv, s.dsn)
	password := strings.SplitN(strings.SplitN(strings.TrimPrefix(s.dsn, "postgres://"), "@", 2)[0], ":", 2)[1]

	for _, tc := range []struct {
		name, incident string
		fail           bool
	}{
		{name: "table back", incident: "RB-11"},
		{name: "table not back", incident: "RB-12", fail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.setVersion(t, 4)
			for _, f := range []string{"gate", "fail"} {
				os.Remove(filepath.Join(dir, f))
			}
			if tc.fail {
				if err := os.WriteFile(filepath.Join(dir, "fail"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// The replica that owns the incident starts the command and
			// is killed once it has relayed its first line.
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), starterEnv+"="+tc.incident, starterDirEnv+"="+dir)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			if sc := bufio.NewScanner(stdout); !sc.Scan() || sc.Text() != "rolling back" {
				t.Fatalf("the starter relayed %q, %v", sc.Text(), sc.Err())
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()

			type result struct {
				got string
				err error
			}
			done := make(chan result, 1)
			var out logtest.Buffer
			go func() {
				got, err := s.db.RollBack(ctx, platforms.DBRun{Incident: tc.incident, Resumed: true}, s.since, s.bad, &out)
				done <- result{got, err}
			}()
			// The follower is on the command's output before it ends.
			wait.For(t, 30*time.Second, "the follower to relay the first line", func() (bool, error) {
				return strings.Contains(out.String(), "rolling back\n"), nil
			})
			if err := os.WriteFile(filepath.Join(dir, "gate"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			var r result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("RollBack did not return within 30s (output %q)", out.String())
			}
			text := out.String()
			if !strings.HasPrefix(text, "Following the down command `sh` that the replica that stopped started on this host (rollbot does not start it again)") {
				t.Errorf("output %q", text)
			}
			if strings.Contains(text, password) {
				t.Errorf("output holds the DSN's password: %q", text)
			}
			if tc.fail {
				msg, ok := platforms.UserMessage(r.err)
				if !ok || !strings.HasPrefix(msg, "the down command `sh` started by the replica that stopped has ended, but schema_migrations is not back") ||
					!strings.Contains(msg, "exit status was lost with that replica") {
					t.Errorf("RollBack = %q, %v (message %q)", r.got, r.err, msg)
				}
				if !strings.Contains(text, "error: no migration found for version 4 ([REDACTED])\n") {
					t.Errorf("output %q", text)
				}
			} else {
				if r.err != nil || !strings.Contains(r.got, "is back at 2 (checked in schema_migrations); the down command started by the replica that stopped finished (rollbot followed it on this host)") {
					t.Errorf("RollBack = %q, %v (output %q)", r.got, r.err, text)
				}
				if !strings.HasSuffix(text, "rolling back\nrolled back to 2\n") {
					t.Errorf("output %q", text)
				}
			}
			if _, err := migrations.OpenDownRun(tc.incident); err != migrations.ErrNoDownRun {
				t.Errorf("the run directory after the follow: %v, want none", err)
			}
		})
	}
}

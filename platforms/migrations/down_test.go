package migrations

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/testkit/wait"
)

// TestRunDownStreams checks that output reaches the writer line by line
// while the command still runs (through the output file of its run
// directory, which is gone afterwards): the command prints a line, then
// waits for a file that the writer creates only when it has seen that
// line.
func TestRunDownStreams(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	w := &lines{}
	w.on = func(l string) {
		if l == "waiting for the gate\n" {
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	cfg := DownConfig{Kind: DownCommand, Dir: dir, Timeout: time.Minute, Command: []string{"sh", "-c",
		`echo "waiting for the gate"; while [ ! -e gate ]; do sleep 0.05; done; echo "through the gate" >&2; printf 'no newline at the end'`}}
	if err := RunDown(context.Background(), cfg, "RB-1", nil, w); err != nil {
		t.Fatalf("RunDown: %v (output %q)", err, w.String())
	}
	want := []string{"waiting for the gate\n", "through the gate\n", "no newline at the end\n"}
	if strings.Join(w.l, "|") != strings.Join(want, "|") {
		t.Errorf("writes %q, want %q", w.l, want)
	}
	noRunDir(t, "RB-1")
}

// TestRunDownEnvironment checks $(NAME) expansion, the variables the
// command gets (and that the bot's other variables, like its Slack token,
// are not passed), and that secret values are redacted from the output.
func TestRunDownEnvironment(t *testing.T) {
	t.Setenv("ROLLBOT_TEST_SLACK_TOKEN", "xoxb-not-for-migrations")
	t.Setenv("ROLLBOT_TEST_MIGRATE_DSN", "postgres://migrator:Pa55-w0rd@db.internal:5432/app")
	cfg := DownConfig{
		Kind:      DownCommand,
		Command:   []string{"sh", "-c", `echo "args: $0 $1"; env | sort; echo "dsn is $DATABASE_URL"; echo "pw alone: Pa55-w0rd"`, "$(ROLLBOT_STEPS)", "$$(literal)"},
		Env:       map[string]string{"FLYWAY_LOCATIONS": "filesystem:/flyway/sql"},
		SecretEnv: map[string]SecretRef{"DATABASE_URL": {Env: "ROLLBOT_TEST_MIGRATE_DSN"}},
	}
	rep := Report{Tool: ToolRails, Steps: 2, Target: "20240315120000", Current: "20241121100000"}
	var w lines
	if err := RunDown(context.Background(), cfg, "RB-1", rep.DownVars(), &w); err != nil {
		t.Fatalf("RunDown: %v", err)
	}
	out := w.String()
	for _, want := range []string{"args: 2 $(literal)", "ROLLBOT_STEPS=2", "ROLLBOT_TARGET=20240315120000", "FLYWAY_LOCATIONS=filesystem:/flyway/sql",
		"dsn is [REDACTED]", "pw alone: [REDACTED]", "DATABASE_URL=[REDACTED]"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, leak := range []string{"xoxb-not-for-migrations", "Pa55-w0rd", "ROLLBOT_TEST_SLACK_TOKEN"} {
		if strings.Contains(out, leak) {
			t.Errorf("output holds %q:\n%s", leak, out)
		}
	}
	noRunDir(t, "RB-1") // the file with the unredacted output
}

// TestRunDownRelativeCommand: a command given relative to the service's
// directory (Rails' bin/rails) is found there, not in the bot's own
// working directory.
func TestRunDownRelativeCommand(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "rails"), []byte("#!/bin/sh\necho \"rolled back $1 in $(pwd)\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := DownConfig{Kind: DownCommand, Dir: dir, Command: []string{"bin/rails", "STEP=$(ROLLBOT_STEPS)"}}
	var w lines
	if err := RunDown(context.Background(), cfg, "RB-1", map[string]string{"ROLLBOT_STEPS": "2"}, &w); err != nil {
		t.Fatalf("RunDown: %v (output %q)", err, w.String())
	}
	if got, want := w.String(), "rolled back STEP=2 in "+dir+"\n"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	cfg.Dir = t.TempDir() // no bin/rails there
	err := RunDown(context.Background(), cfg, "RB-1", nil, &lines{})
	if msg, ok := platforms.UserMessage(err); !ok || !strings.Contains(msg, "bin/rails is not in "+cfg.Dir+" on the bot's host") {
		t.Errorf("without bin/rails in dir: %v", err)
	}
}

func TestRunDownFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("exit status", func(t *testing.T) {
		t.Setenv("ROLLBOT_TEST_MIGRATE_DSN", "mysql://u:S3cr3t-Value@tcp(db:3306)/app")
		cfg := DownConfig{Kind: DownCommand, Command: []string{"sh", "-c", "echo 'error: no migration found for version 3' >&2; exit 3", "$(DATABASE_URL)"},
			SecretEnv: map[string]SecretRef{"DATABASE_URL": {Env: "ROLLBOT_TEST_MIGRATE_DSN"}}}
		var w lines
		err := RunDown(ctx, cfg, "RB-1", nil, &w)
		msg, ok := platforms.UserMessage(err)
		if !ok || !strings.Contains(msg, "exit status 3") || !strings.Contains(w.String(), "no migration found") {
			t.Errorf("err %v, output %q", err, w.String())
		}
		if strings.Contains(err.Error(), "S3cr3t-Value") {
			t.Errorf("error holds the secret: %v", err)
		}
		noRunDir(t, "RB-1")
	})
	t.Run("not installed", func(t *testing.T) {
		err := RunDown(ctx, DownConfig{Kind: DownCommand, Command: []string{"flyway-not-here", "undo"}}, "RB-1", nil, &lines{})
		if msg, ok := platforms.UserMessage(err); !ok || !strings.Contains(msg, "flyway-not-here is not installed") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("secret variable unset", func(t *testing.T) {
		err := RunDown(ctx, DownConfig{Kind: DownCommand, Command: []string{"true"},
			SecretEnv: map[string]SecretRef{"DATABASE_URL": {Env: "ROLLBOT_TEST_UNSET_VARIABLE"}}}, "RB-1", nil, &lines{})
		if msg, ok := platforms.UserMessage(err); !ok || !strings.Contains(msg, "ROLLBOT_TEST_UNSET_VARIABLE is not set") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("kind job", func(t *testing.T) {
		if err := RunDown(ctx, DownConfig{Kind: DownKubernetesJob, Namespace: "x", Command: []string{"true"}}, "RB-1", nil, &lines{}); err == nil {
			t.Error("RunDown ran a kubernetes_job config on the host")
		}
	})
}

// TestRunDownTimeoutKillsGroup runs a command that leaves a background
// child and never ends; the timeout must stop the command and the child.
func TestRunDownTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	cfg := DownConfig{Kind: DownCommand, Dir: dir, Timeout: 500 * time.Millisecond, Command: []string{"sh", "-c",
		`sleep 300 & echo $! > child.pid; echo started; wait`}}
	var w lines
	start := time.Now()
	err := RunDown(context.Background(), cfg, "RB-1", nil, &w)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if msg, _ := platforms.UserMessage(err); !strings.Contains(msg, "did not finish within 500ms") {
		t.Errorf("user message %q", msg)
	}
	if elapsed := time.Since(start); elapsed > 20*time.Second {
		t.Errorf("RunDown returned after %v", elapsed)
	}
	noRunDir(t, "RB-1")
	b, err := os.ReadFile(filepath.Join(dir, "child.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	err = wait.UntilEvery(context.Background(), 50*time.Millisecond, 10*time.Second, fmt.Sprintf("background child %d of the down command to end after the timeout", pid), func() (bool, error) {
		// A zombie is dead too: it is reparented and reaped by init.
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || strings.Contains(string(stat), ") Z "), nil
	})
	if err != nil {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal(err)
	}
}

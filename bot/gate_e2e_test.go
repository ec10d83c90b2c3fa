package bot

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/nettest"
	"rollbot/testkit/redistest"
	"rollbot/testkit/slackemu"
)

const gateToken = "gate-token-0123456789abcdef-never-logged"

// deployableCLI runs the built `rollbot deployable` against the harness's
// Redis and returns its exit status and output.
func deployableCLI(t *testing.T, h *harness, args ...string) (int, string) {
	t.Helper()
	dir := t.TempDir()
	conf := "redis_prefix: " + h.opts.Prefix + "\nservices:\n  myapp:\n    platform: simulated\n"
	if err := os.WriteFile(filepath.Join(dir, "rollbot.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rollbotBinary(t), append([]string{"deployable", "--config", filepath.Join(dir, "rollbot.yaml")}, args...)...)
	cmd.Env = append(os.Environ(), "REDIS_URL="+redistest.URL(t))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("run rollbot deployable: %v", err)
	return -1, ""
}

// harnessWith is a harness whose bot runs with opt applied to its
// options: the bot newHarness started is replaced by one started with them.
func harnessWith(t *testing.T, services []*handlers.Service, opt func(*Options)) *harness {
	t.Helper()
	h := newHarness(t, services, fastEngine())
	h.stop()
	opt(&h.opts)
	h.start()
	return h
}

// gateGet asks GET /v1/deployable on the ops listener at addr with token
// ("" sends none).
func gateGet(t *testing.T, addr, token, query string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/deployable?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func decodeVerdict(t *testing.T, body string) verdictJSON {
	t.Helper()
	var v verdictJSON
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("verdict %q: %v", body, err)
	}
	return v
}

// TestDeployGateAfterRollback: a rollback through the local Slack server
// marks the bad version and locks deploys; the built `rollbot deployable`
// and GET /v1/deployable refuse it (exit 3 / 409, with who and which
// incident) until an approver runs /rollback unlock; a wrong token gets
// 401 and nothing else; the token is never logged.
func TestDeployGateAfterRollback(t *testing.T) {
	lightLong(t)
	svc, _ := simService(t, "myapp", time.Millisecond)
	svc.DeployLock = true
	ops := nettest.FreeAddr(t)
	h := harnessWith(t, []*handlers.Service{svc}, func(o *Options) {
		o.OpsAddr, o.GateToken = ops, gateToken
	})

	// Before any rollback every version is deployable.
	if code, out := deployableCLI(t, h, "--service", "myapp", "--version", "v3"); code != 0 || !strings.Contains(out, "deployable: myapp v3") {
		t.Fatalf("clean: exit %d\n%s", code, out)
	}
	if code, body := gateGet(t, ops, gateToken, "service=myapp&version=v3"); code != http.StatusOK || !decodeVerdict(t, body).Deployable {
		t.Fatalf("clean over HTTP: %d %s", code, body)
	}

	h.slash(slackemu.UserAlice, `myapp --reason "5xx spike"`)
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	// The approver confirms the deploy lock with the rollback.
	wantAll(t, "assessment", a.PlainText(), "lock deploys of myapp until `/rollback unlock myapp`")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	post := h.waitFor("post-rollback actions", textHas("Post-rollback actions"))
	wantAll(t, "post-rollback actions", post.PlainText(), "deploys of myapp locked until an approver runs")
	h.waitStatus("RB-1", state.Completed)

	// While locked: the bad version for both reasons, the good one for the lock.
	for _, v := range []string{"v3", "app:v3", "3"} {
		code, out := deployableCLI(t, h, "--service", "myapp", "--version", v)
		if code != ExitNotDeployable {
			t.Fatalf("%s: exit %d, want %d\n%s", v, code, ExitNotDeployable, out)
		}
		wantAll(t, "deployable "+v, out, "not deployable", "is marked DO_NOT_DEPLOY (RB-1, by "+slackemu.UserBob, "5xx spike", "locked", "after rollback RB-1 (by "+slackemu.UserBob+")")
	}
	code, out := deployableCLI(t, h, "--service", "myapp", "--version", "v2", "--json")
	if code != ExitNotDeployable {
		t.Fatalf("v2 while locked: exit %d\n%s", code, out)
	}
	if v := decodeVerdict(t, out); v.Deployable || v.Mark != nil || v.DeployLock == nil || v.DeployLock.Incident != "RB-1" || v.DeployLock.By != slackemu.UserBob {
		t.Errorf("v2 while locked: %+v", v)
	}
	code, body := gateGet(t, ops, gateToken, "service=myapp&version=v3")
	if v := decodeVerdict(t, body); code != http.StatusConflict || v.Deployable || v.Mark == nil || v.Mark.Incident != "RB-1" || !strings.Contains(v.Reason, "DO_NOT_DEPLOY") {
		t.Errorf("HTTP v3: %d %s", code, body)
	}

	// Tokens and bad requests.
	for _, c := range []struct {
		name, token, query string
		code               int
		body               string
	}{
		{"no token", "", "service=myapp&version=v3", http.StatusUnauthorized, "unauthorized\n"},
		{"wrong token", "wrong-token-also-never-logged-42", "service=myapp&version=v3", http.StatusUnauthorized, "unauthorized\n"},
		{"token prefix", gateToken[:20], "service=myapp&version=v3", http.StatusUnauthorized, "unauthorized\n"},
		{"no version", gateToken, "service=myapp", http.StatusBadRequest, "give service and version"},
		{"unknown service", gateToken, "service=nope&version=v1", http.StatusNotFound, `unknown service \"nope\"; services: myapp`},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := gateGet(t, ops, c.token, c.query)
			if code != c.code || !strings.Contains(body, c.body) {
				t.Errorf("%d %q, want %d %q", code, body, c.code, c.body)
			}
			if c.code == http.StatusUnauthorized && body != c.body {
				t.Errorf("401 carries detail: %q", body)
			}
		})
	}

	// /rollback status shows the lock.
	h.slash(slackemu.UserAlice, "status myapp")
	h.waitFor("status with the deploy lock", ephemeralFor(slackemu.UserAlice, "Deploys of myapp locked after RB-1"))
	h.slash(slackemu.UserAlice, "status")
	h.waitFor("overall status with the deploy lock", func(m slackemu.Message) bool {
		return m.EphemeralFor == slackemu.UserAlice && strings.Contains(m.PlainText(), "No rollback is running") && strings.Contains(m.PlainText(), "Deploys of myapp locked")
	})

	// Only approvers lift it.
	h.slash(slackemu.UserEve, "unlock myapp")
	h.waitFor("refusal for eve", ephemeralFor(slackemu.UserEve, "not allowed to lift the deploy lock"))
	if code, _ := deployableCLI(t, h, "--service", "myapp", "--version", "v2"); code != ExitNotDeployable {
		t.Fatalf("v2 after a refused unlock: exit %d", code)
	}
	h.slash(slackemu.UserBob, "unlock myapp")
	h.waitFor("unlocked", textHas("Deploys of myapp unlocked by <@"+slackemu.UserBob+">"))
	if code, out := deployableCLI(t, h, "--service", "myapp", "--version", "v2"); code != 0 {
		t.Fatalf("v2 after unlock: exit %d\n%s", code, out)
	}
	if code, out := deployableCLI(t, h, "--service", "myapp", "--version", "v3"); code != ExitNotDeployable || strings.Contains(out, "locked") {
		t.Fatalf("v3 after unlock: exit %d\n%s", code, out)
	}
	if code, body := gateGet(t, ops, gateToken, "service=myapp&version=v2"); code != http.StatusOK || !decodeVerdict(t, body).Deployable {
		t.Errorf("HTTP v2 after unlock: %d %s", code, body)
	}
	h.slash(slackemu.UserBob, "unlock myapp")
	h.waitFor("nothing to unlock", ephemeralFor(slackemu.UserBob, "not locked; nothing to do"))

	evs, err := h.store.Timeline(context.Background(), "RB-1")
	if err != nil {
		t.Fatal(err)
	}
	has := func(actor, detail string) bool {
		return slices.ContainsFunc(evs, func(e state.Event) bool {
			return e.Step == "unlock" && e.Actor == actor && strings.Contains(e.Detail, detail)
		})
	}
	if !has(slackemu.UserEve, "refused") || !has(slackemu.UserBob, "lifted") {
		t.Errorf("unlocks not on the timeline: %+v", evs)
	}
	if !slices.ContainsFunc(evs, func(e state.Event) bool { return strings.Contains(e.Detail, "locking deploys of myapp") }) {
		t.Errorf("the deploy lock is not on the timeline: %+v", evs)
	}
	for _, secret := range []string{gateToken, "wrong-token-also-never-logged-42"} {
		if strings.Contains(h.logs.String(), secret) {
			t.Errorf("a token is in the log")
		}
	}
}

// TestDeployGateDuringRollback: while a rollback holds the service, the
// gate refuses deploys and names the incident and who started it.
func TestDeployGateDuringRollback(t *testing.T) {
	light(t)
	svc, _ := simService(t, "myapp", time.Millisecond)
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "myapp")
	h.waitFor("assessment", hasAction(handlers.ActConfirm))
	code, out := deployableCLI(t, h, "--service", "myapp", "--version", "v2")
	if code != ExitNotDeployable || !strings.Contains(out, "a rollback of myapp is in progress: RB-1 (started by "+slackemu.UserAlice) {
		t.Fatalf("during a rollback: exit %d\n%s", code, out)
	}
	if code, out := deployableCLI(t, h, "--service", "nope", "--version", "v2"); code != 1 || !strings.Contains(out, `unknown service "nope"`) {
		t.Errorf("unknown service: exit %d\n%s", code, out)
	}
}

func TestGateTokenFromOS(t *testing.T) {
	for _, c := range []struct {
		env, want string
		bad       bool
	}{
		{"", "", false},
		{"short", "", true},
		{"0123456789abcdef0123", "0123456789abcdef0123", false},
	} {
		t.Setenv(GateTokenVar, c.env)
		got, err := GateTokenFromOS()
		if got != c.want || (err != nil) != c.bad {
			t.Errorf("%s=%q: %q, %v", GateTokenVar, c.env, got, err)
		}
		if err != nil && (strings.Contains(err.Error(), c.env) || !strings.Contains(err.Error(), GateTokenVar)) {
			t.Errorf("error shows the value or lacks the variable's name: %v", err)
		}
	}
}

package swarm

import (
	"context"
	"errors"
	"strings"
	"testing"

	"rollbot/platforms"
	"rollbot/testkit/dockertest"
)

// TestDeploy (platforms.Deployer, used by drills) on the Docker engine of
// this machine: a dry run changes nothing, a deploy is one service update
// on the version read (PreviousSpec then holds the original, so the
// runbook's rollback is the engine's native one), the running image again
// is skipped, a deploy from a version that does not run is refused with
// nothing written (and one from the running version goes out), an image the engine lacks is refused before any change, and
// a deploy racing another update is a conflict that keeps the other.
func TestDeploy(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	name := createService(t, good.Ref(), 1)
	a := newTestAdapter(t, Config{Service: name})
	before := inspectService(t, name)

	res, err := a.Deploy(ctx, bad.Ref(), "", true)
	if err != nil || res.Outcome != platforms.Planned || len(res.Plan) != 1 {
		t.Fatalf("dry run: %+v, %v", res, err)
	}
	if v := inspectService(t, name).Version.Index; v != before.Version.Index {
		t.Fatalf("a dry run changed the service: version %d -> %d", before.Version.Index, v)
	}
	missing := dockertest.Name("rollbot-sampleapp:never-built-")
	if _, err := a.Deploy(ctx, missing, "", false); !errors.Is(err, platforms.ErrNotFound) {
		t.Fatalf("deploy of a missing image: %v, want ErrNotFound", err)
	}
	res, err = a.Deploy(ctx, bad.Ref(), "", false)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Deploy = %+v, %v", res, err)
	}
	after := inspectService(t, name)
	if specImage(&after.Spec) != bad.Ref() || specImage(after.PreviousSpec) != good.Ref() {
		t.Fatalf("after Deploy: spec %s, previous %s", specImage(&after.Spec), specImage(after.PreviousSpec))
	}
	if res, err := a.Deploy(ctx, bad.Ref(), "", false); err != nil || res.Outcome != platforms.Skipped {
		t.Fatalf("Deploy of the running image = %+v, %v; want skipped", res, err)
	}
	snap, err := a.Snapshot(ctx)
	if err != nil || snap.Current.Artifact != bad.Ref() {
		t.Fatalf("snapshot after Deploy: %+v, %v", snap, err)
	}
	// Only from the version expected: a drill puts its original back only
	// over its own bad version, never over what someone else deployed.
	_, err = a.Deploy(ctx, good.Ref(), good.Ref()+"-other", false)
	if !errors.Is(err, platforms.ErrConflict) {
		t.Fatalf("deploy from a version that does not run: %v, want ErrConflict", err)
	}
	if msg, _ := platforms.UserMessage(err); !strings.Contains(msg, "runs "+bad.Ref()+", not ") {
		t.Errorf("user message %q does not say what runs", msg)
	}
	// (The engine bumps the version itself as the update's tasks move, so
	// the spec says whether anything was written: a write would make the
	// bad image the previous spec.)
	if now := inspectService(t, name); specImage(&now.Spec) != bad.Ref() || specImage(now.PreviousSpec) != good.Ref() {
		t.Fatalf("a refused deploy changed the service: spec %s, previous %s", specImage(&now.Spec), specImage(now.PreviousSpec))
	}
	if res, err := a.Deploy(ctx, good.Ref(), bad.Ref(), false); err != nil || res.Outcome != platforms.Done {
		t.Fatalf("deploy back from the running version = %+v, %v", res, err)
	}
	back := inspectService(t, name)
	if got := specImage(&back.Spec); got != good.Ref() {
		t.Fatalf("spec image %s after the deploy back, want %s", got, good.Ref())
	}

	// Racing another update: refused, the other one kept.
	other := dockertest.MustImage(t, cli, dockertest.Variant{Tag: "v3-concurrent", Version: "v3"})
	name2 := createService(t, good.Ref(), 1)
	r := newTestAdapter(t, Config{Service: name2})
	r.api = &racingAPI{dockerAPI: r.api, race: func() { deploy(t, name2, other) }}
	_, err = r.Deploy(ctx, bad.Ref(), "", false)
	if !errors.Is(err, platforms.ErrConflict) {
		t.Fatalf("deploy racing an update: %v, want ErrConflict", err)
	}
	if msg, _ := platforms.UserMessage(err); !strings.Contains(msg, "changed by someone else") {
		t.Errorf("user message %q", msg)
	}
	now := inspectService(t, name2)
	if got := specImage(&now.Spec); got != other {
		t.Errorf("spec image %s, want the other update's %s", got, other)
	}
}

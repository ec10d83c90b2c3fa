// Package platformtest is the contract every platform adapter must meet,
// run by each adapter's own tests against its real system (a control
// plane, the Docker engine, sshd hosts, the AWS query server...).
package platformtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"rollbot/platforms"
)

// Env is an adapter whose service currently runs Bad, with Good earlier in
// its history.
type Env struct {
	Platform platforms.Platform
	Good     string // artifact of the last known good revision
	Bad      string // artifact running now
	// StopMayBeSkipped: the platform has no pause (swarm, VMs, blue-green),
	// so Stop reports Skipped with a reason.
	StopMayBeSkipped bool
}

// Contract checks the semantics the runbook relies on, in order: read,
// choose, plan without changing, refuse a missing revision clearly, stop,
// roll back and converge, and treat "already there" as skipped.
func Contract(t *testing.T, env Env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := env.Platform
	if p.Kind() == "" || p.Target() == "" {
		t.Fatalf("Kind %q / Target %q must name the adapter and its target", p.Kind(), p.Target())
	}
	snap := mustSnapshot(ctx, t, p)
	if snap.Current.Artifact != env.Bad {
		t.Fatalf("Snapshot current = %s, want %s", snap.Current.Label(), env.Bad)
	}
	found := false
	for _, r := range snap.History {
		found = found || r.ID == snap.Current.ID
	}
	if !found {
		t.Fatalf("History %v does not include the current revision %s", snap.History, snap.Current.Label())
	}
	good, ok := platforms.LastKnownGood(snap.History, snap.Current, nil)
	if !ok || good.Artifact != env.Good {
		t.Fatalf("LastKnownGood = %s (%v), want %s; history %v", good.Label(), ok, env.Good, snap.History)
	}

	t.Run("dry run changes nothing", func(t *testing.T) {
		res, err := p.Rollback(ctx, good, true, nil)
		if err != nil {
			t.Fatalf("dry run: %v", err)
		}
		if res.Outcome != platforms.Planned || len(res.Plan) == 0 {
			t.Fatalf("dry run = %+v, want Planned with a plan", res)
		}
		if cur := mustSnapshot(ctx, t, p).Current.Artifact; cur != env.Bad {
			t.Fatalf("dry run changed the service to %s", cur)
		}
	})
	t.Run("missing revision is refused clearly", func(t *testing.T) {
		_, err := p.Rollback(ctx, platforms.Revision{ID: "no-such-revision-4711", Artifact: "no-such-artifact:4711"}, false, nil)
		if !errors.Is(err, platforms.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		if _, ok := platforms.UserMessage(err); !ok {
			t.Fatalf("err %v carries no user message", err)
		}
	})
	t.Run("stop", func(t *testing.T) {
		res, err := p.Stop(ctx, false)
		if err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if res.Outcome == platforms.Skipped && !env.StopMayBeSkipped {
			t.Fatalf("Stop skipped: %s", res.Detail)
		}
		if res.Detail == "" {
			t.Fatal("Stop says nothing about what it did")
		}
	})
	t.Run("rollback converges", func(t *testing.T) {
		progressed := 0
		res, err := p.Rollback(ctx, good, false, func(platforms.Progress) { progressed++ })
		if err != nil {
			t.Fatalf("Rollback: %v", err)
		}
		if res.Outcome != platforms.Done || res.Detail == "" {
			t.Fatalf("Rollback = %+v, want Done with a detail", res)
		}
		if cur := mustSnapshot(ctx, t, p).Current.Artifact; cur != env.Good {
			t.Fatalf("after the rollback the service runs %s, want %s", cur, env.Good)
		}
		t.Logf("%d progress reports; %s", progressed, res.Detail)
	})
	t.Run("already at target is skipped", func(t *testing.T) {
		snap := mustSnapshot(ctx, t, p)
		res, err := p.Rollback(ctx, snap.Current, false, nil)
		if err != nil || res.Outcome != platforms.Skipped {
			t.Fatalf("second rollback = %+v, %v; want Skipped", res, err)
		}
	})
}

func mustSnapshot(ctx context.Context, t *testing.T, p platforms.Platform) *platforms.Snapshot {
	t.Helper()
	s, err := p.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return s
}

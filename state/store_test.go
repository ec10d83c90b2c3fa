package state_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/state"
	"rollbot/testkit/wait"
)

// newStore returns a Store on a key prefix of its own, on one Redis
// server, or on Sentinel or Cluster when run under TestStoreOnSentinel
// or TestStoreOnCluster (backends_test.go).
func newStore(t *testing.T) *state.Store {
	c, prefix := backendClient(t)
	return state.New(c, prefix)
}

func TestIncidentRoundTripAndIndexes(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	id, err := s.NextID(ctx)
	if err != nil || !strings.HasPrefix(id, "RB-") {
		t.Fatalf("NextID = %q, %v", id, err)
	}
	in := &state.Incident{ID: id, Service: "myapp", Channel: "C1", RequestedBy: "U1", Status: state.AwaitingConfirm,
		Bad: platforms.Revision{ID: "2", Artifact: "app:v2"}}
	req := state.Event{Actor: "U1", Step: "request", Detail: "requested rollback of myapp", Time: time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
	if err := s.Create(ctx, in, req); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// The request is on the timeline with the record (one transaction).
	if evs, err := s.Timeline(ctx, id); err != nil || len(evs) != 1 || evs[0].Step != "request" || evs[0].Detail != req.Detail || !evs[0].Time.Equal(req.Time) {
		t.Fatalf("timeline after Create = %+v, %v; want the request event", evs, err)
	}
	if got.Bad.Artifact != "app:v2" || got.Status != state.AwaitingConfirm || got.CreatedAt.IsZero() {
		t.Fatalf("round trip lost data: %+v", got)
	}
	active, err := s.Active(ctx)
	if err != nil || len(active) != 1 || active[0].ID != id {
		t.Fatalf("Active = %v, %v", active, err)
	}
	if _, err := s.Advance(ctx, id, state.Move{From: []state.Status{state.AwaitingConfirm}, To: state.Cancelled}); err != nil {
		t.Fatal(err)
	}
	active, _ = s.Active(ctx)
	if len(active) != 0 {
		t.Fatalf("cancelled incident still active: %v", active)
	}
	recent, err := s.Recent(ctx, "myapp", 5)
	if err != nil || len(recent) != 1 {
		t.Fatalf("Recent = %v, %v", recent, err)
	}
	if _, err := s.Get(ctx, "RB-999999"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("missing incident err = %v", err)
	}
}

func TestTransitionActsOnce(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	in := &state.Incident{ID: "RB-1", Service: "myapp", Status: state.AwaitingConfirm}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, err := s.Advance(ctx, "RB-1", state.Move{From: []state.Status{state.AwaitingConfirm}, To: state.Stopping, Owner: "r1", Lease: time.Minute, Mutate: func(in *state.Incident) { in.DecidedBy = "U2" }})
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, state.ErrStale):
			default:
				t.Errorf("Transition: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent transitions won, want exactly 1", wins.Load())
	}
	got, _ := s.Get(ctx, "RB-1")
	if got.Status != state.Stopping || got.DecidedBy != "U2" {
		t.Fatalf("after transition: %+v", got)
	}
}

func TestTimeline(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	steps := []string{"assess", "confirm", "rollback"}
	for i, st := range steps {
		if err := s.Append(ctx, "RB-7", state.Event{Actor: "U1", Step: st, Detail: "detail | " + st, Time: time.Date(2026, 1, 1, 10, i, 0, 0, time.UTC)}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.Timeline(ctx, "RB-7")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].Step != "assess" || evs[2].Step != "rollback" || evs[1].Time.Minute() != 1 {
		t.Fatalf("timeline = %+v", evs)
	}
	md := state.Markdown(&state.Incident{ID: "RB-7", Service: "myapp", RequestedBy: "U1", Status: state.Completed}, evs,
		func(a string) string { return "@" + a })
	for _, want := range []string{"# Incident timeline RB-7", "| 2026-01-01 10:02:00 | @U1 | rollback | detail \\| rollback |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestLock(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	l, err := s.AcquireLock(ctx, "myapp", "RB-1", "U1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	held, err := s.AcquireLock(ctx, "myapp", "RB-2", "U2", time.Minute)
	if !errors.Is(err, state.ErrLocked) || held.Holder != "U1" || held.Incident != "RB-1" {
		t.Fatalf("second acquire = %+v, %v; want ErrLocked held by U1/RB-1", held, err)
	}
	if err := s.ReleaseLock(ctx, "myapp", "not-the-token"); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.LockHolder(ctx, "myapp"); h == nil {
		t.Fatal("release with a wrong token freed the lock")
	}
	if err := s.RefreshLock(ctx, "myapp", l.Token, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLock(ctx, "myapp", l.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireLock(ctx, "myapp", "RB-2", "U2", 50*time.Millisecond); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	// expiry frees the lock
	wait.For(t, 5*time.Second, "the lock to expire", func() (bool, error) {
		_, err := s.AcquireLock(ctx, "myapp", "RB-3", "U3", time.Minute)
		return err == nil, err
	})
}

func TestOnceAndApprovals(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	first, _ := s.Once(ctx, "env:1", time.Minute)
	second, _ := s.Once(ctx, "env:1", time.Minute)
	if !first || second {
		t.Fatalf("Once = %v then %v; want true then false", first, second)
	}
	now := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	s.SetClock(func() time.Time { return now })
	got, err := s.Approve(ctx, "RB-1", "db", "U1", 15*time.Minute)
	if err != nil || len(got) != 1 {
		t.Fatalf("Approve = %v, %v", got, err)
	}
	now = now.Add(10 * time.Minute)
	got, _ = s.Approve(ctx, "RB-1", "db", "U2", 15*time.Minute)
	if len(got) != 2 {
		t.Fatalf("two fresh approvals, got %v", got)
	}
	now = now.Add(6 * time.Minute) // U1's approval is 16 min old now
	got, _ = s.Approvals(ctx, "RB-1", "db")
	if len(got) != 1 || got[0] != "U2" {
		t.Fatalf("expired approval still counted: %v", got)
	}
	if err := s.MarkDoNotDeploy(ctx, "myapp", state.Mark{Artifact: "app:v2", By: "U2", Incident: "RB-1"}); err != nil {
		t.Fatal(err)
	}
	marks, err := s.Marks(ctx, "myapp")
	if err != nil || marks["app:v2"].By != "U2" {
		t.Fatalf("Marks = %v, %v", marks, err)
	}
}

func TestDeployedRecord(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	for i, a := range []string{"app:v1", "app:v2", "app:v1", "app:v3"} {
		if err := s.RecordDeployed(ctx, "web", platforms.Revision{ID: a, Artifact: a, CreatedAt: t0.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Deployed(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	var arts []string
	for _, r := range got {
		arts = append(arts, r.Artifact)
	}
	if strings.Join(arts, ",") != "app:v3,app:v1,app:v2" {
		t.Fatalf("Deployed = %v, want newest first, distinct", arts)
	}
}

func TestSchemaRecords(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	for i, v := range [][]string{{"1"}, {"1", "2"}, {"1", "2", "3"}} {
		if err := s.RecordSchema(ctx, "web", state.SchemaRecord{At: t0.Add(time.Duration(i) * time.Hour), Artifact: "app:v" + v[len(v)-1], Tool: "golang-migrate", Versions: v}); err != nil {
			t.Fatal(err)
		}
	}
	rec, ok, err := s.SchemaBefore(ctx, "web", t0.Add(90*time.Minute))
	if err != nil || !ok || strings.Join(rec.Versions, ",") != "1,2" || rec.Artifact != "app:v2" {
		t.Fatalf("SchemaBefore = %+v, %v, %v; want the 11:00 record", rec, ok, err)
	}
	if _, ok, _ := s.SchemaBefore(ctx, "web", t0); ok {
		t.Fatal("a record at exactly t counted as before t")
	}
}

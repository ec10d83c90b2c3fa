package rds

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/testkit/awstest"
	"rollbot/testkit/platformtest"
)

var switchAt = time.Date(2026, 6, 26, 10, 5, 0, 0, time.UTC)

// restored runs the incident's restore to its end, as the database step does.
func restored(t *testing.T, e *env, incident string) *Adapter {
	t.Helper()
	a := e.adapter(t)
	ctx := context.Background()
	p, err := a.Plan(ctx, Request{Before: deployAt, Incident: incident})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Restore(ctx, p, false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Wait(ctx, p, nil); err != nil {
		t.Fatal(err)
	}
	return a
}

// recorder collects the swap's steps.
type recorder struct{ before, notes []string }

func (r *recorder) steps() SwapSteps {
	return SwapSteps{
		Before: func(_ context.Context, what string) error { r.before = append(r.before, what); return nil },
		Note:   func(l string) { r.notes = append(r.notes, l) },
	}
}

func renames(f *awstest.Server) []string {
	var out []string
	for _, r := range f.Requests("ModifyDBInstance") {
		if r.Failed == "" {
			out = append(out, r.Params.Get("DBInstanceIdentifier")+"->"+r.Params.Get("NewDBInstanceIdentifier")+" apply="+r.Params.Get("ApplyImmediately"))
		}
	}
	return out
}

func TestSwapRenamesBothAndKeepsTheEndpoint(t *testing.T) {
	e := setup(t)
	a := restored(t, e, "RB-7")
	orig, _ := e.fake.DBInstance("myapp-db")
	s := a.SwapFor("RB-7", switchAt)
	if s.Aside != "myapp-db-pre-rollback-202606261005" || s.Restored != "myapp-db-rb-7" || s.Source != "myapp-db" {
		t.Fatalf("swap = %+v", s)
	}
	var rec recorder
	got, err := a.Run(context.Background(), s, rec.steps())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []string{"myapp-db->myapp-db-pre-rollback-202606261005 apply=true", "myapp-db-rb-7->myapp-db apply=true"}
	if r := renames(e.fake); strings.Join(r, ",") != strings.Join(want, ",") {
		t.Errorf("renames = %q, want %q", r, want)
	}
	if len(rec.before) != 2 || !strings.Contains(rec.before[0], "renaming myapp-db (the original) to myapp-db-pre-rollback-202606261005") ||
		!strings.Contains(rec.before[1], "renaming myapp-db-rb-7 (the restored data) to myapp-db") {
		t.Errorf("steps before the writes = %q", rec.before)
	}
	// Each rename was waited for: its "renaming" state was seen.
	notes := strings.Join(rec.notes, "\n")
	for _, w := range []string{"myapp-db: renaming", "myapp-db-pre-rollback-202606261005: available", "myapp-db-rb-7: renaming", "myapp-db: available"} {
		if !strings.Contains(notes, w) {
			t.Errorf("notes lack %q:\n%s", w, notes)
		}
	}
	now, ok := e.fake.DBInstance("myapp-db")
	if !ok || now.Tags[TagIncident] != "RB-7" || now.Status != "available" || now.Address != orig.Address {
		t.Errorf("myapp-db after the swap: %+v (want the restored instance at the original address %s)", now, orig.Address)
	}
	aside, ok := e.fake.DBInstance("myapp-db-pre-rollback-202606261005")
	if !ok || aside.Tags[TagIncident] != "" || aside.Status != "available" {
		t.Errorf("the original kept aside: %+v (found %v)", aside, ok)
	}
	if _, ok := e.fake.DBInstance("myapp-db-rb-7"); ok {
		t.Error("myapp-db-rb-7 still exists under its restore name")
	}
	if !strings.Contains(got, "myapp-db now holds the restored data (endpoint "+orig.Address+":5432, unchanged for the app); the original instance is kept as myapp-db-pre-rollback-202606261005") {
		t.Errorf("result = %q", got)
	}

	// Run again (a replica resuming after the swap finished): nothing renamed.
	if _, err := a.Run(context.Background(), s, SwapSteps{}); err != nil {
		t.Fatalf("second Run: %v", err)
	}
	if n := len(renames(e.fake)); n != 2 {
		t.Errorf("%d renames after a second Run, want 2", n)
	}
}

// A replica stopped right after the first rename: the next attempt sees
// the original already aside and only renames the restored instance.
func TestSwapResumesBetweenTheRenames(t *testing.T) {
	e := setup(t)
	a := restored(t, e, "RB-7")
	s := a.SwapFor("RB-7", switchAt)
	if err := a.rename(context.Background(), s.Source, s.Aside); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	if _, err := a.Run(context.Background(), s, rec.steps()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := "myapp-db->myapp-db-pre-rollback-202606261005 apply=true,myapp-db-rb-7->myapp-db apply=true"
	if got := strings.Join(renames(e.fake), ","); got != want {
		t.Errorf("renames = %s, want %s (the original renamed once)", got, want)
	}
	if len(rec.before) != 1 {
		t.Errorf("writes announced by the resumed run: %q, want only the second rename", rec.before)
	}
}

func TestSwapFailures(t *testing.T) {
	t.Run("second rename fails", func(t *testing.T) {
		e := setup(t)
		a := restored(t, e, "RB-7")
		e.fake.After("ModifyDBInstance", func() {
			e.fake.Inject(awstest.Fault{Action: "ModifyDBInstance", Code: "InvalidDBInstanceState", Times: 1})
		})
		_, err := a.Run(context.Background(), a.SwapFor("RB-7", switchAt), SwapSteps{})
		msg := platformtest.UserMessage(t, err)
		for _, w := range []string{
			"myapp-db was renamed to myapp-db-pre-rollback-202606261005, but renaming myapp-db-rb-7 to myapp-db failed",
			"both instances are kept under those names",
			"aws rds modify-db-instance --db-instance-identifier myapp-db-rb-7 --new-db-instance-identifier myapp-db --apply-immediately",
			"rename myapp-db-pre-rollback-202606261005 back to myapp-db",
		} {
			if !strings.Contains(msg, w) {
				t.Errorf("message lacks %q:\n%s", w, msg)
			}
		}
		for _, id := range []string{"myapp-db-pre-rollback-202606261005", "myapp-db-rb-7"} {
			if in, ok := e.fake.DBInstance(id); !ok || in.Status != "available" {
				t.Errorf("%s: %+v (found %v); both instances must stay named", id, in, ok)
			}
		}
	})
	t.Run("no restored instance", func(t *testing.T) {
		e := setup(t)
		a := e.adapter(t)
		_, err := a.Run(context.Background(), a.SwapFor("RB-404", switchAt), SwapSteps{})
		if !errors.Is(err, platforms.ErrNotFound) || !strings.Contains(platformtest.UserMessage(t, err), "the restored instance myapp-db-rb-404 does not exist, so myapp-db was not renamed: nothing was switched") {
			t.Errorf("Run = %v", err)
		}
		if n := len(e.fake.Requests("ModifyDBInstance")); n != 0 {
			t.Errorf("%d renames", n)
		}
	})
	t.Run("aside name taken", func(t *testing.T) {
		e := setup(t)
		a := restored(t, e, "RB-7")
		e.fake.AddDBInstance(awstest.DBInstance{ID: "myapp-db-pre-rollback-202606261005", Engine: "postgres", Address: "x.y", Port: 5432})
		_, err := a.Run(context.Background(), a.SwapFor("RB-7", switchAt), SwapSteps{})
		if !errors.Is(err, platforms.ErrConflict) || !strings.Contains(platformtest.UserMessage(t, err), "already exists, so myapp-db was not renamed") {
			t.Errorf("Run = %v", err)
		}
		if n := len(e.fake.Requests("ModifyDBInstance")); n != 0 {
			t.Errorf("%d renames", n)
		}
	})
	t.Run("the caller says stop", func(t *testing.T) {
		e := setup(t)
		a := restored(t, e, "RB-7")
		stop := errors.New("taken over")
		_, err := a.Run(context.Background(), a.SwapFor("RB-7", switchAt), SwapSteps{Before: func(context.Context, string) error { return stop }})
		if !errors.Is(err, stop) || len(e.fake.Requests("ModifyDBInstance")) != 0 {
			t.Errorf("Run = %v, %d renames", err, len(e.fake.Requests("ModifyDBInstance")))
		}
	})
}

func TestAsideName(t *testing.T) {
	long := strings.Repeat("a", 60)
	if got := AsideName(long, switchAt); len(got) > 63 || !strings.HasSuffix(got, "-pre-rollback-202606261005") {
		t.Errorf("AsideName = %q (%d)", got, len(got))
	}
}

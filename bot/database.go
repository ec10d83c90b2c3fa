package bot

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/migrations"
	"rollbot/platforms/rds"
)

// database joins the migration check and down runner (platforms/migrations)
// with the optional RDS restore (platforms/rds) into handlers.Database.
type database struct {
	mig     *migrations.Adapter
	down    migrations.DownConfig
	restore *rds.Adapter // nil: no restore configured
}

func toHandlers(rep migrations.Report) handlers.MigrationReport {
	out := handlers.MigrationReport{Tool: rep.Tool, Source: rep.Table, Notes: rep.Notes}
	for _, m := range rep.Ran {
		why := m.DestructiveWhy
		if !m.Reversible && why == "" {
			why = m.ReversibleWhy
		}
		out.Ran = append(out.Ran, handlers.Migration{ID: m.ID, Description: m.Description, AppliedAt: m.AppliedAt,
			Reversible: m.Reversible, Destructive: m.Destructive, Why: why})
	}
	return out
}

func (d *database) Detect(ctx context.Context, since time.Time) (handlers.MigrationReport, error) {
	rep, err := d.mig.Detect(ctx, since, nil)
	if err != nil {
		return handlers.MigrationReport{}, err
	}
	if dec := rep.Decide(); dec.Action == migrations.ActionManual {
		// A dirty table or an uncertain answer: never guess.
		return handlers.MigrationReport{}, platforms.Userf(nil, "%s", dec.Reason)
	}
	return toHandlers(rep), nil
}

func (d *database) DownPlan(r handlers.MigrationReport) string {
	return fmt.Sprintf("run `%s` against %s, then check that the migration table is back before %s", strings.Join(d.down.Command, " "), d.mig.Target(), ids(r))
}

func ids(r handlers.MigrationReport) string {
	var s []string
	for _, m := range r.Ran {
		s = append(s, m.ID)
	}
	return strings.Join(s, ", ")
}

func (d *database) RollBack(ctx context.Context, since time.Time, bad platforms.Revision, out io.Writer) (string, error) {
	rep, err := d.mig.Detect(ctx, since, nil)
	if err != nil {
		return "", err
	}
	if err := d.mig.RunDown(ctx, rep, out); err != nil {
		return "", err
	}
	if err := d.mig.Verify(ctx, rep.Target); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s is back at %s (checked in %s)", d.mig.Target(), rep.Target, rep.Table), nil
}

func (d *database) RestorePlan(before time.Time) string {
	if d.restore == nil {
		return "no RDS restore is configured for this service: restore the pre-deploy snapshot by hand (runbook §4), then approve"
	}
	return fmt.Sprintf("restore %s to its state before %s into a new instance (newest snapshot before the deploy, or point in time), wait until it is available, then switch the app's endpoint", d.restore.Target(), before.UTC().Format("2006-01-02 15:04 UTC"))
}

func (d *database) Restore(ctx context.Context, before time.Time, progress func(string)) (string, error) {
	if d.restore == nil {
		return "", platforms.Userf(nil, "no RDS restore is configured: restore the database by hand")
	}
	plan, err := d.restore.Plan(ctx, rds.Request{Before: before})
	if err != nil {
		return "", err
	}
	for _, l := range plan.Lines() {
		progress(l)
	}
	if _, err := d.restore.Restore(ctx, plan, false); err != nil {
		return "", err
	}
	r, err := d.restore.Wait(ctx, plan, func(p platforms.Progress) { progress(p.Message) })
	if err != nil {
		return "", err
	}
	return r.Summary(), nil
}

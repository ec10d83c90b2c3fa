package rds

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsrds "github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"

	"rollbot/platforms"
)

// Swap is the documented instance-rename endpoint switch after a restore:
// the original instance is renamed out of the way (Source → Aside), then
// the restored one takes the original's identifier (Restored → Source).
// An RDS endpoint's DNS name follows the identifier, so the app, still
// configured with the original endpoint, reaches the restored data once
// its connections reopen; nothing in the app's configuration changes.
// Neither instance is deleted: the original stays as Aside, with the
// writes the restore lost.
type Swap struct {
	Source   string `json:"source"`   // the app's instance identifier
	Restored string `json:"restored"` // the incident's restored instance
	Aside    string `json:"aside"`    // <source>-pre-rollback-<yyyymmddhhmm>
	Incident string `json:"incident"`
}

// SwapFor is the swap of the incident's restore (IncidentTarget). at names
// the renamed original and must be the same on every attempt of the
// incident (the switch step's start).
func (a *Adapter) SwapFor(incident string, at time.Time) Swap {
	return Swap{Source: a.cfg.Instance, Restored: IncidentTarget(a.cfg.Instance, incident),
		Aside: AsideName(a.cfg.Instance, at), Incident: incident}
}

// AsideName is <instance>-pre-rollback-<yyyymmddhhmm> (UTC), the
// instance shortened to fit RDS's 63 characters.
func AsideName(instance string, at time.Time) string {
	suffix := "-pre-rollback-" + at.UTC().Format("200601021504")
	base := strings.ToLower(instance)
	if len(base)+len(suffix) > 63 {
		base = strings.TrimRight(base[:63-len(suffix)], "-")
	}
	return base + suffix
}

// SwapSteps are the caller's hooks: Before is called before each rename
// with what it is about to do (the caller records it and checks it may
// still act; an error stops the swap before the call); Note reports each
// state seen while waiting.
type SwapSteps struct {
	Before func(ctx context.Context, what string) error
	Note   func(line string)
}

// Lines describes the swap for the approvers.
func (s Swap) Lines() []string {
	return []string{
		fmt.Sprintf("rename %s (the original) to %s and wait until it is available", s.Source, s.Aside),
		fmt.Sprintf("rename %s (the restored data) to %s and wait until it is available: the app's endpoint keeps its DNS name and reaches the restored data", s.Restored, s.Source),
	}
}

// restoredFor reports whether in is the incident's restored instance
// (its tags), whatever its name is now.
func (s Swap) restoredFor(in *rdstypes.DBInstance) bool {
	tags := tagsOf(in)
	return tags[TagIncident] == s.Incident && tags[TagRestoredFrom] == s.Source
}

// Run performs the swap, re-entrant: every round reads the three names
// first and does only what is left, so an attempt that resumes one that
// stopped (a replica that died between the two renames) never renames
// anything twice:
//   - Source is the restored instance (its tags): done once it is available;
//   - Source is the original: rename it to Aside (Aside must not exist);
//   - Source is gone and Aside is there: rename Restored to Source;
//   - anything renaming: wait.
//
// A failure stops with a user error that names both instances as they are
// now and the next step; nothing is ever deleted.
func (a *Adapter) Run(ctx context.Context, s Swap, steps SwapSteps) (string, error) {
	if steps.Before == nil {
		steps.Before = func(context.Context, string) error { return nil }
	}
	if steps.Note == nil {
		steps.Note = func(string) {}
	}
	log := a.log.With("op", "swap", "incident", s.Incident, "restored", s.Restored, "aside", s.Aside)
	ctx, cancel := context.WithTimeout(ctx, a.cfg.WaitTimeout)
	defer cancel()
	last := map[string]string{}
	note := func(id string, in *rdstypes.DBInstance) {
		st := "absent"
		if in != nil {
			st = aws.ToString(in.DBInstanceStatus)
		}
		if last[id] != st {
			if _, seen := last[id]; seen || in != nil {
				steps.Note(fmt.Sprintf("%s: %s", id, st))
			}
			last[id] = st
		}
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", platforms.Userf(ctx.Err(), "stopped waiting for the instance renames (%s); %s. Check the RDS console, then finish the switch by hand", stateLine(last, s), s.nextStep(last))
		case <-timer.C:
		}
		timer.Reset(a.cfg.PollInterval)
		src, err := a.describe(ctx, s.Source)
		if err != nil {
			return "", a.swapErr(ctx, err, s, last)
		}
		rest, err := a.describe(ctx, s.Restored)
		if err != nil {
			return "", a.swapErr(ctx, err, s, last)
		}
		aside, err := a.describe(ctx, s.Aside)
		if err != nil {
			return "", a.swapErr(ctx, err, s, last)
		}
		note(s.Source, src)
		note(s.Restored, rest)
		note(s.Aside, aside)
		switch {
		case src != nil && s.restoredFor(src):
			if status(src) != "available" {
				continue
			}
			ep := endpointOf(src)
			log.Info("swap done", "endpoint", ep)
			what := fmt.Sprintf("%s now holds the restored data (endpoint %s, unchanged for the app); the original instance is kept as %s", s.Source, ep, s.Aside)
			if aside == nil {
				what = fmt.Sprintf("%s now holds the restored data (endpoint %s, unchanged for the app)", s.Source, ep)
			}
			return what, nil
		case src != nil && status(src) == "renaming":
			continue // Source → Aside under way
		case src != nil:
			switch {
			case rest == nil:
				return "", platforms.Userf(platforms.ErrNotFound, "the restored instance %s does not exist, so %s was not renamed: nothing was switched. Check the RDS console for the restore", s.Restored, s.Source)
			case aside != nil:
				return "", platforms.Userf(platforms.ErrConflict, "an RDS instance named %s already exists, so %s was not renamed: nothing was switched. Rename or remove %s, or switch the endpoint by hand", s.Aside, s.Source, s.Aside)
			case status(rest) != "available":
				return "", platforms.Userf(nil, "the restored instance %s is %q, not available, so %s was not renamed: nothing was switched. Check the RDS console", s.Restored, status(rest), s.Source)
			case status(src) != "available":
				return "", platforms.Userf(nil, "%s is %q, not available, so it was not renamed: nothing was switched. Wait until it is available, then end this rollback and switch by hand, or retry", s.Source, status(src))
			}
			if err := steps.Before(ctx, fmt.Sprintf("renaming %s (the original) to %s", s.Source, s.Aside)); err != nil {
				return "", err
			}
			if err := a.rename(ctx, s.Source, s.Aside); err != nil {
				return "", platforms.Userf(err, "renaming %s to %s failed (%s): nothing was switched; %s is still the original and %s holds the restored data. Switch the endpoint by hand, or end this rollback and retry",
					s.Source, s.Aside, a.userText(ctx, "swap: rename the original", err), s.Source, s.Restored)
			}
			log.Info("renamed the original", "from", s.Source, "to", s.Aside)
		case aside == nil:
			if rest != nil && status(rest) == "renaming" {
				continue // Restored → Source under way; Source is not visible yet
			}
			return "", platforms.Userf(platforms.ErrNotFound, "neither %s nor %s exists (%s). Check the RDS console: %s", s.Source, s.Aside, stateLine(last, s), s.nextStep(last))
		case status(aside) != "available":
			continue // Source → Aside finishing
		case rest == nil:
			return "", platforms.Userf(platforms.ErrNotFound, "%s was renamed to %s, but the restored instance %s is gone, so nothing answers at %s now. Rename %s back to %s (aws rds modify-db-instance --db-instance-identifier %s --new-db-instance-identifier %s --apply-immediately)",
				s.Source, s.Aside, s.Restored, s.Source, s.Aside, s.Source, s.Aside, s.Source)
		case status(rest) == "renaming":
			continue
		default:
			if err := steps.Before(ctx, fmt.Sprintf("renaming %s (the restored data) to %s", s.Restored, s.Source)); err != nil {
				return "", err
			}
			if err := a.rename(ctx, s.Restored, s.Source); err != nil {
				return "", platforms.Userf(err, "%s was renamed to %s, but renaming %s to %s failed (%s): both instances are kept under those names and nothing answers at %s now. Next: rename %s to %s (aws rds modify-db-instance --db-instance-identifier %s --new-db-instance-identifier %s --apply-immediately), or rename %s back to %s to return to the original data",
					s.Source, s.Aside, s.Restored, s.Source, a.userText(ctx, "swap: rename the restored instance", err), s.Source, s.Restored, s.Source, s.Restored, s.Source, s.Aside, s.Source)
			}
			log.Info("renamed the restored instance", "from", s.Restored, "to", s.Source)
		}
	}
}

func (a *Adapter) rename(ctx context.Context, from, to string) error {
	_, err := a.api.ModifyDBInstance(ctx, &awsrds.ModifyDBInstanceInput{
		DBInstanceIdentifier:    aws.String(from),
		NewDBInstanceIdentifier: aws.String(to),
		ApplyImmediately:        aws.Bool(true),
	})
	return a.awsErr(err, "ModifyDBInstance")
}

func (a *Adapter) swapErr(ctx context.Context, err error, s Swap, last map[string]string) error {
	return platforms.Userf(err, "reading the instances failed (%s) while switching: %s; %s", a.userText(ctx, "swap: read the instances", err), stateLine(last, s), s.nextStep(last))
}

// userText is err's user message, else a reference to the log line that
// holds it.
func (a *Adapter) userText(ctx context.Context, op string, err error) string {
	if msg, ok := platforms.UserMessage(err); ok {
		return msg
	}
	return platforms.SeeLog(ctx, a.log, op, err, "op", "swap")
}

func status(in *rdstypes.DBInstance) string { return aws.ToString(in.DBInstanceStatus) }

func endpointOf(in *rdstypes.DBInstance) string {
	if in.Endpoint == nil {
		return ""
	}
	return fmt.Sprintf("%s:%d", aws.ToString(in.Endpoint.Address), aws.ToInt32(in.Endpoint.Port))
}

// stateLine is the last seen state of the three names.
func stateLine(last map[string]string, s Swap) string {
	var parts []string
	for _, id := range []string{s.Source, s.Restored, s.Aside} {
		if st, ok := last[id]; ok {
			parts = append(parts, id+" "+st)
		}
	}
	if len(parts) == 0 {
		return "no instance state read yet"
	}
	return "last seen: " + strings.Join(parts, ", ")
}

// nextStep says what to do by hand from the last seen state.
func (s Swap) nextStep(last map[string]string) string {
	if last[s.Source] == "absent" && last[s.Aside] != "" && last[s.Aside] != "absent" {
		return fmt.Sprintf("the original is now %s; rename %s to %s to finish, or %s back to %s to undo", s.Aside, s.Restored, s.Source, s.Aside, s.Source)
	}
	return fmt.Sprintf("the original should still be %s and the restored data %s", s.Source, s.Restored)
}

// RestoredEndpoint is "host:port" of the incident's restored instance,
// which must be available.
func (a *Adapter) RestoredEndpoint(ctx context.Context, incident string) (string, error) {
	id := IncidentTarget(a.cfg.Instance, incident)
	in, err := a.describe(ctx, id)
	if err != nil {
		return "", err
	}
	if in == nil {
		return "", platforms.Userf(platforms.ErrNotFound, "the restored instance %s does not exist: nothing was switched. Check the RDS console for the restore", id)
	}
	if st := status(in); st != "available" || endpointOf(in) == "" {
		return "", platforms.Userf(nil, "the restored instance %s is %q, not available: nothing was switched. Check the RDS console", id, st)
	}
	return endpointOf(in), nil
}

// Instance is the configured source instance identifier.
func (a *Adapter) Instance() string { return a.cfg.Instance }

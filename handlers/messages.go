package handlers

import (
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"rollbot/platforms"
	"rollbot/state"
)

// All of rollbot's Block Kit lives here, built from domain values and
// checked by golden tests (testdata/golden). Limits kept: 50 blocks per
// message, 3000 characters per section, one table per message.

const (
	maxSection = 3000
	maxCell    = 300
)

func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func md(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, clip(s, maxSection), false, false)
}

func plain(s string, n int) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, clip(s, n), true, false)
}

func section(id, text string) *slack.SectionBlock {
	return slack.NewSectionBlock(md(text), nil, nil, slack.SectionBlockOptionBlockID(id))
}

func contextBlock(id string, texts ...string) *slack.ContextBlock {
	var els []slack.MixedElement
	for _, t := range texts {
		if t != "" {
			els = append(els, md(t))
		}
	}
	return slack.NewContextBlock(id, els...)
}

func header(id, text string) *slack.HeaderBlock {
	return slack.NewHeaderBlock(plain(text, 150), slack.HeaderBlockOptionBlockID(id))
}

func button(actionID, value, text string, style slack.Style, confirm *slack.ConfirmationBlockObject) *slack.ButtonBlockElement {
	b := slack.NewButtonBlockElement(actionID, value, plain(text, 75))
	b.Style = style
	b.Confirm = confirm
	return b
}

func confirmDialog(title, text, yes string) *slack.ConfirmationBlockObject {
	c := slack.NewConfirmationBlockObject(plain(title, 100), md(clip(text, 300)), plain(yes, 30), plain("Not now", 30))
	c.WithStyle(slack.StyleDanger)
	return c
}

func simple(text string) Msg {
	return Msg{Text: text, Blocks: []slack.Block{section("msg", text)}}
}

func errorMsg(text string) Msg { return simple(":warning: " + text) }

func usageMsg(problem string) Msg {
	return Msg{Text: problem, Blocks: []slack.Block{
		section("problem", ":warning: "+problem),
		contextBlock("usage", "Type `/rollback help` for every command."),
	}}
}

func helpMsg(services []string) Msg {
	text := strings.Join([]string{
		"*`/rollback <service>`* assess the service, then roll it back to its last known good version after you confirm",
		"*`/rollback <service> --to <revision|tag>`* roll back to a specific revision or image tag",
		"*`/rollback <service> --dry-run`* show exactly what would change, change nothing",
		"*`/rollback <service> --reason \"…\"`* record why, on the incident timeline",
		"*`/rollback status [service]`* open rollbacks, or one service's state",
		"*`/rollback history <service>`* revisions, DO_NOT_DEPLOY marks and past rollbacks",
		"*`/rollback timeline [RB-n] [--page N] [--markdown]`* an incident's timeline (page by page when long), or its Markdown export",
		"*`/rollback drill <service> [--env <environment>]`* practise a rollback on an environment with drills enabled",
		"*`/rollback drills <service>`* earlier drills with their step times against the runbook's budgets",
		"*`/rollback unlock <service>`* lift the deploy lock a rollback left (approvers)",
		"*`/rollback allow <service> <version>`* let the cluster run an image refused after a rollback (approvers)",
		"*`/rollback resume-sync <service>`* turn the Argo CD auto-sync / Flux reconciliation a rollback paused back on, exactly as it was",
	}, "\n")
	return Msg{Text: "rollbot commands", Blocks: []slack.Block{
		header("title", "rollbot: deployment rollbacks from the incident channel"),
		section("commands", text),
		contextBlock("services", "Services in this channel: "+codeList(services)+". A service in several environments: add `--env <environment>` (or type `name@environment`)."),
	}}
}

func codeList(xs []string) string {
	if len(xs) == 0 {
		return "none configured"
	}
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = "`" + x + "`"
	}
	return strings.Join(out, ", ")
}

// channelList renders channel ids as links and names as #name.
func channelList(channels []string) string {
	var names []string
	for _, c := range channels {
		if strings.HasPrefix(c, "C") || strings.HasPrefix(c, "G") {
			names = append(names, "<#"+c+">")
		} else {
			names = append(names, "#"+strings.TrimPrefix(c, "#"))
		}
	}
	return strings.Join(names, ", ")
}

func notIncidentChannelMsg(channels []string) Msg {
	return errorMsg("rollbot only acts in incident channels: " + channelList(channels) + ". Run the command there, so the team sees it.")
}

// ambiguousMsg asks which environment a name means; rollbot never guesses.
func ambiguousMsg(name, text string, envs []string) Msg {
	t := fmt.Sprintf("`%s` runs in %d environments here: %s. Which one? Nothing was done.", name, len(envs), codeList(envs))
	var cmds []string
	for _, env := range envs {
		cmds = append(cmds, fmt.Sprintf("• %s: `/rollback %s`", env, withEnv(text, env)))
	}
	return Msg{Text: t, Blocks: []slack.Block{
		section("problem", ":question: "+t),
		section("choices", strings.Join(cmds, "\n")),
	}}
}

func unknownServiceMsg(name, suggestion string, all []string) Msg {
	t := fmt.Sprintf("rollbot does not know a service called `%s`.", name)
	if suggestion != "" {
		t += fmt.Sprintf(" Did you mean `%s`?", suggestion)
	}
	return Msg{Text: t, Blocks: []slack.Block{
		section("problem", ":warning: "+t),
		contextBlock("services", "Services in this channel: "+codeList(all)),
	}}
}

// suggest returns the known name closest to name, if it is close.
func suggest(name string, names []string) string {
	best, bestD := "", 1<<30
	for _, n := range names {
		if d := levenshtein(name, n); d < bestD {
			best, bestD = n, d
		}
	}
	if bestD <= max(2, len(name)/3) {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur := make([]int, len(rb)+1)
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(rb)]
}

func clock(t time.Time) string { return t.UTC().Format("15:04:05 UTC") }

func lockedMsg(service string, l *state.Lock, holder *state.Incident) Msg {
	t := fmt.Sprintf(":no_entry: A rollback of *%s* is already running: *%s*, started by %s at %s.", service, l.Incident, mention(l.Holder), clock(l.Since))
	if holder != nil {
		t += fmt.Sprintf(" Status: %s.", strings.ReplaceAll(string(holder.Status), "_", " "))
	}
	t += " Only one rollback per service runs at a time; follow it in its thread, or `/rollback status " + service + "`."
	return simple(t)
}

func incidentTitle(in *state.Incident) string {
	if in.Drill != nil {
		return fmt.Sprintf("Drill: rollback of %s (%s)", in.Service, in.ID)
	}
	if in.DryRun {
		return fmt.Sprintf("Dry run: rollback of %s (%s)", in.Service, in.ID)
	}
	return fmt.Sprintf("Rollback of %s (%s)", in.Service, in.ID)
}

func requestLine(in *state.Incident) string {
	t := fmt.Sprintf("Requested by %s · %s `%s`", mention(in.RequestedBy), in.Platform, in.PlatformTgt)
	if al := in.Alert; al != nil {
		t = fmt.Sprintf("Opened by the Alertmanager alert *%s*", al.Name)
		if !al.StartsAt.IsZero() {
			t += ", firing since " + clock(al.StartsAt)
		}
		if !al.ResolvedAt.IsZero() {
			t += fmt.Sprintf(" · :white_check_mark: *resolved at %s* (rolling back is still possible; decide whether it is still needed)", clock(al.ResolvedAt))
		}
		t += fmt.Sprintf(" · %s `%s`", in.Platform, in.PlatformTgt)
	}
	if in.Reason != "" {
		t += " · _" + in.Reason + "_"
	}
	return t
}

func assessingMsg(in *state.Incident) Msg {
	return Msg{Text: incidentTitle(in) + ": assessing", Blocks: []slack.Block{
		header("title", incidentTitle(in)),
		section("status", ":mag: Assessing the failure: error rate, p95 latency against baseline, restarts, readiness, migrations…"),
		contextBlock("request", requestLine(in)),
	}}
}

func verdictCell(v Verdict) string {
	switch v {
	case Pass:
		return "✅ pass"
	case Fail:
		return "❌ fail"
	}
	return "❔ inconclusive"
}

func relationCell(r Relation) string {
	switch r {
	case Likely:
		return "✅ likely this deploy"
	case Unlikely:
		return "⚠️ likely not: check infrastructure first"
	}
	return "❔ unknown"
}

func assessmentTable(in *state.Incident, a *Assessment) *slack.TableBlock {
	t := slack.NewTableBlock("checks")
	cell := func(s string) slack.TableCell { return slack.NewTableRawTextCell(clip(s, maxCell)) }
	t.AddRow(cell("Check"), cell("Measured"), cell("Threshold"), cell("Verdict"), cell("Source"))
	for _, c := range a.Checks {
		t.AddRow(cell(c.Name), cell(c.Measured), cell(c.Threshold), cell(verdictCell(c.Verdict)), cell(c.Source))
	}
	if r := a.Related; r != nil {
		t.AddRow(cell("Deployment-related?"), cell(r.Summary), cell("onset after the deploy; other services and nodes healthy"),
			cell(relationCell(r.Verdict)), cell(firstNonEmpty(strings.Join(r.Evidence, "; "), "-")))
	}
	// Only Kubernetes tells who owns the workload (Helm, Argo CD, Flux).
	if a.Snapshot != nil && (a.Snapshot.Owner != nil || in.Platform == "kubernetes") {
		t.AddRow(ownerRow(a.Snapshot.Owner, cell)...)
	}
	// Every column with sentences wraps: the verdict row's Measured and
	// Threshold, "⚠️ likely not: check infrastructure first", the sources.
	// An unwrapped column keeps each cell on one line (is_wrapped defaults
	// to false), which made the table wider than a 1400px window.
	t.WithColumnSettings(
		slack.ColumnSetting{Align: slack.ColumnAlignmentLeft},
		slack.ColumnSetting{Align: slack.ColumnAlignmentRight, IsWrapped: true},
		slack.ColumnSetting{Align: slack.ColumnAlignmentLeft, IsWrapped: true},
		slack.ColumnSetting{Align: slack.ColumnAlignmentLeft, IsWrapped: true},
		slack.ColumnSetting{Align: slack.ColumnAlignmentLeft, IsWrapped: true},
	)
	return t
}

// ownerRow is the assessment's "Owner" row: Helm, Argo CD, Flux or none.
func ownerRow(o *platforms.Owner, cell func(string) slack.TableCell) []slack.TableCell {
	if o == nil {
		return []slack.TableCell{cell("Owner"), cell("none"), cell("-"), cell("ℹ️ info"), cell("no Helm, Argo CD or Flux labels on the workload")}
	}
	verdict, source := "ℹ️ info", o.Plan
	switch {
	case o.Problem != "" && o.Kind == platforms.OwnerHelm:
		verdict, source = "⚠️ cannot roll back through Helm", o.Problem
	case o.Problem != "":
		verdict, source = "⚠️ cannot pause", o.Problem
	}
	return []slack.TableCell{cell("Owner"), cell(o.Detail), cell("-"), cell(verdict), cell(source)}
}

// ownerConfirmText says, in the confirmation, what will be done about the
// workload's owner.
func ownerConfirmText(in *state.Incident, a *Assessment) string {
	if a == nil || a.Snapshot == nil || a.Snapshot.Owner == nil {
		return ""
	}
	o := a.Snapshot.Owner
	switch {
	case o.Problem != "" && o.Kind == platforms.OwnerHelm:
		return " rollbot rolls back through " + o.Label() + ", but " + o.Problem + ". It will stop before changing anything."
	case o.Problem != "":
		return " " + o.Label() + " cannot be paused (" + o.Problem + "): rollbot will stop before changing anything and ask."
	case o.GitOps() && o.Reconciles:
		return " " + o.Plan + " Resume it with `/rollback resume-sync " + in.Service + "` once Git is changed."
	}
	return " " + o.Plan
}

func ownerDialogText(a *Assessment) string {
	if a == nil || a.Snapshot == nil || a.Snapshot.Owner == nil {
		return ""
	}
	o := a.Snapshot.Owner
	switch {
	case o.Problem != "" && o.Kind == platforms.OwnerHelm:
		return " rollbot cannot read " + o.Label() + ": it will stop before changing anything."
	case o.Problem != "":
		return " " + o.Label() + " cannot be paused: rollbot will ask before rolling back."
	case o.GitOps():
		return " Its owner, " + o.Label() + ", is paused first."
	}
	return " Helm rolls it back: " + o.Label() + " records the rollback as a new revision."
}

func versionsText(a *Assessment) string {
	var b strings.Builder
	if a.Bad.ID != "" {
		fmt.Fprintf(&b, "*Bad version:* %s", a.Bad.Label())
		if a.Snapshot != nil && !a.Snapshot.DeployedAt.IsZero() {
			fmt.Fprintf(&b, ", deployed %s", a.Snapshot.DeployedAt.UTC().Format("2006-01-02 15:04 UTC"))
		}
		b.WriteString("\n")
	}
	switch {
	case a.HasGood && a.AlreadyAt:
		fmt.Fprintf(&b, "*Target:* %s is already running: the rollback will be skipped", a.Good.Label())
	case a.HasGood:
		fmt.Fprintf(&b, "*Last known good:* %s (%s)", a.Good.Label(), a.GoodWhy)
	default:
		fmt.Fprintf(&b, ":no_entry: *No rollback target:* %s", a.GoodWhy)
	}
	return b.String()
}

func migrationsText(in *state.Incident, a *Assessment) string {
	switch {
	case a.MigErr != "":
		return ":warning: *Database migrations:* could not check (" + a.MigErr + "). The database step comes first: a DB approver checks the migration table by hand before the app is rolled back." + appliedLines(a)
	case a.Migrations == nil && len(a.MigLogApplied) > 0:
		return ":octagonal_sign: *Decision gate: the migration container's log shows migrations applied* (no database is configured for rollbot to check). The database step comes first: an approver checks the database by hand before the app is rolled back." + appliedLines(a)
	case a.Migrations == nil && a.MigLog != "":
		return ":warning: *Database migrations:* no database is configured for rollbot to check, but the migration container logged:\n```" + clip(a.MigLog, 1200) + "```"
	case a.Migrations == nil:
		return "*Database migrations:* no database configured for this service."
	case len(a.Migrations.Ran) == 0:
		return fmt.Sprintf("*Database migrations:* none ran since the deploy (%s, %s).", a.Migrations.Tool, a.Migrations.Source)
	}
	var b strings.Builder
	fmt.Fprintf(&b, ":octagonal_sign: *Decision gate: %d migration(s) ran since the deploy* (%s). The database step comes first; the app rollback waits for it.\n", len(a.Migrations.Ran), a.Migrations.Tool)
	for i, m := range a.Migrations.Ran {
		if i == 10 {
			fmt.Fprintf(&b, "…and %d more\n", len(a.Migrations.Ran)-10)
			break
		}
		kind := "reversible"
		if !m.Reversible {
			kind = "*not reversible*"
		}
		if m.Destructive {
			kind += ", *destructive*"
		}
		fmt.Fprintf(&b, "• `%s` %s: %s", m.ID, m.Description, kind)
		if m.Why != "" {
			fmt.Fprintf(&b, " (%s)", m.Why)
		}
		switch m.Compat {
		case platforms.CompatExpand:
			b.WriteString("; schema: expand-only")
		case platforms.CompatContract:
			fmt.Fprintf(&b, "; schema: *contracting*: %s", clip(m.CompatWhy, 400))
		case platforms.CompatUnknown:
			fmt.Fprintf(&b, "; schema: cannot tell (%s)", clip(m.CompatWhy, 300))
		}
		b.WriteString("\n")
	}
	classified := false
	for _, m := range a.Migrations.Ran {
		classified = classified || m.Compat != ""
	}
	switch {
	case !classified:
	case a.Migrations.ExpandOnly():
		b.WriteString(":white_check_mark: *Schema compatibility: expand-only.* Recommendation: roll back the app only; the old version runs on the new schema. The database step is a DB approver's choice.\n")
	case !in.DBDestructive:
		b.WriteString("*Schema compatibility:* not expand-only (see above), so the database step is required before the app rollback.\n")
	}
	if in.DBDestructive {
		b.WriteString("A destructive migration cannot be undone by a down migration: the database step is a snapshot or point-in-time restore.")
	}
	return b.String()
}

// assessmentMsg is the root message of an incident: the table, versions,
// migrations, recommendation and the decision (buttons, plan, or who decided).
func assessmentMsg(in *state.Incident, a *Assessment, plan []string) Msg {
	blocks := []slack.Block{
		header("title", incidentTitle(in)),
		contextBlock("request", requestLine(in)),
	}
	if a.SnapshotErr != "" {
		blocks = append(blocks, section("platform", ":warning: *Could not read the platform:* "+a.SnapshotErr))
	}
	if notes := a.Notes(); len(notes) > 0 {
		blocks = append(blocks, section("span", ":warning: *"+strings.Join(notes, "*\n:warning: *")+"*"))
	}
	blocks = append(blocks,
		assessmentTable(in, a),
		section("recommendation", "*Recommendation:* "+a.Recommendation()),
		section("versions", versionsText(a)),
		section("migrations", migrationsText(in, a)),
	)
	blocks = append(blocks, decisionBlocks(in, a, plan)...)
	blocks = append(blocks, contextBlock("took", fmt.Sprintf("Assessed in %s · `/rollback timeline %s`", took(a.Took), in.ID)))
	return Msg{Text: fmt.Sprintf("%s: %s", incidentTitle(in), a.Recommendation()), Blocks: blocks}
}

// took renders a short duration for people: "840 ms", "2.4 s", "under 1 ms".
func took(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return "under 1 ms"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return d.Round(100 * time.Millisecond).String()
}

func decisionBlocks(in *state.Incident, a *Assessment, plan []string) []slack.Block {
	switch in.Status {
	case state.Planned:
		return []slack.Block{section("plan", "*Plan (dry run: nothing was changed):*\n"+bullets(plan))}
	case state.AwaitingConfirm:
		what := fmt.Sprintf("Roll back %s from %s to %s.", in.PlatformTgt, in.Bad.Label(), in.Target.Label())
		if in.MigrationsRan {
			what += " The database step comes first and needs DB approval."
		}
		if in.PostPlan != "" {
			what += " After the verification: " + in.PostPlan + "."
		}
		return []slack.Block{
			section("question", "*Roll back now?* "+what+ownerConfirmText(in, a)),
			slack.NewActionBlock("decision",
				button(ActConfirm, in.ID, "Roll back", slack.StyleDanger, confirmDialog("Roll back "+in.Service+"?", confirmText(in, what, ownerDialogText(a)), "Roll back")),
				button(ActCancel, in.ID, "Cancel", "", nil),
			),
		}
	case state.DrillRestoring, state.Cancelled:
		if in.Status == state.DrillRestoring || drillDeployed(in) {
			// A drill changed its target before this assessment: say
			// how it puts it back, or how it left it.
			why := fmt.Sprintf(":x: Cancelled by <@%s>: no rollback.", in.DecidedBy)
			if in.DecidedBy == "" {
				why = ":no_entry: Nothing to roll back to, or the platform could not be read: no rollback."
			}
			end := fmt.Sprintf(" The drill is putting back %s, the version it found (see the thread).", in.Drill.Original.Label())
			switch {
			case in.Status == state.DrillRestoring:
			case in.Drill.Left == "":
				end = fmt.Sprintf(" The drill is over: the target runs %s again, as the drill found it.", in.Drill.Original.Label())
			default:
				end = " The drill is NOT restored: " + in.Drill.Left + "."
			}
			return []slack.Block{section("decision", why+end)}
		}
		if in.DecidedBy == "" {
			return []slack.Block{section("decision", ":no_entry: Nothing to roll back to, or the platform could not be read: no change was made.")}
		}
		return []slack.Block{section("decision", fmt.Sprintf(":x: Cancelled by <@%s>. No change was made.", in.DecidedBy))}
	default:
		return []slack.Block{section("decision", fmt.Sprintf(":white_check_mark: Rollback confirmed by <@%s> at %s. Progress in the thread.", in.DecidedBy, clock(in.UpdatedAt)))}
	}
}

// confirmText is the confirmation dialog's text (at most 300 characters
// in Slack): what the rollback writes after the verification comes before
// the targets' long names, so the approver always sees it.
func confirmText(in *state.Incident, what, owner string) string {
	if in.PostPlan == "" {
		return what + owner + " The rollout is paused first."
	}
	return fmt.Sprintf("Roll back to %s, then %s.%s The rollout is paused first.", in.Target.ID, in.PostPlan, owner)
}

func bullets(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("• " + l + "\n")
	}
	return b.String()
}

// decidedMsg re-renders the assessment with the decision instead of buttons.
func decidedMsg(in *state.Incident, a *Assessment) Msg {
	return assessmentMsg(in, a, nil)
}

func notAllowedMsg(service, what, allowed string) Msg {
	return errorMsg(fmt.Sprintf("You are not allowed to %s for *%s*. Allowed: %s. Ask one of them to do it.", what, service, allowed))
}

func alreadyDecidedMsg(in *state.Incident) Msg {
	if in == nil {
		return errorMsg("this rollback no longer exists")
	}
	by := ""
	if in.DecidedBy != "" {
		by = " by <@" + in.DecidedBy + ">"
	}
	return simple(fmt.Sprintf(":information_source: %s was already handled%s (status: %s). Nothing more was done.", in.ID, by, strings.ReplaceAll(string(in.Status), "_", " ")))
}

func progressMsg(in *state.Incident, title string, lines []string, stopLine string) Msg {
	blocks := []slack.Block{
		section("title", fmt.Sprintf(":hourglass_flowing_sand: *%s* %s → %s", title, in.Bad.Label(), in.Target.Label())),
	}
	if stopLine != "" {
		blocks = append(blocks, contextBlock("stop", "Stop the rollout (runbook §2): "+stopLine))
	}
	if len(lines) > 0 {
		blocks = append(blocks, section("progress", "```"+strings.Join(lines, "\n")+"```"))
	}
	return Msg{Text: title, Blocks: blocks}
}

func rolledBackMsg(in *state.Incident, res platforms.Result, took time.Duration, lines []string, stopLine string) Msg {
	icon, word := ":white_check_mark:", "Rolled back"
	if res.Outcome == platforms.Skipped {
		icon, word = ":next_track_button:", "Skipped"
	}
	t := fmt.Sprintf("%s *%s:* %s", icon, word, res.Detail)
	if took > 0 {
		t += fmt.Sprintf(" (%s)", took)
	}
	blocks := []slack.Block{section("title", t)}
	if stopLine != "" {
		blocks = append(blocks, contextBlock("stop", "Stop the rollout (runbook §2): "+stopLine))
	}
	if len(lines) > 0 {
		blocks = append(blocks, section("progress", "```"+strings.Join(lines, "\n")+"```"))
	}
	blocks = append(blocks, contextBlock("next", "Verifying next (runbook §5)."))
	return Msg{Text: word + ": " + res.Detail, Blocks: blocks}
}

func fallbackButtons(in *state.Incident, extra ...slack.BlockElement) *slack.ActionBlock {
	b := slack.NewActionBlock("fallbacks",
		button(ActFallbackImage, in.ID, "Set image to "+clip(in.Target.Artifact, 50), slack.StyleDanger,
			confirmDialog("Set the image explicitly?", "Set "+in.PlatformTgt+" to `"+in.Target.Artifact+"`, bypassing the rollout history (runbook FAQ).", "Set image")),
		button(ActFallbackZero, in.ID, "Scale to zero", slack.StyleDanger,
			confirmDialog("Scale to zero?", "Stop every instance of "+in.PlatformTgt+". The service will be DOWN until someone brings it back.", "Scale to zero")),
	)
	b.Elements.ElementSet = append(b.Elements.ElementSet, extra...)
	return b
}

func rollbackFailedMsg(in *state.Incident, msg, kind string, fallbacks bool) Msg {
	blocks := []slack.Block{section("failed", ":x: *The rollback failed:* "+msg)}
	if fallbacks {
		blocks = append(blocks,
			section("faq", "*What now?* The runbook's fallbacks: set the previous image explicitly; if that fails too, scale to zero and investigate. Or end this rollback to release the service."),
			fallbackButtons(in, endButton(in)))
	} else {
		blocks = append(blocks, section("faq", fmt.Sprintf("*What now?* rollbot has no automatic fallback on %s. Do what the message above says, then run `/rollback %s` again (the service is released). If the platform itself is broken, investigate; you may need to rebuild the previous version from source (runbook FAQ).", kind, in.Service)))
	}
	return Msg{Text: "The rollback failed: " + msg, Blocks: blocks}
}

func endButton(in *state.Incident) *slack.ButtonBlockElement {
	return button(ActEnd, in.ID, "End this rollback", "", nil)
}

func endedMsg(in *state.Incident, user string, at time.Time) Msg {
	return simple(fmt.Sprintf(":stop_button: <@%s> ended %s at %s; the service is released. Run `/rollback %s` again when ready; the timeline keeps what happened: `/rollback timeline %s`.", user, in.ID, clock(at), in.Service, in.ID))
}

func fallbackChosenMsg(in *state.Incident, user, what string) Msg {
	return simple(fmt.Sprintf(":arrow_forward: <@%s> chose the fallback: %s.", user, what))
}

func itemIcon(it VerifyItem) string {
	switch {
	case it.State == ItemPass:
		return ":white_check_mark:"
	case it.State == ItemFail:
		return ":x:"
	case it.Manual:
		return ":raised_hand:"
	case it.Regressed != "" && it.Since.IsZero():
		return ":warning:"
	}
	return ":hourglass_flowing_sand:"
}

// itemProgress is an item's standing: how long an automatic one has held
// of the soak, who answered a manual one.
func itemProgress(it VerifyItem, soak time.Duration) string {
	if it.Manual {
		switch it.State {
		case ItemPass:
			return fmt.Sprintf("confirmed OK by <@%s> at %s", it.By, clock(it.At))
		case ItemFail:
			return fmt.Sprintf("*NOT OK* by <@%s> at %s", it.By, clock(it.At))
		}
		return "check by hand: " + it.Hint
	}
	held := time.Duration(0)
	if !it.Since.IsZero() {
		held = it.Last.Sub(it.Since)
	}
	p := fmt.Sprintf("held %s of %s", dur(held), window(soak))
	if it.State == ItemPass {
		p = fmt.Sprintf("verified by rollbot: held %s (soak %s)", dur(held), window(soak))
	}
	if it.Regressed != "" {
		p += " · " + it.Regressed
	}
	return p
}

func verifyMsg(in *state.Incident, v *Verification, approvers Access) Msg {
	var b strings.Builder
	var manual []VerifyItem
	for _, it := range v.Items {
		fmt.Fprintf(&b, "%s *%s* · %s", itemIcon(it), it.Name, itemProgress(it, v.Soak))
		if it.Detail != "" && !it.Manual {
			fmt.Fprintf(&b, " · %s", it.Detail)
		}
		b.WriteString("\n")
		if it.Manual && it.By == "" && !v.Done {
			manual = append(manual, it)
		}
	}
	title := ":mag: *Verifying the rollback* (runbook §5)"
	verdict := fmt.Sprintf("Each automatic check must hold for %s without a break (verify_soak) before it counts", window(v.Soak))
	if v.judgesRecent() {
		verdict += fmt.Sprintf(", the error rate and p95 over the whole window and over each round's last %s alone (verify_recent)", window(v.Recent))
	}
	verdict += fmt.Sprintf("; rollbot reports by %s at the latest.", clock(v.Deadline))
	blocks := []slack.Block{nil, section("checklist", b.String())}
	for _, it := range manual {
		blocks = append(blocks,
			section("manual_"+it.Key, fmt.Sprintf(":raised_hand: *Check by hand: %s* — %s. Answer as one of %s.", it.Name, it.Hint, who(approvers))),
			slack.NewActionBlock("answer_"+it.Key,
				button(ActCheckOK, in.ID+"|"+it.Key, "Checked: OK", slack.StylePrimary, nil),
				button(ActCheckNotOK, in.ID+"|"+it.Key, "Not OK", slack.StyleDanger,
					confirmDialog("Not OK?", "*"+it.Name+"* is not OK: the verification fails and the fallbacks are offered.", "Not OK")),
			))
	}
	if v.Done {
		if v.Passed() {
			title = ":white_check_mark: *Rollback verified*"
			verdict = v.verdictText()
		} else {
			title = ":x: *Verification failed*"
			verdict = "See below for why and the next step."
		}
	}
	blocks[0] = section("title", title+" "+in.Target.Label())
	blocks = append(blocks, contextBlock("verdict", verdict))
	if v.Done && v.Passed() {
		blocks = append(blocks, section("observed", "*Observed:* "+v.observed()))
	}
	return Msg{Text: "Verification", Blocks: blocks}
}

// regressedMsg says in the thread that an item went back to pending.
func regressedMsg(in *state.Incident, it VerifyItem, soak time.Duration) Msg {
	return simple(fmt.Sprintf(":warning: *%s* %s. It is pending again: the %s soak starts over once it is good again (%s).", it.Name, it.Regressed, window(soak), in.ID))
}

func verifyFailedMsg(in *state.Incident, why string, fallbacks bool) Msg {
	blocks := []slack.Block{
		section("failed", ":x: *Verification failed:* "+clip(why, 2500)),
		section("next", "*Next step:* check whether the failure is deployment-related at all (infrastructure, a dependency, data). Re-run the verification when you have acted, or use a fallback."),
	}
	acts := []slack.BlockElement{button(ActRetryVerify, in.ID, "Re-run verification", slack.StylePrimary, nil)}
	if fallbacks {
		fb := fallbackButtons(in)
		acts = append(acts, fb.Elements.ElementSet...)
	}
	acts = append(acts, endButton(in))
	blocks = append(blocks, slack.NewActionBlock("next_actions", acts...))
	return Msg{Text: "Verification failed", Blocks: blocks}
}

// checkRecordedMsg confirms an answer to the person who gave it.
func checkRecordedMsg(in *state.Incident, c state.ManualCheck) Msg {
	answer := "OK"
	if c.Answer == state.CheckNotOK {
		answer = "NOT OK: the verification fails and the fallbacks are offered in the thread"
	}
	return simple(fmt.Sprintf(":memo: Recorded for %s: *%s* checked by hand by <@%s> at %s: %s.", in.ID, c.Name, c.By, clock(c.At), answer))
}

// checkClosedMsg answers a click on a check that can no longer be answered.
func checkClosedMsg(in *state.Incident, c state.ManualCheck) Msg {
	if c.Answered() {
		answer := "OK"
		if c.Answer == state.CheckNotOK {
			answer = "not OK"
		}
		return errorMsg(fmt.Sprintf("*%s* was already answered by <@%s> at %s (%s); nothing was changed.", c.Name, c.By, clock(c.At), answer))
	}
	return errorMsg(fmt.Sprintf("%s is no longer verifying (it is %s); nothing was recorded.", in.ID, strings.ReplaceAll(string(in.Status), "_", " ")))
}

func postmortemReminderMsg(in *state.Incident, at time.Time) Msg {
	return simple(fmt.Sprintf(":memo: *Postmortem reminder for %s* (rollback of %s from %s): hold the postmortem within 24 hours of the incident. Timeline: `/rollback timeline %s --markdown`.",
		in.ID, in.Service, in.Bad.Label(), in.ID))
}

func postActionsMsg(in *state.Incident) Msg {
	blocks := []slack.Block{section("title", "*Post-rollback actions* (runbook §6)")}
	for _, it := range postItemsFor(in) {
		if it.Key == gitItem.Key {
			it.Text += ": `/rollback resume-sync " + in.Service + "`"
			if in.GitChange != nil {
				it.Text += " (" + gitChangeLine(*in.GitChange) + ")"
			}
		}
		detail, done := in.Done[it.Key]
		text := ":white_large_square: " + it.Text
		if done {
			text = ":white_check_mark: " + it.Text + " · " + detail
		}
		if it.Key == "dnd" && !done && in.Bad.Artifact != "" {
			text += " (`" + in.Bad.Artifact + "`)"
		}
		if note := in.Notes[it.Key]; note != "" && !done {
			text += "\n:warning: " + note
		}
		s := section("item_"+it.Key, text)
		if !done {
			s.Accessory = slack.NewAccessory(button(ActPostDone, in.ID+"|"+it.Key, "Done", "", nil))
		}
		blocks = append(blocks, s)
	}
	return Msg{Text: "Post-rollback actions", Blocks: blocks}
}

func dbApprovalMsg(in *state.Incident, dbApprovers Access, need int, approvers []string, ttl time.Duration) Msg {
	kind := "reversible: run the down migration"
	if in.DBDestructive {
		kind = "destructive: restore from a snapshot / point in time"
	}
	blocks := []slack.Block{
		section("title", fmt.Sprintf(":octagonal_sign: *Database step first* (%s)", kind)),
		section("warning", ":warning: *"+DowntimeWarning+"*"),
		section("plan", "*Plan:* "+in.DBPlan),
		section("who", fmt.Sprintf("Needs %d distinct DB approver(s) from %s, not the requester <@%s>. Each approval is valid for %s.", need, who(dbApprovers), in.RequestedBy, window(ttl))),
	}
	if len(approvers) > 0 {
		blocks = append(blocks, contextBlock("approvals", fmt.Sprintf("Approved so far (%d of %d): %s", len(approvers), need, mentions(approvers))))
	}
	buttons := []slack.BlockElement{
		button(ActDBApprove, in.ID, "Approve database rollback", slack.StyleDanger, confirmDialog("Approve the database step?", DowntimeWarning, "Continue")),
	}
	if in.DBOptional {
		blocks = append(blocks, section("optional", "*Optional:* every migration since the deploy only expanded the schema, so the old version runs on the new schema. A DB approver may instead *roll back the app only* and leave the database as it is."))
		buttons = append(buttons, button(ActDBSkip, in.ID, "Roll back the app only", slack.StylePrimary, confirmDialog("Roll back the app only?", "The database keeps the new (expand-only) schema; the old version runs on it.", "App only")))
	}
	buttons = append(buttons, button(ActDBRefuse, in.ID, "Refuse", "", nil))
	blocks = append(blocks, slack.NewActionBlock("db_decision", buttons...))
	return Msg{Text: "Database step needs approval", Blocks: blocks}
}

func dbApprovedMsg(in *state.Incident, approvers []string) Msg {
	return Msg{Text: "Database step approved", Blocks: []slack.Block{
		section("title", ":white_check_mark: *Database step approved* by "+mentions(approvers)+"."),
		section("warning", ":warning: *"+DowntimeWarning+"*"),
		section("plan", "*Plan:* "+in.DBPlan),
	}}
}

func dbClosedMsg(in *state.Incident, text string) Msg {
	return Msg{Text: text, Blocks: []slack.Block{
		section("title", ":octagonal_sign: *Database step*"),
		section("plan", "*Plan was:* "+in.DBPlan),
		section("closed", text),
	}}
}

// switchWaitMsg asks a DB approver to switch the app's endpoint by hand.
func switchWaitMsg(in *state.Incident, plan string, dbApprovers Access, until time.Time) Msg {
	return Msg{Text: "Switch the app's database endpoint, then press Endpoint switched", Blocks: []slack.Block{
		section("title", ":twisted_rightwards_arrows: *Switch the app's database endpoint* before the app rollback"),
		section("plan", "*To do:* "+clip(plan, 2500)),
		section("who", fmt.Sprintf("A DB approver (%s) presses *Endpoint switched* once the app uses the restored instance. The app rollback waits for it; the old release must not run against the database the bad migration changed.", who(dbApprovers))),
		contextBlock("hold", fmt.Sprintf("%s stays locked for this rollback until %s; then %s is closed without the app rollback.", in.Service, clock(until), in.ID)),
		slack.NewActionBlock("switch_decision",
			button(ActSwitched, in.ID, "Endpoint switched", slack.StylePrimary, confirmDialog("Is the app using the restored database?", "The app rollback starts right after this.", "Endpoint switched")),
		),
	}}
}

// switchConfirmedMsg replaces the request once a DB approver confirmed.
func switchConfirmedMsg(in *state.Incident, user string, at time.Time) Msg {
	return Msg{Text: "Endpoint switched", Blocks: []slack.Block{
		section("title", fmt.Sprintf(":white_check_mark: *Endpoint switched* by hand, confirmed by <@%s> at %s. The app rollback starts now.", user, clock(at))),
	}}
}

// switchFailedMsg is the failure of rollbot's endpoint switch.
func switchFailedMsg(in *state.Incident, msg string) Msg {
	return Msg{Text: "The endpoint switch failed: " + msg, Blocks: []slack.Block{
		section("failed", ":x: *The endpoint switch failed:* "+clip(msg, 2500)),
		section("faq", "*What now?* The database was restored (see the database step above); the app was *not* rolled back. Finish the switch by hand as the message says, then end this rollback and run `/rollback "+in.Service+"` again to roll back the app."),
		slack.NewActionBlock("next_actions", endButton(in)),
	}}
}

func dbOutputMsg(in *state.Incident, title, status, tail string) Msg {
	blocks := []slack.Block{section("title", fmt.Sprintf(":floppy_disk: *%s* %s", title, status))}
	if tail != "" {
		blocks = append(blocks, section("output", "```"+clip(tail, maxSection-10)+"```"))
	}
	return Msg{Text: title + " " + status, Blocks: blocks}
}

func dbApproveModalView(in *state.Incident, msgTS string) slack.ModalViewRequest {
	input := slack.NewPlainTextInputBlockElement(plain(in.Service, 150), "service")
	return slack.ModalViewRequest{
		Type:            slack.VTModal,
		CallbackID:      viewDBApprove,
		PrivateMetadata: in.ID + "|" + msgTS,
		Title:           plain("Approve database step", 24),
		Submit:          plain("Approve", 24),
		Close:           plain("Cancel", 24),
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			section("warning", ":warning: *"+DowntimeWarning+"*"),
			section("plan", "*"+in.ID+":* "+in.DBPlan),
			slack.NewInputBlock("confirm", plain("Type the service name to approve", 2000), nil, input),
		}},
	}
}

func statusMsg(active []*state.Incident, services []string, deployLocks map[string]*state.DeployLock) Msg {
	var locks []string
	for _, name := range services {
		if l := deployLocks[name]; l != nil {
			locks = append(locks, deployLockLine(l))
		}
	}
	if len(active) == 0 {
		text := ":white_check_mark: No rollback is running. Services: " + codeList(services)
		if len(locks) > 0 {
			text += "\n" + strings.Join(locks, "\n")
		}
		return simple(text)
	}
	var b strings.Builder
	for _, in := range active {
		fmt.Fprintf(&b, "• *%s* %s: %s (by <@%s>, %s)\n", in.ID, in.Service, strings.ReplaceAll(string(in.Status), "_", " "), in.RequestedBy, clock(in.CreatedAt))
	}
	blocks := []slack.Block{section("title", "*Open rollbacks*"), section("list", b.String())}
	if len(locks) > 0 {
		blocks = append(blocks, section("deploy_locks", clip(strings.Join(locks, "\n"), 2900)))
	}
	return Msg{Text: "Open rollbacks", Blocks: blocks}
}

func serviceStatusMsg(name, kind, target string, snap *platforms.Snapshot, snapErr string, lock *state.Lock, deployLock *state.DeployLock, active []*state.Incident) Msg {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s* on %s `%s`\n", name, kind, target)
	if snap != nil {
		fmt.Fprintf(&b, "Running: %s\n", snap.Current.Label())
		h := snap.Health
		if h.Known {
			fmt.Fprintf(&b, "Health: %d/%d ready, %d restarts", h.Ready, h.Desired, h.Restarts)
			if h.Detail != "" {
				b.WriteString(" · " + h.Detail)
			}
			b.WriteString("\n")
		}
		if snap.Paused {
			b.WriteString("Rollout: paused\n")
		} else if snap.RolloutInProgress {
			b.WriteString("Rollout: in progress\n")
		}
	} else {
		b.WriteString(":warning: Could not read the platform: " + snapErr + "\n")
	}
	if lock != nil {
		fmt.Fprintf(&b, ":lock: Locked by %s (<@%s>, since %s)\n", lock.Incident, lock.Holder, clock(lock.Since))
	}
	if deployLock != nil {
		b.WriteString(deployLockLine(deployLock) + "\n")
	}
	for _, in := range active {
		fmt.Fprintf(&b, "• *%s*: %s\n", in.ID, strings.ReplaceAll(string(in.Status), "_", " "))
	}
	return simple(b.String())
}

// deployLockLine is a deploy lock as /rollback status shows it.
func deployLockLine(l *state.DeployLock) string {
	return fmt.Sprintf(":no_entry: Deploys of %s locked after %s (rollback confirmed by <@%s>, since %s); an approver lifts it with `/rollback unlock %s`",
		l.Service, l.Incident, l.By, l.At.UTC().Format("2006-01-02 15:04 UTC"), l.Service)
}

func allowedMsg(service, detail, by string) Msg {
	return simple(fmt.Sprintf(":white_check_mark: <@%s> lifted the admission refusal for %s: %s. The DO_NOT_DEPLOY mark stays (`/rollback history %s`).", by, service, detail, service))
}

func unlockedMsg(service string, l *state.DeployLock, by string) Msg {
	return simple(fmt.Sprintf(":unlock: Deploys of %s unlocked by <@%s> (the lock was set after %s). The deploy gate lets versions through again, except those marked DO_NOT_DEPLOY.", service, by, l.Incident))
}

func historyMsg(name, target string, snap *platforms.Snapshot, marks map[string]state.Mark, past []*state.Incident) Msg {
	t := slack.NewTableBlock("history")
	cell := func(s string) slack.TableCell { return slack.NewTableRawTextCell(clip(s, maxCell)) }
	t.AddRow(cell("Revision"), cell("Artifact"), cell("Created"), cell("Change cause"), cell("Mark"))
	for i, r := range snap.History {
		if i == 50 {
			break
		}
		mark := ""
		if m, ok := marks[r.Artifact]; ok {
			mark = "DO_NOT_DEPLOY (" + m.Incident + ")"
		} else if r.DoNotDeploy {
			mark = "DO_NOT_DEPLOY"
		}
		id := r.ID
		if r.ID == snap.Current.ID {
			id += " (current)"
		}
		created := ""
		if !r.CreatedAt.IsZero() {
			created = r.CreatedAt.UTC().Format("2006-01-02 15:04")
		}
		t.AddRow(cell(id), cell(r.Artifact), cell(created), cell(r.ChangeCause), cell(mark))
	}
	blocks := []slack.Block{section("title", fmt.Sprintf("*History of %s* (`%s`)", name, target)), t}
	var reg []string
	for art, m := range marks {
		if r := m.Registry; r != nil {
			line := fmt.Sprintf("• `%s` (%s): DO_NOT_DEPLOY artifact `%s` in `%s` on `%s`, %s, %s", art, m.Incident, shortDigest(r.Referrer), r.Repository, shortDigest(r.Digest), r.Via, r.At.UTC().Format("2006-01-02 15:04"))
			if r.TagDeleted != "" {
				line += "; tag `" + r.TagDeleted + "` deleted"
			}
			reg = append(reg, line)
		}
	}
	if len(reg) > 0 {
		sort.Strings(reg)
		blocks = append(blocks, section("registry", clip("*Registry marks*\n"+strings.Join(reg, "\n"), 2900)))
	}
	if len(past) > 0 {
		var b strings.Builder
		for _, in := range past {
			fmt.Fprintf(&b, "• *%s* %s: %s → %s, %s\n", in.ID, in.CreatedAt.UTC().Format("2006-01-02 15:04"), in.Bad.Label(), in.Target.Label(), strings.ReplaceAll(string(in.Status), "_", " "))
		}
		blocks = append(blocks, section("past", "*Past rollbacks*\n"+b.String()))
	}
	return Msg{Text: "History of " + name, Blocks: blocks}
}

// timelinePages splits a timeline into pages that each fit one message
// (sections of at most ~2900 characters, at most 45 of them), in order.
func timelinePages(events []state.Event) [][]string {
	var pages [][]string
	var page []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			page = append(page, cur.String())
			cur.Reset()
		}
		if len(page) == 45 {
			pages = append(pages, page)
			page = nil
		}
	}
	for _, ev := range events {
		actor := ev.Actor
		if strings.HasPrefix(actor, "U") {
			actor = "<@" + actor + ">"
		}
		l := clip("`"+ev.Time.UTC().Format("15:04:05")+"` *"+ev.Step+"* "+actor+": "+ev.Detail, 2000)
		if cur.Len()+len(l)+1 > 2900 {
			flush()
		}
		cur.WriteString(l)
		cur.WriteByte('\n')
	}
	flush()
	if len(page) > 0 {
		pages = append(pages, page)
	}
	return pages
}

// timelineMsg shows one page of the timeline (1-based; 0 is the first)
// and says where the rest is: nothing is dropped without saying so.
func timelineMsg(in *state.Incident, events []state.Event, page int) Msg {
	pages := timelinePages(events)
	if page < 1 {
		page = 1
	}
	meta := fmt.Sprintf("Status: %s · bad %s · target %s · %d events · `--markdown` to export", strings.ReplaceAll(string(in.Status), "_", " "), in.Bad.Label(), in.Target.Label(), len(events))
	blocks := []slack.Block{header("title", "Timeline "+in.ID+": "+in.Service)}
	switch {
	case len(pages) == 0:
		blocks = append(blocks, contextBlock("meta", meta), section("empty", "No events yet."))
	case page > len(pages):
		blocks = append(blocks, contextBlock("meta", meta),
			section("nopage", fmt.Sprintf("There is no page %d: the timeline has %d. `/rollback timeline %s --page %d` shows the last.", page, len(pages), in.ID, len(pages))))
	default:
		if len(pages) > 1 {
			meta += fmt.Sprintf(" · page %d of %d", page, len(pages))
		}
		blocks = append(blocks, contextBlock("meta", meta))
		for i, sec := range pages[page-1] {
			blocks = append(blocks, section(fmt.Sprintf("events_%d", i), sec))
		}
		if page < len(pages) {
			blocks = append(blocks, contextBlock("next", fmt.Sprintf("More: `/rollback timeline %s --page %d`", in.ID, page+1)))
		}
	}
	return Msg{Text: "Timeline " + in.ID, Blocks: blocks}
}

// maxMarkdownInMessage is how much of a Markdown export a message shows;
// a longer export is also uploaded whole, as a file.
const maxMarkdownInMessage = maxSection - 10

func markdownMsg(in *state.Incident, mdText string) Msg {
	return Msg{Text: "Timeline " + in.ID + " (Markdown)", Blocks: []slack.Block{
		section("title", "*Timeline "+in.ID+" as Markdown* (copy into the postmortem):"),
		section("markdown", "```"+clip(mdText, maxMarkdownInMessage)+"```"),
	}}
}

func interruptedMsg(in *state.Incident, was state.Status) Msg {
	return simple(fmt.Sprintf(":warning: *rollbot restarted while %s was %s.* That step did not finish under rollbot's watch: the platform may be mid-change. Check `/rollback status %s`, then run `/rollback %s` again to re-assess. The timeline keeps everything that happened: `/rollback timeline %s`.",
		in.ID, strings.ReplaceAll(string(was), "_", " "), in.Service, in.Service, in.ID))
}

func resumedMsg(in *state.Incident, by, from string) Msg {
	return simple(fmt.Sprintf(":arrows_counterclockwise: *%s resumed by %s* after %s stopped at %s. rollbot re-reads the platform and continues from the recorded step; a write that was already made is not made again.",
		in.ID, by, from, strings.ReplaceAll(string(in.Status), "_", " ")))
}

func storeDownMsg(in *state.Incident, lockUntil time.Time) Msg {
	return simple(fmt.Sprintf(":warning: *%s: rollbot lost its state store (Redis)* during %s, so it stopped before the next write: nothing more is changed without its record on the timeline. Check `/rollback status %s` once Redis is back; another replica resumes the incident then. The service lock lapses by %s at the latest.",
		in.ID, strings.ReplaceAll(string(in.Status), "_", " "), in.Service, clock(lockUntil)))
}

func dbFailedMsg(in *state.Incident, msg string, until time.Time) Msg {
	return Msg{Text: "The database step failed: " + msg, Blocks: []slack.Block{
		section("failed", ":x: *The database step failed:* "+clip(msg, 2500)),
		section("faq", "*What now?* Check what the database is left in (the output above), fix it by hand if needed, then end this rollback and run `/rollback "+in.Service+"` again."),
		slack.NewActionBlock("next_actions", endButton(in)),
	}}
}

// withHoldNote says how long a failed rollback keeps the service locked.
func withHoldNote(m Msg, in *state.Incident, until time.Time) Msg {
	m.Blocks = append(m.Blocks, contextBlock("hold", fmt.Sprintf("%s stays locked for this rollback until someone acts or until %s; then %s is closed and the service released.", in.Service, clock(until), in.ID)))
	return m
}

// ownerPausedMsg says the GitOps owner was paused before the rollback.
func ownerPausedMsg(in *state.Incident, res platforms.Result) Msg {
	t := ":pause_button: *Owner paused before the rollback:* " + res.Detail
	if res.Outcome == platforms.Skipped {
		t = ":information_source: *Owner:* " + res.Detail
	}
	if in.OwnerPause != nil && in.OwnerPause.Changed {
		t += ". After the rollback, change Git, then `/rollback resume-sync " + in.Service + "` restores " + in.OwnerPause.Field + " exactly as it was."
	}
	blocks := []slack.Block{section("owner", t)}
	if len(res.Plan) > 0 {
		blocks = append(blocks, contextBlock("plan", strings.Join(res.Plan, "; ")))
	}
	return Msg{Text: "Owner paused: " + res.Detail, Blocks: blocks}
}

// ownerRefusedMsg is the failure when the owner could not be paused:
// nothing was rolled back; an approver may roll back anyway.
func ownerRefusedMsg(in *state.Incident, msg string) Msg {
	return Msg{Text: "Not rolled back: " + msg, Blocks: []slack.Block{
		section("failed", ":no_entry: *Not rolled back:* "+msg),
		section("faq", "*What now?* Fix what the message says and run `/rollback "+in.Service+"` again (end this one first), or roll back anyway: the owner may then put the bad version back at its next sync."),
		slack.NewActionBlock("owner_actions",
			button(ActOwnerOverride, in.ID, "Roll back anyway", slack.StyleDanger,
				confirmDialog("Roll back without pausing the owner?", "Roll "+in.PlatformTgt+" back to "+in.Target.Label()+" although its GitOps owner is not paused: it may put the bad version back.", "Roll back anyway")),
			endButton(in)),
	}}
}

func ownerOverriddenMsg(in *state.Incident, user string) Msg {
	return simple(fmt.Sprintf(":warning: <@%s> chose to roll back anyway, without pausing the owner of %s. rollbot watches for the bad version coming back.", user, in.PlatformTgt))
}

// badVersionBackMsg says at once that the bad version runs again.
func badVersionBackMsg(in *state.Incident, target string, owner *platforms.Owner) Msg {
	who := "Something"
	if owner != nil {
		who = owner.Label() + " (or someone)"
	}
	return simple(fmt.Sprintf(":rotating_light: *The bad version is back:* %s runs `%s` again. %s put it back, probably a sync that was resumed or the old manifest applied again. Pause the sync and change Git (`%s` → `%s`) before anything else.",
		target, in.Bad.Artifact, who, in.Bad.Artifact, in.Target.Artifact))
}

func gitChangeLine(g platforms.GitChange) string {
	s := fmt.Sprintf("in %s", firstNonEmpty(g.Repo, "the repository"))
	if g.Path != "" {
		s += ", path " + g.Path
	}
	if g.Revision != "" {
		s += ", revision " + g.Revision
	}
	s += fmt.Sprintf(": image %s → %s", g.From, g.To)
	if g.Note != "" {
		s += " (" + g.Note + ")"
	}
	return s
}

// gitChangeMsg says what must change in Git so the rollback sticks.
func gitChangeMsg(in *state.Incident, g platforms.GitChange) Msg {
	var b strings.Builder
	fmt.Fprintf(&b, ":memo: *Change Git so the rollback sticks* (read from %s)\n", g.Source)
	fmt.Fprintf(&b, "• Repository: %s\n", firstNonEmpty(g.Repo, "unknown"))
	fmt.Fprintf(&b, "• Path: %s\n", firstNonEmpty(g.Path, "unknown"))
	fmt.Fprintf(&b, "• Target revision: %s\n", firstNonEmpty(g.Revision, "unknown"))
	fmt.Fprintf(&b, "• Image: `%s` → `%s`\n", g.From, g.To)
	if g.Note != "" {
		fmt.Fprintf(&b, ":warning: %s\n", g.Note)
	}
	fmt.Fprintf(&b, "Then `/rollback resume-sync %s`.", in.Service)
	return Msg{Text: "Change Git so the rollback sticks: " + gitChangeLine(g), Blocks: []slack.Block{section("git", b.String())}}
}

func ownerResumedMsg(in *state.Incident, user string, res platforms.Result) Msg {
	icon := ":arrow_forward:"
	if res.Outcome == platforms.Skipped {
		icon = ":next_track_button:"
	}
	return simple(fmt.Sprintf("%s <@%s> resumed the sync (%s): %s", icon, user, in.ID, res.Detail))
}

// mention renders who requested something: a Slack user, or Alertmanager.
func mention(user string) string {
	if user == AlertRequester {
		return "an Alertmanager alert"
	}
	return "<@" + user + ">"
}

// appliedLines quotes the migration log's evidence.
func appliedLines(a *Assessment) string {
	if len(a.MigLogApplied) == 0 {
		return ""
	}
	return "\n```" + clip(strings.Join(a.MigLogApplied, "\n"), 1200) + "```"
}

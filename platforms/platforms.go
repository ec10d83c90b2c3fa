// Package platforms holds the contract between rollbot's runbook steps
// (package handlers) and the systems it acts on, all on this page:
//
//   - Platform, and optionally Fallbacks: where the service is deployed
//     (runbook §2, §3 and the FAQ's last resorts);
//   - Metrics: the request numbers of the assessment (§1);
//   - Database, with Migration and MigrationReport: the migration check
//     and the database step (§1 decision gate, §4);
//   - Prober: the verification probes (§5);
//   - AccessChecker, SchemaRecorder and Capturer: optional capabilities
//     the bot looks for on a Platform or a Database.
//
// Every adapter lives in its own sub-package (kube, swarm, compose, vm,
// bluegreen, sim, prom, scrape, probe, database, ...), is bound to one
// service when it is constructed, and asserts at compile time which of
// these interfaces it implements.
package platforms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"
)

// Revision is one deployable version of a service as the platform knows it:
// a Kubernetes ReplicaSet revision, a Swarm image, a release directory on a
// VM, a target group behind a load balancer.
type Revision struct {
	// ID is what a user types after --to: "3" for a Kubernetes revision,
	// "v1.2.3" for an image tag or release, "green" for a target group.
	ID string `json:"id"`
	// Artifact is the concrete thing that runs: an image reference,
	// a package version, a binary path, a target group ARN.
	Artifact    string    `json:"artifact"`
	CreatedAt   time.Time `json:"created_at,omitzero"`
	ChangeCause string    `json:"change_cause,omitempty"`
	// DoNotDeploy is set when the platform itself carries the mark
	// (e.g. a Kubernetes annotation). rollbot's own marks live in state.
	DoNotDeploy   bool   `json:"do_not_deploy,omitempty"`
	DoNotDeployBy string `json:"do_not_deploy_by,omitempty"`
	// Unusable says why the platform's own record rules this revision out
	// as a rollback target, whatever its artifact: a Helm revision that
	// never deployed successfully (failed, or still pending). Empty for a
	// revision that may be rolled back to.
	Unusable string `json:"unusable,omitempty"`
}

// Label is the short human form: "revision 3 (myapp:v1)".
func (r Revision) Label() string {
	if r.Artifact == "" || r.Artifact == r.ID {
		return r.ID
	}
	return fmt.Sprintf("%s (%s)", r.ID, r.Artifact)
}

// Health is the platform's view of the running units (pods, tasks,
// containers, hosts, targets).
type Health struct {
	Desired int `json:"desired"`
	Ready   int `json:"ready"`
	// Restarts counts container restarts within RestartWindow.
	Restarts      int           `json:"restarts"`
	RestartWindow time.Duration `json:"restart_window"`
	// Known is false when the platform could not tell (no data is not healthy).
	Known bool `json:"known"`
	// Detail is a short free-text line, e.g. "2/3 pods Ready, 1 CrashLoopBackOff".
	Detail string `json:"detail,omitempty"`
}

// UnreadyRatio is the share of desired units that are not ready.
func (h Health) UnreadyRatio() float64 {
	if h.Desired == 0 {
		return 0
	}
	return float64(h.Desired-h.Ready) / float64(h.Desired)
}

// Snapshot is what the assessment step reads from a platform.
type Snapshot struct {
	Current Revision `json:"current"`
	// History is newest first and includes Current.
	History []Revision `json:"history"`
	Health  Health     `json:"health"`
	// RolloutInProgress is true while the platform is still moving units to Current.
	RolloutInProgress bool `json:"rollout_in_progress"`
	Paused            bool `json:"paused"`
	// DeployedAt is when Current started rolling out; the metrics baseline
	// is taken from a window that ends here.
	DeployedAt time.Time `json:"deployed_at,omitzero"`
	// MigrationLog is the tail of an init-migrate style container's log,
	// when the platform has one.
	MigrationLog string `json:"migration_log,omitempty"`
	// Nodes are the machines the service's units run on (Kubernetes
	// node names), for the node conditions of the verdict.
	Nodes []string `json:"nodes,omitempty"`
	// Owner is what else manages the workload (a Helm release, an Argo CD
	// Application, a Flux Kustomization or HelmRelease); nil when nothing
	// does, or the platform cannot tell.
	Owner *Owner `json:"owner,omitempty"`
}

// Owner kinds.
const (
	OwnerHelm            = "helm"
	OwnerArgoCD          = "argocd"
	OwnerFluxKustomize   = "flux-kustomization"
	OwnerFluxHelmRelease = "flux-helmrelease"
)

// Owner is a tool that manages a service's workload and would put the bad
// version back, or keep claiming it is live, after a rollback made on the
// platform directly.
type Owner struct {
	// Kind is one of the Owner* constants.
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	// Detail is the assessment's line: "Argo CD Application argocd/myapp
	// (auto-sync, self-heal)".
	Detail string `json:"detail"`
	// Plan is what rollbot will do about the owner, for the confirmation.
	Plan string `json:"plan"`
	// Reconciles is set when the owner puts its own version back by
	// itself now (Argo CD auto-sync on, Flux not suspended): the rollback
	// pauses it.
	Reconciles bool `json:"reconciles,omitempty"`
	// Problem says why the owner cannot be paused (its object is missing,
	// its CRD is not installed, rollbot may not read it); empty when fine.
	Problem string `json:"problem,omitempty"`
}

// Label is the short human form: "Argo CD Application argocd/myapp".
func (o Owner) Label() string {
	name := o.Name
	if o.Namespace != "" {
		name = o.Namespace + "/" + o.Name
	}
	switch o.Kind {
	case OwnerHelm:
		return "Helm release " + name
	case OwnerArgoCD:
		return "Argo CD Application " + name
	case OwnerFluxKustomize:
		return "Flux Kustomization " + name
	case OwnerFluxHelmRelease:
		return "Flux HelmRelease " + name
	}
	return o.Kind + " " + name
}

// GitOps reports whether the owner reconciles from a source (Argo CD,
// Flux) and must be paused before a rollback.
func (o Owner) GitOps() bool {
	return o.Kind == OwnerArgoCD || o.Kind == OwnerFluxKustomize || o.Kind == OwnerFluxHelmRelease
}

// Outcome says what a write did.
type Outcome string

const (
	Done    Outcome = "done"
	Skipped Outcome = "skipped" // already in the requested state; not an error
	Planned Outcome = "planned" // dry run: nothing changed
)

// Result describes a write. Detail is shown to users as is.
type Result struct {
	Outcome Outcome `json:"outcome"`
	Detail  string  `json:"detail"`
	// Plan lists each change the write makes (or would make on a dry run),
	// one line each, e.g. "deployment prod/myapp: image myapp:v2 -> myapp:v1".
	Plan []string `json:"plan,omitempty"`
}

// Progress is reported while a write converges.
type Progress struct {
	Message string `json:"message"` // kubectl-rollout-status style line
	Updated int    `json:"updated"`
	Ready   int    `json:"ready"`
	Desired int    `json:"desired"`
	Done    bool   `json:"done"`
}

// ProgressFunc receives progress; it must not block for long.
type ProgressFunc func(Progress)

// Platform is one service's deployment target.
//
// Writes take dryRun: when true they validate against the real system
// (server-side dry run where the platform has one) and change nothing,
// returning Outcome Planned with the exact Plan.
type Platform interface {
	// Kind is the adapter name: "kubernetes", "swarm", "compose", "vm", "bluegreen", "simulated".
	Kind() string
	// Target names what this adapter acts on, for messages:
	// "deployment prod/myapp (cluster east)". Never contains secrets.
	Target() string
	// Snapshot reads the current revision, history and health.
	Snapshot(ctx context.Context) (*Snapshot, error)
	// Stop halts an in-progress rollout (runbook §2) so the rollback does
	// not fight it. Already stopped → Skipped.
	Stop(ctx context.Context, dryRun bool) (Result, error)
	// Rollback moves the service to the given revision (runbook §3) and
	// waits until it has converged, reporting progress. The rollback must be
	// a compare-and-set against the state read when it starts, so a
	// concurrent deploy makes it fail instead of fighting it. Already at
	// the target → Skipped.
	Rollback(ctx context.Context, to Revision, dryRun bool, progress ProgressFunc) (Result, error)
	// MarkDoNotDeploy records on the platform, where it can, that rev must
	// never be deployed again, and who said so. Platforms without a place
	// for such a mark return Skipped.
	MarkDoNotDeploy(ctx context.Context, rev Revision, by string) (Result, error)
}

// OwnerPauser is implemented by a Platform whose workload may be owned by
// a GitOps controller (Argo CD, Flux). Before the rollback writes, the
// owner is paused through its documented API, so that it does not put the
// bad version back; after the verification the team changes Git and
// resumes it.
type OwnerPauser interface {
	// OwnerOf reads the workload's owner now; nil when it has none.
	OwnerOf(ctx context.Context) (*Owner, error)
	// PauseOwner pauses the owner's reconciliation for incident. No owner,
	// or one that does not reconcile (Helm) → Skipped and a nil pause.
	// Re-entrant per incident: an owner this incident already paused
	// answers Skipped with the same OwnerPause (the previous setting is
	// kept on the owner object too, so a replica that takes over finds it).
	// An owner that cannot be paused (missing, CRD absent, Forbidden) is a
	// UserError saying why, and nothing is changed.
	PauseOwner(ctx context.Context, incident string, dryRun bool) (Result, *OwnerPause, error)
	// ResumeOwner restores exactly what PauseOwner changed. Already
	// resumed (by hand, or by an earlier call) → Skipped.
	ResumeOwner(ctx context.Context, p OwnerPause) (Result, error)
	// GitChange says what must change in the owner's source so that the
	// rollback sticks: the image bad.Artifact back to good.Artifact.
	GitChange(ctx context.Context, p OwnerPause, bad, good Revision) (GitChange, error)
}

// OwnerPause is what pausing an owner changed, stored with the incident.
type OwnerPause struct {
	Owner    Owner  `json:"owner"`
	Incident string `json:"incident"`
	// Field is the owner's field the pause changed ("spec.syncPolicy.automated",
	// "spec.suspend") and Previous its value before, as JSON ("null" when
	// it was not set); ResumeOwner puts it back exactly.
	Field    string          `json:"field"`
	Previous json.RawMessage `json:"previous"`
	// Changed is false when the owner was already paused (or never
	// reconciled by itself): there is nothing for resume-sync to restore.
	Changed bool      `json:"changed"`
	At      time.Time `json:"at,omitzero"`
	// Resumed is set once the owner was resumed, and by whom.
	Resumed   bool   `json:"resumed,omitempty"`
	ResumedBy string `json:"resumed_by,omitempty"`
}

// GitChange is what must change in Git so that a rollback of a
// GitOps-owned workload sticks.
type GitChange struct {
	Repo     string `json:"repo"`     // repository URL
	Path     string `json:"path"`     // path in the repository
	Revision string `json:"revision"` // the branch / tag / commit the owner follows
	// Source names the object these were read from ("Application argocd/myapp").
	Source string `json:"source"`
	From   string `json:"from"` // the image value to revert
	To     string `json:"to"`   // the value it must become
	// Note is a problem reading part of it, for users.
	Note string `json:"note,omitempty"`
}

// Fallbacks are the runbook FAQ's "what if the rollback also fails" steps.
// Adapters implement it where the platform supports them.
type Fallbacks interface {
	// SetArtifact sets the artifact (image) explicitly, bypassing history.
	SetArtifact(ctx context.Context, artifact string, dryRun bool, progress ProgressFunc) (Result, error)
	// ScaleToZero stops every unit of the service.
	ScaleToZero(ctx context.Context, dryRun bool) (Result, error)
}

// Deployer deploys an artifact as a release pipeline would: a new
// revision on the platform, written compare-and-set against the state it
// read. It returns once the platform took the write, without waiting for
// the rollout (a drill's bad version may never become ready). Only drills
// use it (`/rollback drill`, on targets marked drills: true), to put the
// drill's bad version in place before the runbook runs against it, and
// to put the original back when a drill ends before its rollback.
// Already running artifact → Skipped. With from set, the write is made
// only if the target runs from in the state read (the state the write is
// conditional on): otherwise nothing is written and the error wraps
// ErrConflict, its user message naming what runs.
type Deployer interface {
	Deploy(ctx context.Context, artifact, from string, dryRun bool) (Result, error)
}

// Metrics is a source of the two request-level numbers of the assessment.
// Implementations: Prometheus HTTP API, direct scrape of /metrics, simulated.
type Metrics interface {
	// ErrorRatio is failed requests / all requests over [from, to].
	ErrorRatio(ctx context.Context, from, to time.Time) (Measurement, error)
	// LatencyP95 is the 95th percentile request latency in seconds over [from, to].
	LatencyP95(ctx context.Context, from, to time.Time) (Measurement, error)
}

// RangeMetrics is implemented by a Metrics source that can tell how the
// two numbers moved over time: the "deployment-related?" verdict finds
// when the error ratio or the p95 first crossed its threshold, relative to
// the deploy, and compares other services over the same range.
// Implementations: prom (query_range), scrape (from its background
// history, as far back as it reaches), sim (the simulated history).
type RangeMetrics interface {
	Metrics
	// ErrorRatioRange is the error ratio at every step in [from, to], each
	// point over the window that ends at it.
	ErrorRatioRange(ctx context.Context, from, to time.Time, step, window time.Duration) (Series, error)
	// LatencyP95Range is the p95 latency in seconds, likewise.
	LatencyP95Range(ctx context.Context, from, to time.Time, step, window time.Duration) (Series, error)
}

// Series is one number over time, oldest point first. A point without
// traffic (NaN) is left out. NoData means the source answered but has
// nothing usable for the range (no series, a history that does not reach
// it); Reason says why, for users.
type Series struct {
	Points []Point `json:"points,omitempty"`
	NoData bool    `json:"no_data,omitempty"`
	Reason string  `json:"reason,omitempty"`
	Source string  `json:"source"`
	Query  string  `json:"query,omitempty"`
	// From is where the source's data begins when it starts after the
	// range asked for (a scrape history younger than the range); zero:
	// the range asked for.
	From time.Time `json:"from,omitzero"`
}

// Point is one value of a Series.
type Point struct {
	At    time.Time `json:"at"`
	Value float64   `json:"value"`
}

// NodeChecker is implemented by a Platform that can read the condition of
// the machines its units run on (Kubernetes nodes): a failure that comes
// from the infrastructure is not the deploy's.
type NodeChecker interface {
	// NodeConditions reads every node of the cluster and reports those
	// with a bad condition (not Ready, memory, disk or PID pressure,
	// network unavailable); workload names the nodes the service's units
	// run on (Snapshot.Nodes).
	NodeConditions(ctx context.Context, workload []string) (NodeReport, error)
}

// NodeReport is what NodeConditions found.
type NodeReport struct {
	Nodes    int           `json:"nodes"`    // nodes in the cluster
	Workload int           `json:"workload"` // of them, running the service's units
	Problems []NodeProblem `json:"problems,omitempty"`
}

// NodeProblem is one bad condition of one node.
type NodeProblem struct {
	Node      string    `json:"node"`
	Condition string    `json:"condition"` // "NotReady", "MemoryPressure", …
	Since     time.Time `json:"since,omitzero"`
	Message   string    `json:"message,omitempty"`
	// Workload is set when one of the service's units runs on the node.
	Workload bool `json:"workload,omitempty"`
}

// Measurement is one number with where it came from. NoData means the
// source answered but had nothing usable (no series, NaN, too little
// traffic); a verdict built on it is inconclusive, never healthy.
type Measurement struct {
	Value    float64 `json:"value"`
	NoData   bool    `json:"no_data,omitempty"`
	Reason   string  `json:"reason,omitempty"`   // why NoData, for users
	Source   string  `json:"source"`             // "prometheus", "scrape http://…/metrics"
	Query    string  `json:"query,omitempty"`    // the PromQL or metric names used
	Requests float64 `json:"requests,omitempty"` // traffic seen in the window, when known
	// From and To are the span the value covers, when the source knows
	// it: a direct scrape measures the span of its history (or of two
	// scrapes), which may be shorter than the window asked for. Zero: the
	// window asked for.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
}

// Migration is one database migration that ran since the bad deploy started.
type Migration struct {
	ID          string    `json:"id"`
	Description string    `json:"description,omitempty"`
	AppliedAt   time.Time `json:"applied_at,omitzero"`
	Reversible  bool      `json:"reversible"`
	Destructive bool      `json:"destructive"`
	Why         string    `json:"why,omitempty"` // e.g. "DROP COLUMN email"
	// Compat says whether the previous release runs on the schema the
	// migration left: CompatExpand, CompatContract or CompatUnknown (its
	// SQL could not be read). CompatWhy names the contracting statements,
	// or why the SQL could not be read.
	Compat    string `json:"compat,omitempty"`
	CompatWhy string `json:"compat_why,omitempty"`
}

// Schema compatibility verdicts (Migration.Compat).
const (
	CompatExpand   = "expand"
	CompatContract = "contract"
	CompatUnknown  = "unknown"
)

// MigrationReport says which migrations ran since the bad deploy started.
type MigrationReport struct {
	Tool   string      `json:"tool"`
	Ran    []Migration `json:"ran"`
	Notes  []string    `json:"notes,omitempty"`
	Source string      `json:"source"`
}

// Destructive reports whether any migration that ran looks destructive or
// cannot be reversed; those need a snapshot or point-in-time restore.
func (r MigrationReport) Destructive() bool {
	for _, m := range r.Ran {
		if m.Destructive || !m.Reversible {
			return true
		}
	}
	return false
}

// ExpandOnly reports whether every migration that ran only expanded the
// schema (and lost nothing): the previous release runs on the new schema,
// so rolling back the app alone is safe and the database step becomes an
// approver's choice. Any contracting or unreadable migration: false.
func (r MigrationReport) ExpandOnly() bool {
	if len(r.Ran) == 0 {
		return false
	}
	for _, m := range r.Ran {
		if m.Compat != CompatExpand || m.Destructive {
			return false
		}
	}
	return true
}

// DBRun identifies one run of a database step (a down migration or a
// restore), so that a run resumed by another replica finds what an
// earlier attempt of the same incident started.
type DBRun struct {
	// Incident is the incident's id ("RB-42"). The down Job and the
	// restored instance carry it (a label, a tag) and are named after it.
	Incident string
	// Resumed is set when an earlier attempt of this step, on a replica
	// that stopped, may already have started it.
	Resumed bool
}

// Database is a service's database as the runbook §4 needs it.
// Implementation: package database (migration table check, down command,
// RDS restore).
//
// RollBack and Restore are re-entrant per incident: when a down Job or a
// restore for run.Incident already exists (started by a replica that
// stopped), the call attaches to it — follows it to its end and reports
// its outcome — and never starts a second one. A down command that ran as
// a local process of the stopped replica (down.kind command) is never run
// again either: on the same host a resumed RollBack follows it to its end
// through its run directory; elsewhere it cannot be followed. Either way
// it reports success when the migration table is back, else a user error
// saying what to check.
type Database interface {
	// Detect reports migrations applied since the bad deploy started.
	Detect(ctx context.Context, since time.Time) (MigrationReport, error)
	// DownPlan describes the reversible rollback command, for the approval message.
	DownPlan(r MigrationReport) string
	// RollBack runs the reversible down migration(s) applied since the
	// deploy started, streaming output to out, and checks the migration
	// table afterwards. bad is the release whose image carries them.
	// Re-entrant per run.Incident (see above).
	RollBack(ctx context.Context, run DBRun, since time.Time, bad Revision, out io.Writer) (string, error)
	// RestorePlan describes the snapshot / point-in-time restore exactly
	// (which snapshot, the new instance, the data-loss window), for the
	// approvers; problems finding one are part of the text. The new
	// instance is named after incident, as Restore names it.
	RestorePlan(ctx context.Context, incident string, before time.Time) string
	// Restore restores the database to before the deploy (a new instance)
	// and returns what the team must do next (endpoint switch, data-loss window).
	// Re-entrant per run.Incident (see above): a restore already started
	// for it is waited for, not started again.
	Restore(ctx context.Context, run DBRun, before time.Time, progress func(string)) (string, error)
}

// Endpoint switch modes (EndpointSwitcher.SwitchMode).
const (
	// SwitchRename: rollbot renames the original RDS instance aside and
	// gives the restored one its identifier, so the endpoint's DNS name
	// stays and the app's configuration does not change.
	SwitchRename = "rename"
	// SwitchSecret: rollbot writes the restored endpoint into a
	// Kubernetes Secret key and restarts the workload that reads it.
	SwitchSecret = "secret"
	// SwitchManual: a DB approver switches the endpoint by hand and
	// presses "Endpoint switched".
	SwitchManual = "manual"
)

// EndpointSwitcher is implemented by a Database whose restore creates a
// new instance: the app must be pointed at the restored data before the
// app rollback (runbook §4), or the old release runs against the database
// the bad migration changed.
type EndpointSwitcher interface {
	// SwitchMode is SwitchRename, SwitchSecret or SwitchManual; "" when no
	// switch step is needed (no restore configured: restored by hand).
	SwitchMode() string
	// SwitchPlan says what the switch does (rename, secret) or what the
	// DB approver must do by hand (manual), for the thread. at is the
	// switch step's start, as SwitchEndpoint gets it.
	SwitchPlan(ctx context.Context, incident string, at time.Time) string
	// SwitchEndpoint points the app at the incident's restored instance
	// (rename and secret). Re-entrant per run.Incident: it reads the
	// current names / Secret first and does only what is left, so a
	// resumed run never renames or restarts twice. at must be the same on
	// every attempt (it names the renamed original). A failure is a
	// UserError that says what is left where and what to do next.
	SwitchEndpoint(ctx context.Context, run DBRun, at time.Time, steps SwitchSteps) (string, error)
}

// SwitchSteps are the caller's hooks into an endpoint switch.
type SwitchSteps struct {
	// Before is called before each write with what it does; an error
	// stops the switch before that write.
	Before func(ctx context.Context, what string) error
	// Note reports what the switch sees while it waits.
	Note func(line string)
}

// Prober runs the verification probes of runbook §5.
// Implementations: package probe (health URLs and a smoke-test command), simulated.
type Prober interface {
	// Health checks the service's health endpoints; ok=false with a detail when failing.
	Health(ctx context.Context) (ok bool, detail string, err error)
	// Smoke runs the critical-user-flow smoke test.
	Smoke(ctx context.Context) (ok bool, detail string, err error)
}

// AccessChecker is implemented by a Platform or Database that can ask its
// system whether rollbot's credentials allow every operation it will need
// (Kubernetes RBAC, the down Job's Role). The bot calls it at start, so a
// missing permission is found before the incident, not during it.
type AccessChecker interface {
	// CheckAccess returns an error naming what is missing (a UserError
	// with the fix); nil when everything is allowed.
	CheckAccess(ctx context.Context) error
}

// SchemaRecorder is implemented by a Database that keeps rollbot's own
// record of the applied migration versions, for the tools whose table
// stores no applied time (golang-migrate, Rails). The bot calls it
// periodically.
type SchemaRecorder interface {
	// RecordSchema stores the versions applied now, with the revision running now.
	RecordSchema(ctx context.Context) error
}

// ImageMark says who marked an image DO_NOT_DEPLOY, in which incident
// and why (runbook §6).
type ImageMark struct {
	Service  string
	Incident string
	By       string // the Slack user who confirmed the rollback
	Reason   string
	At       time.Time
}

// ImageMarkResult is what a registry mark did.
type ImageMarkResult struct {
	Repository string // "registry.example.com/team/app"
	Digest     string // the bad image's manifest digest
	Referrer   string // the mark artifact's manifest digest
	// Via is how registries find the mark: "referrers API", or "fallback
	// tag sha256-…" on registries without that API.
	Via        string
	TagDeleted string // the tag deleted, with registry.delete_tag
	// Existing is set when the incident's mark was already there (made
	// before a takeover): nothing was written again.
	Existing bool
	// Link points at the mark artifact's manifest in the registry.
	Link string
}

// Registry marks bad images in their OCI registry, so that tools other
// than rollbot (CI/CD, admission, people) can see it: an artifact of
// rollbot's own artifactType whose subject is the bad image's manifest.
// Implementation: package registry (oras-go).
type Registry interface {
	// Target names the registry, for messages (never credentials).
	Target() string
	// Plan says what MarkImage will do to image, one line, for the
	// confirmation ("mark … in …; delete tag v3").
	Plan(image string) string
	// MarkImage pushes the mark for image (a reference with a tag or
	// digest). It is re-entrant per m.Incident: a mark of that incident
	// that already refers to the image is found, not made twice.
	MarkImage(ctx context.Context, image string, m ImageMark) (ImageMarkResult, error)
}

// AdmissionGuard keeps a DO_NOT_DEPLOY image out of a cluster by itself
// (Kubernetes: a ValidatingAdmissionPolicy per namespace). Implementation:
// kube.Admission.
type AdmissionGuard interface {
	// Forbid refuses image (and digest, when known) from now on; an image
	// already refused is Skipped.
	Forbid(ctx context.Context, image, digest string, m ImageMark) (Result, error)
	// Allow lifts the refusal of the image whose reference or tag is
	// version; none is Skipped.
	Allow(ctx context.Context, version string) (Result, error)
	// Where names what refuses it, for messages ("namespace prod").
	Where() string
}

// Capturer is implemented by a Platform that can keep the evidence of the
// bad version (logs, events, task errors) before a write removes it
// (runbook: "roll back and keep the evidence"). The bot calls it once per
// incident, right before the first write, within its own short budget:
// ctx ends when that budget does, and whatever was read by then is kept.
//
// Capture must stay within lim: at most lim.Units bad units (pods, tasks,
// containers, hosts; the unhealthy ones first), at most lim.Lines lines
// and lim.SourceBytes bytes of each source (the last ones). A source that
// cannot be read is reported in its Err, not as an error: the error is
// only for a capture that could not start at all (the workload cannot be
// read). Implemented by kube, swarm, compose and vm.
type Capturer interface {
	Capture(ctx context.Context, lim CaptureLimits) (Evidence, error)
}

// CaptureLimits bound a capture (see Capturer).
type CaptureLimits struct {
	Units       int `json:"units" yaml:"units"`               // bad units captured (K); default 3
	Lines       int `json:"lines" yaml:"lines"`               // last lines per source (N); default 200
	SourceBytes int `json:"source_bytes" yaml:"source_bytes"` // per source; default 64 KiB
	TotalBytes  int `json:"total_bytes" yaml:"total_bytes"`   // all sources; default 512 KiB
}

// Evidence is what a capture kept, one Source per log or event list.
type Evidence struct {
	Sources []EvidenceSource `json:"sources"`
	// Missing says what could not be captured and why, for users
	// ("pod myapp-1 previous container: no previous container").
	Missing []string `json:"missing,omitempty"`
}

// EvidenceSource is one captured log or event list.
type EvidenceSource struct {
	// Name says where it comes from: "pod prod/myapp-7d9-x container app (previous)".
	Name string `json:"name"`
	// Kind is "log", "events" or "errors".
	Kind string `json:"kind"`
	Text string `json:"text"`
	// Truncated is set when older lines or bytes were cut to the limits.
	Truncated bool `json:"truncated,omitempty"`
}

// UserError carries a message that is safe and useful to show in Slack,
// apart from the underlying cause, which goes to the log only.
type UserError struct {
	Msg   string // what happened and what to do next
	Cause error
}

func (e *UserError) Error() string {
	if e.Cause == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Cause.Error()
}

func (e *UserError) Unwrap() error { return e.Cause }

// Userf wraps cause with a user-facing message.
func Userf(cause error, format string, args ...any) error {
	return &UserError{Msg: fmt.Sprintf(format, args...), Cause: cause}
}

// UserMessage returns the user-facing text of err, if it carries one.
func UserMessage(err error) (string, bool) {
	var ue *UserError
	if errors.As(err, &ue) {
		return ue.Msg, true
	}
	return "", false
}

// NewRef returns a new reference id: a text a user sees that cannot say
// what went wrong says "see the bot log, ref <id>", and the log line that
// holds the cause carries ref=<id>. Every user text follows one policy:
// a curated message (UserError) or a reference, never a raw error.
func NewRef() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// SeeLog logs msg with err and a new reference id at warning level, and
// returns the words for the user: "see the bot log, ref <id>".
func SeeLog(ctx context.Context, log *slog.Logger, msg string, err error, attrs ...any) string {
	ref := NewRef()
	log.WarnContext(ctx, msg, append(attrs, "ref", ref, "err", err)...)
	return "see the bot log, ref " + ref
}

type actorKey struct{}

// actor is who a write acts for: the Slack user whose click started it,
// the Slack user groups of theirs that matter, and why those could not be
// looked up.
type actor struct {
	user      string
	groups    []string
	groupsErr error
}

// WithActor marks ctx as acting for a Slack user (the one whose click
// started the write) and the Slack user groups (S… ids) they belong to,
// for adapters that write with that person's own identity on the platform
// (Kubernetes impersonation). It replaces what an outer WithActor said.
func WithActor(ctx context.Context, slackUser string, groups ...string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor{user: slackUser, groups: slices.Clone(groups)})
}

// WithActorGroupsError records that the actor's Slack user groups could
// not be looked up (err says why): an adapter that would have chosen an
// identity by group refuses the write, saying so, rather than acting as
// nobody or as itself.
func WithActorGroupsError(ctx context.Context, err error) context.Context {
	a, _ := ctx.Value(actorKey{}).(actor)
	a.groupsErr = err
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the Slack user WithActor put in ctx, or "".
func ActorFrom(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(actor)
	return a.user
}

// ActorGroupsFrom returns the actor's Slack user groups WithActor put in
// ctx (those of the groups that matter that the actor belongs to).
func ActorGroupsFrom(ctx context.Context) []string {
	a, _ := ctx.Value(actorKey{}).(actor)
	return slices.Clone(a.groups)
}

// ActorGroupsError returns what WithActorGroupsError recorded: nil when
// the actor's groups were looked up, or did not need to be.
func ActorGroupsError(ctx context.Context) error {
	a, _ := ctx.Value(actorKey{}).(actor)
	return a.groupsErr
}

// SlackGroupMapper is implemented by a Platform that chooses the identity
// a write runs with by the clicker's Slack user groups (Kubernetes
// `impersonate:` keyed by user-group ids). The engine looks up the
// clicker's membership in exactly these groups, and only when there are
// any, before the platform writes for them.
type SlackGroupMapper interface {
	// SlackGroups lists the Slack user-group ids (S…) the platform maps,
	// sorted.
	SlackGroups() []string
}

// ErrConflict is wrapped by writes whose compare-and-set precondition failed
// because someone else changed the target concurrently.
var ErrConflict = errors.New("concurrent change")

// ErrNotFound is wrapped when the requested revision or target does not exist.
var ErrNotFound = errors.New("not found")

// LastKnownGood picks the rollback target from a newest-first history:
// the newest revision older than current whose artifact differs from the
// current one, that the platform does not rule out (Revision.Unusable)
// and that is not marked DO_NOT_DEPLOY, either on the platform
// (Revision.DoNotDeploy) or by rollbot (marked). It is not blindly N-1.
func LastKnownGood(history []Revision, current Revision, marked func(Revision) bool) (Revision, bool) {
	seenCurrent := false
	for _, r := range history {
		if r.ID == current.ID {
			seenCurrent = true
			continue
		}
		if !seenCurrent {
			continue // newer than current (e.g. a rollback renumbered it)
		}
		if r.Artifact == current.Artifact || r.DoNotDeploy || r.Unusable != "" || (marked != nil && marked(r)) {
			continue
		}
		return r, true
	}
	return Revision{}, false
}

// Package handlers runs the rollback runbook (shared RUNBOOK.md) from an
// incident channel: one file per runbook step (assess, confirm, rollback,
// database, verify, postactions), all Block Kit in messages.go. It knows
// Slack only through the small Chat interface, and platforms only through
// the platforms package's interfaces.
package handlers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"rollbot/platforms"
	"rollbot/state"
)

// Msg is a Slack message: fallback text plus Block Kit blocks.
type Msg struct {
	Text   string
	Blocks []slack.Block
}

// Chat is what the runbook needs from Slack.
type Chat interface {
	Post(ctx context.Context, channel, threadTS string, m Msg) (ts string, err error)
	Update(ctx context.Context, channel, ts string, m Msg) error
	Ephemeral(ctx context.Context, channel, user string, m Msg) error
	Schedule(ctx context.Context, channel string, at time.Time, m Msg) error
	OpenModal(ctx context.Context, triggerID string, v slack.ModalViewRequest) error
	GroupMembers(ctx context.Context, group string) ([]string, error)
	// Upload shares a file into a thread (Slack's upload flow:
	// files.getUploadURLExternal, the upload, files.completeUploadExternal).
	Upload(ctx context.Context, channel, threadTS string, f File) error
}

// Access lists who may do something: Slack user ids and user group ids.
type Access struct {
	Users  []string `yaml:"users"`
	Groups []string `yaml:"groups"`
}

// Empty reports whether nobody is listed.
func (a Access) Empty() bool { return len(a.Users) == 0 && len(a.Groups) == 0 }

// Thresholds are the runbook §1 limits.
type Thresholds struct {
	ErrorRate     float64       `yaml:"error_rate"`     // ratio, 0.01 = 1%
	LatencyFactor float64       `yaml:"latency_factor"` // p95 > factor × baseline
	Restarts      int           `yaml:"restarts"`       // > n in RestartWindow
	UnreadyRatio  float64       `yaml:"unready_ratio"`  // > ratio of pods not ready
	BaselineP95   time.Duration `yaml:"baseline_p95"`   // fixed baseline instead of a measured one
}

// DefaultThresholds are the runbook's values.
func DefaultThresholds() Thresholds {
	return Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5}
}

// Service is one service rollbot may roll back.
type Service struct {
	// Name is the service's key: its name, or "<name>@<env>" for a
	// service defined per environment (see ServiceKey). Locks, incidents,
	// marks and the timeline are all keyed by it, so environments never
	// share them.
	Name string
	// Env is the environment of this definition; "" for a service
	// without environments.
	Env string
	// Channels are where /rollback sees the service (ids or names);
	// empty: Options.IncidentChannels.
	Channels []string
	// Drill configures practice rollbacks; nil: drills are refused.
	Drill     *Drill
	Platform  platforms.Platform
	Metrics   platforms.Metrics  // nil: no request metrics
	Database  platforms.Database // nil: no database configured
	Health    platforms.Prober   // nil: no health URL / smoke test configured
	HasHealth bool
	HasSmoke  bool
	// SmokeTimeout is how long the verification gives the smoke test (it
	// bounds itself); zero: query_timeout, like the other checks.
	SmokeTimeout time.Duration
	Thresholds   Thresholds
	Approvers    Access
	// DeployLock: after a completed rollback the deploy gate refuses every
	// version of the service until an approver runs /rollback unlock.
	DeployLock bool
	// Registry, when set, marks the bad image in its OCI registry.
	Registry platforms.Registry
	// Admission, when set, makes the cluster refuse the bad image.
	Admission platforms.AdmissionGuard
	// DBApprovers may approve the database step; DestructiveApprovals
	// distinct ones are needed for a destructive restore (N of M).
	DBApprovers          Access
	DestructiveApprovals int
	// Capture bounds the evidence kept before the first write, when the
	// platform can capture (platforms.Capturer).
	Capture        platforms.CaptureLimits
	AssessWindow   time.Duration // current-value window, default 5m
	BaselineWindow time.Duration // baseline window before the deploy, default 30m
	// Verdict tunes the assessment's "Deployment-related?" row.
	Verdict VerdictConfig
	// VerifySoak is how long every automatic verification item must hold
	// before the rollback counts as verified (0: Options.VerifySoak).
	VerifySoak time.Duration
	// VerifyRecent is the shortest recent window each verification round
	// also judges the request metrics on (0: Options.VerifyRecent).
	VerifyRecent time.Duration
}

// Options tune the engine; zero values take defaults.
type Options struct {
	IncidentChannels []string      // ids or names (without #); empty = any channel
	LockTTL          time.Duration // 30m
	ApprovalTTL      time.Duration // 15m
	PostmortemAfter  time.Duration // 20h, at most 24h
	VerifyTimeout    time.Duration // 5m: how long the service has to recover before the soak must start
	VerifySoak       time.Duration // 3m: how long each automatic verification item must hold
	VerifyRecent     time.Duration // 30s: the shortest recent window the request metrics are also judged on
	VerifyInterval   time.Duration // 10s
	QueryTimeout     time.Duration // 5s per metric query
	StepTimeout      time.Duration // deprecated name of Budgets.Rollout
	UpdateInterval   time.Duration // 1s between chat.update of one message
	BotID            string        // rollbot's instance name for logs
	// Replica names this process among the replicas sharing one Redis;
	// it owns the incidents it works on (default: host-pid-random).
	Replica string
	// Lease is how long an owner's claim on a working incident lasts
	// without a heartbeat; after it, another replica takes over (15s).
	Lease   time.Duration
	Budgets Budgets
	// Metrics receives the engine's events (nil: none).
	Metrics Metrics
	// Redact replaces known secrets in text rollbot keeps or uploads
	// (the captured evidence); nil: none known.
	Redact func(string) string
}

// Metrics receives what the engine counts, for the bot's /metrics.
type Metrics interface {
	RollbackFinished(outcome string)
	StepDone(step string, d time.Duration)
	LeaseTakeover()
}

type noMetrics struct{}

func (noMetrics) RollbackFinished(string)        {}
func (noMetrics) StepDone(string, time.Duration) {}
func (noMetrics) LeaseTakeover()                 {}

// DefaultReplica is a replica id unique to this process.
func DefaultReplica() string {
	host, _ := os.Hostname()
	b := make([]byte, 3)
	rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", firstNonEmpty(host, "rollbot"), os.Getpid(), hex.EncodeToString(b))
}

// Engine runs the runbook.
type Engine struct {
	chat     Chat
	store    *state.Store
	services map[string]*Service
	log      *slog.Logger
	opt      Options
	now      func() time.Time
	metrics  Metrics

	base    context.Context // Run's context; background work derives from it
	wg      sync.WaitGroup
	groupMu sync.Mutex
	groups  map[string]groupCache
	nudges  nudges
}

type groupCache struct {
	members []string
	at      time.Time
}

// New builds an engine. base is the bot's run context: background steps
// derive from it so they stop when the bot stops.
func New(base context.Context, chat Chat, store *state.Store, services []*Service, opt Options, log *slog.Logger) *Engine {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opt.LockTTL, 30*time.Minute)
	def(&opt.ApprovalTTL, 15*time.Minute)
	def(&opt.PostmortemAfter, 20*time.Hour)
	def(&opt.VerifyTimeout, 5*time.Minute)
	def(&opt.VerifyInterval, 10*time.Second)
	def(&opt.QueryTimeout, 5*time.Second)
	def(&opt.UpdateInterval, time.Second)
	def(&opt.Lease, 15*time.Second)
	def(&opt.VerifySoak, DefaultVerifySoak)
	def(&opt.VerifyRecent, DefaultVerifyRecent)
	if opt.Budgets.Rollout <= 0 {
		opt.Budgets.Rollout = opt.StepTimeout
	}
	soak := opt.VerifySoak
	for _, s := range services {
		soak = max(soak, s.VerifySoak)
	}
	opt.Budgets.defaults(opt.VerifyTimeout, soak)
	if opt.Replica == "" {
		opt.Replica = DefaultReplica()
	}
	if opt.Metrics == nil {
		opt.Metrics = noMetrics{}
	}
	if store != nil {
		store.SetLease(opt.Lease)
	}
	m := make(map[string]*Service, len(services))
	for _, s := range services {
		def(&s.AssessWindow, 5*time.Minute)
		def(&s.BaselineWindow, 30*time.Minute)
		if s.Thresholds == (Thresholds{}) {
			s.Thresholds = DefaultThresholds()
		}
		if s.DestructiveApprovals <= 0 {
			s.DestructiveApprovals = 2
		}
		m[s.Name] = s
	}
	return &Engine{chat: chat, store: store, services: m, log: log.With("replica", opt.Replica), opt: opt, now: time.Now, base: base,
		groups: map[string]groupCache{}, metrics: opt.Metrics}
}

// SetClock replaces the engine's clock (tests).
func (e *Engine) SetClock(now func() time.Time) { e.now = now }

// Wait blocks until background steps have finished.
func (e *Engine) Wait() { e.wg.Wait() }

// Replica is this engine's replica id.
func (e *Engine) Replica() string { return e.opt.Replica }

// SlashCommand is an incoming /rollback.
type SlashCommand struct {
	UserID, ChannelID, ChannelName, Text, TriggerID string
}

// Action is a button click.
type Action struct {
	UserID, ChannelID, MessageTS, ActionID, Value, TriggerID string
}

// ViewSubmission is a submitted modal.
type ViewSubmission struct {
	UserID, CallbackID, PrivateMetadata string
	// Values[blockID][actionID] is the submitted text.
	Values map[string]map[string]string
}

// Action ids: a button's value is always an incident id (an operation id),
// never a command line.
const (
	ActConfirm       = "rollback_confirm"
	ActCancel        = "rollback_cancel"
	ActDBApprove     = "db_approve"
	ActDBRefuse      = "db_refuse"
	ActFallbackImage = "fallback_set_image"
	ActFallbackZero  = "fallback_scale_zero"
	ActRetryVerify   = "verify_retry"
	ActEnd           = "rollback_end"    // close a failed rollback, release the lock
	ActPostDone      = "postaction_done" // value: incident id + "|" + item key
	ActOwnerOverride = "owner_override"  // roll back although the GitOps owner could not be paused
	ActSwitched      = "endpoint_switched"
	ActDBSkip        = "db_skip" // expand-only migrations: roll back the app only

	viewDBApprove = "db_approve_modal"
)

// HandleCommand serves a /rollback slash command. A channel sees only
// the services bound to it (services.<name>.channels, default the
// incident channels): help, "did you mean" and every command stay
// within them.
func (e *Engine) HandleCommand(ctx context.Context, sc SlashCommand) {
	cmd, err := ParseCommand(sc.Text)
	if err != nil {
		var pe *ParseError
		msg := "internal error"
		if errors.As(err, &pe) {
			msg = pe.Msg
		}
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, usageMsg(msg))
		return
	}
	visible := e.visible(sc.ChannelID, sc.ChannelName)
	if cmd.Kind == CmdHelp {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, helpMsg(names(visible)))
		return
	}
	if len(visible) == 0 {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, notIncidentChannelMsg(e.allChannels()))
		return
	}
	if cmd.Service != "" {
		svc, ok := e.resolve(ctx, sc, cmd, visible)
		if !ok {
			return
		}
		cmd.Service, cmd.Env = svc.Name, svc.Env
	}
	switch cmd.Kind {
	case CmdRollback:
		e.startRollback(ctx, sc, cmd)
	case CmdStatus:
		e.status(ctx, sc, cmd, visible)
	case CmdHistory:
		e.history(ctx, sc, cmd)
	case CmdTimeline:
		e.timeline(ctx, sc, cmd)
	case CmdDrill:
		e.startDrill(ctx, sc, cmd)
	case CmdDrills:
		e.drills(ctx, sc, cmd)
	case CmdUnlock:
		e.unlock(ctx, sc, cmd)
	case CmdAllow:
		e.allow(ctx, sc, cmd)
	case CmdResumeSync:
		e.resumeSync(ctx, sc, cmd)
	}
}

// HandleAction serves a button click.
func (e *Engine) HandleAction(ctx context.Context, a Action) {
	switch a.ActionID {
	case ActConfirm:
		e.confirm(ctx, a)
	case ActCancel:
		e.cancel(ctx, a)
	case ActDBApprove:
		e.dbApproveClicked(ctx, a)
	case ActDBRefuse:
		e.dbRefuse(ctx, a)
	case ActFallbackImage, ActFallbackZero:
		e.fallback(ctx, a)
	case ActRetryVerify:
		e.retryVerify(ctx, a)
	case ActEnd:
		e.end(ctx, a)
	case ActPostDone:
		e.postActionDone(ctx, a)
	case ActCheckOK, ActCheckNotOK:
		e.manualCheck(ctx, a)
	case ActOwnerOverride:
		e.overrideOwner(ctx, a)
	case ActSwitched:
		e.switchedClicked(ctx, a)
	case ActDBSkip:
		e.dbSkip(ctx, a)
	default:
		e.log.Warn("unknown action", "action", a.ActionID)
	}
}

// HandleView serves a modal submission and returns inline errors by block id.
func (e *Engine) HandleView(ctx context.Context, v ViewSubmission) map[string]string {
	if v.CallbackID == viewDBApprove {
		return e.dbApproveSubmitted(ctx, v)
	}
	return nil
}

// allowed reports whether user is in acc, resolving user groups.
func (e *Engine) allowed(ctx context.Context, acc Access, user string) bool {
	for _, u := range acc.Users {
		if u == user {
			return true
		}
	}
	for _, g := range acc.Groups {
		for _, m := range e.groupMembers(ctx, g) {
			if m == user {
				return true
			}
		}
	}
	return false
}

func (e *Engine) groupMembers(ctx context.Context, g string) []string {
	ms, err := e.freshGroupMembers(ctx, g)
	if err != nil {
		e.log.Warn("resolve user group", "group", g, "err", err)
		e.groupMu.Lock()
		defer e.groupMu.Unlock()
		return e.groups[g].members // stale beats nothing; empty denies
	}
	return ms
}

// groupTTL is how long a user group's members are reused before Slack is
// asked again (usergroups.users.list is Tier 2: 20 calls a minute).
const groupTTL = time.Minute

// freshGroupMembers is the members of Slack user group g, from the cache
// when younger than groupTTL, else from Slack; an error when Slack cannot
// say (never a stale list: callers decide what that means).
func (e *Engine) freshGroupMembers(ctx context.Context, g string) ([]string, error) {
	e.groupMu.Lock()
	c, ok := e.groups[g]
	e.groupMu.Unlock()
	if ok && e.now().Sub(c.at) < groupTTL {
		return c.members, nil
	}
	ms, err := e.chat.GroupMembers(ctx, g)
	if err != nil {
		return nil, err
	}
	e.groupMu.Lock()
	e.groups[g] = groupCache{members: ms, at: e.now()}
	e.groupMu.Unlock()
	return ms, nil
}

// actingFor marks ctx as acting for the Slack user whose click a platform
// write carries out (platforms.WithActor), with those of the user's Slack
// user groups that svc's platform maps to an identity
// (platforms.SlackGroupMapper: Kubernetes `impersonate:` keyed by group
// ids). Slack is asked only when the platform maps groups, and only about
// those groups (cached for groupTTL). A group whose members Slack cannot
// list makes the lookup fail: that is recorded in ctx
// (platforms.WithActorGroupsError) and the platform refuses a write that
// depended on groups, saying the lookup failed, rather than acting as
// someone else (a clicker mapped by user id is not affected).
func (e *Engine) actingFor(ctx context.Context, svc *Service, user string) context.Context {
	m, ok := svc.Platform.(platforms.SlackGroupMapper)
	if !ok || user == "" {
		return platforms.WithActor(ctx, user)
	}
	var in []string
	var errs []error
	for _, g := range m.SlackGroups() {
		ms, err := e.freshGroupMembers(ctx, g)
		if err != nil {
			e.log.Warn("resolve user group for impersonation", "service", svc.Name, "group", g, "err", err)
			errs = append(errs, fmt.Errorf("slack user group %s: %w", g, err))
			continue
		}
		if slices.Contains(ms, user) {
			in = append(in, g)
		}
	}
	ctx = platforms.WithActor(ctx, user, in...)
	if len(errs) > 0 {
		ctx = platforms.WithActorGroupsError(ctx, errors.Join(errs...))
	}
	return ctx
}

// who renders an access list for messages: "<@U1>, @oncall".
func who(acc Access) string {
	var parts []string
	for _, u := range acc.Users {
		parts = append(parts, "<@"+u+">")
	}
	for _, g := range acc.Groups {
		parts = append(parts, "<!subteam^"+g+">")
	}
	if len(parts) == 0 {
		return "nobody (configure approvers)"
	}
	return strings.Join(parts, ", ")
}

// record appends a timeline event; a failure to record is logged, and
// reported to the caller so a step does not act without its trace.
func (e *Engine) record(ctx context.Context, id, actor, step, detail string) error {
	err := e.store.Append(ctx, id, state.Event{Actor: actor, Step: step, Detail: detail, Time: e.now()})
	if err != nil {
		e.log.Error("timeline append failed", "incident", id, "op", step, "err", err)
	}
	return err
}

func (e *Engine) ephemeral(ctx context.Context, channel, user string, m Msg) {
	if err := e.chat.Ephemeral(ctx, channel, user, m); err != nil {
		e.log.Error("post ephemeral", "err", err)
	}
}

func (e *Engine) post(ctx context.Context, channel, thread string, m Msg) string {
	ts, err := e.chat.Post(ctx, channel, thread, m)
	if err != nil {
		e.log.Error("post message", "err", err)
	}
	return ts
}

func (e *Engine) update(ctx context.Context, channel, ts string, m Msg) {
	if ts == "" {
		e.log.Warn("update of a message whose ts is unknown; skipped")
		return
	}
	if err := e.chat.Update(ctx, channel, ts, m); err != nil {
		e.log.Error("update message", "err", err)
	}
}

// userText is what a Slack user may see of err: its user message, or a
// short reference into the bot's log. Raw SDK errors (which may carry
// hosts, ARNs or worse) stay in the log.
func (e *Engine) userText(err error, op string, attrs ...any) string {
	if msg, ok := platforms.UserMessage(err); ok {
		e.log.Warn(op+" failed", append(attrs, "err", err)...)
		return msg
	}
	if errors.Is(err, context.DeadlineExceeded) {
		e.log.Warn(op+" timed out", append(attrs, "err", err)...)
		return op + " timed out"
	}
	id := platforms.NewRef()
	e.log.Error(op+" failed", append(attrs, "ref", id, "err", err)...)
	return fmt.Sprintf("internal error during %s (see the bot log, ref %s)", op, id)
}

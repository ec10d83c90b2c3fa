package bot

// kill -9 of the replica that owns an incident, at each step of a rollback
// (#12), on any platform: the steps, how a test holds the owner in each
// long enough to kill it there, the flow around the kill and what is
// checked after it. A platform brings a killTarget: the replicas, the
// holds that depend on the platform, and its own count of the writes. The
// simulated platform (TestReplicasKillOwnerAtEachStep) and the real
// Kubernetes control plane (TestReplicasKillOwnerOnKubernetes) run the
// same table through killOwnerAt.

import (
	"context"
	"database/sql"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rollbot/handlers"
	"rollbot/state"
	"rollbot/testkit/dbtest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// The steps at which the owner is killed.
const (
	atAssessing     = "assessing"
	atConfirmation  = "awaiting confirmation"
	atDecisionShow  = "awaiting confirmation, before the buttons"
	atStopping      = "stopping"
	atRollingBack   = "rolling back"
	atVerifying     = "verifying"
	atDBApproval    = "awaiting DB approval"
	atDBRequest     = "awaiting DB approval, before the request"
	atDownMigration = "down migration running"
)

// killStep is a step at which the test kills the owner.
type killStep struct {
	name string
	// status is the incident's when the owner is killed.
	status state.Status
	// waits: the incident waits for a person, no work is in flight, and
	// the person's click is served by a live replica: no takeover. Else
	// another replica takes the incident over in status: the work in
	// flight, or (a wait whose message the owner never got on Slack)
	// showing the buttons.
	waits bool
	// db: the bad release migrated the database, so the database step
	// comes first.
	db bool
}

var killSteps = []killStep{
	{name: atAssessing, status: state.Assessing},
	{name: atConfirmation, status: state.AwaitingConfirm, waits: true},
	{name: atDecisionShow, status: state.AwaitingConfirm},
	{name: atStopping, status: state.Stopping},
	{name: atRollingBack, status: state.RollingBack},
	{name: atVerifying, status: state.Verifying},
	{name: atDBApproval, status: state.AwaitingDBApprove, waits: true, db: true},
	{name: atDBRequest, status: state.AwaitingDBApprove, db: true},
	{name: atDownMigration, status: state.RollingBackDB, db: true},
}

func (k killStep) takeovers() int {
	if k.waits {
		return 0
	}
	return 1
}

// A hold keeps the owner in a step long enough to kill it there. It is
// made before the /rollback command.
type hold struct {
	// reached waits until the owner is in the step and returns the
	// incident as it is then.
	reached func() *state.Incident
	// release ends the hold once the owner is dead (nil: nothing to end).
	release func()
	// arm, when set, starts the hold right before the confirmation's
	// click (a hold on a Slack method the steps before it use too).
	arm func()
}

// killTarget is one service, myapp, served by three replicas, on one
// platform.
type killTarget struct {
	r *replicaSet
	// holds are the platform's own holds by step; the other steps are
	// held alike on every platform (heldAlike).
	holds map[string]func() hold
	// db is the service's database (the steps with db).
	db *gmSchema
	// people does what people do after the kill, besides the decisions,
	// for the rollback to end (the checks by hand without metrics).
	people func()
	// check asserts the platform's end: each write made once, counted on
	// the platform's side.
	check func(in *state.Incident)
}

// heldAlike is the hold of step k where it does not depend on the
// platform: Slack keeps the owner's first post waiting while it assesses;
// the waits for a person hold by themselves, once the message with the
// buttons is up (a person acts on what they see); else the status.
func heldAlike(r *replicaSet, k killStep) hold {
	status := func() *state.Incident { return r.waitStatus("RB-1", 30*time.Second, is(k.status), string(k.status)) }
	// shown: the wait's message is on Slack and recorded so; a kill then
	// leaves nothing in flight.
	shown := func() *state.Incident {
		return r.waitIncident("RB-1", 30*time.Second, string(k.status)+", its message recorded shown", func(in *state.Incident) bool {
			return in.Status == k.status && in.Show == ""
		})
	}
	owing := func(in *state.Incident) *state.Incident {
		if in.Show == "" {
			r.t.Fatalf("RB-1 is %s and owes no message while Slack holds it", in.Status)
		}
		return in
	}
	switch k.name {
	case atAssessing:
		// The owner posts the thread's first message as it starts to
		// assess; a replica that takes over posts it again.
		posts := len(r.emu.CallsTo("chat.postMessage"))
		r.emu.DelayMethod("chat.postMessage", time.Minute)
		return hold{
			reached: func() *state.Incident {
				wait.For(r.t, 30*time.Second, "the owner's first post, kept waiting by Slack", func() (bool, error) {
					return len(r.emu.CallsTo("chat.postMessage")) > posts, nil
				})
				return status()
			},
			release: func() { r.emu.DelayMethod("chat.postMessage", 0) },
		}
	case atConfirmation:
		return hold{reached: func() *state.Incident {
			r.wait("assessment with buttons", hasAction(handlers.ActConfirm))
			return shown()
		}}
	case atDecisionShow:
		// Slack keeps the update that puts the buttons on the assessment
		// waiting; the owner has already moved to awaiting confirmation.
		updates := len(r.emu.CallsTo("chat.update"))
		r.emu.DelayMethod("chat.update", time.Minute)
		return hold{
			reached: func() *state.Incident {
				waitCall(r, "chat.update", updates, handlers.ActConfirm)
				return owing(status())
			},
			release: func() { r.emu.DelayMethod("chat.update", 0) },
		}
	case atDBApproval:
		return hold{reached: func() *state.Incident {
			r.wait("DB approval request", hasAction(handlers.ActDBApprove))
			return shown()
		}}
	case atDBRequest:
		// Slack keeps the post of the DB approval request waiting; the
		// replica that served the click has already moved to awaiting
		// DB approval.
		posts := 0
		return hold{
			arm: func() {
				r.wait("assessment with buttons", hasAction(handlers.ActConfirm))
				posts = len(r.emu.CallsTo("chat.postMessage"))
				r.emu.DelayMethod("chat.postMessage", time.Minute)
			},
			reached: func() *state.Incident {
				waitCall(r, "chat.postMessage", posts, handlers.ActDBApprove)
				return owing(status())
			},
			release: func() { r.emu.DelayMethod("chat.postMessage", 0) },
		}
	}
	return hold{reached: status}
}

// waitCall waits until Slack has received a call of method after the
// first `after` whose blocks carry the action id: the call a hold keeps
// waiting.
func waitCall(r *replicaSet, method string, after int, action string) {
	r.t.Helper()
	wait.For(r.t, 30*time.Second, method+" with "+action+", kept waiting by Slack", func() (bool, error) {
		calls := r.emu.CallsTo(method)
		for _, c := range calls[min(after, len(calls)):] {
			if strings.Contains(c.Params["blocks"], action) {
				return true, nil
			}
		}
		return false, nil
	})
}

// killOwnerAt runs a rollback of x's service through Slack, kills -9 the
// replica that owns it at step k, and checks that another replica
// finishes it — taking it over within the lease + 10 s when work was in
// flight, saying so in the thread — that the timeline holds each event
// once, the service is released and the platform saw each write once.
func killOwnerAt(t *testing.T, k killStep, x *killTarget) {
	t.Helper()
	r := x.r
	h := heldAlike(r, k)
	if f, ok := x.holds[k.name]; ok {
		h = f()
	}
	r.slash("myapp")
	if h.arm != nil {
		h.arm()
	}
	if k.name != atAssessing && k.name != atConfirmation && k.name != atDecisionShow {
		r.confirm()
	}
	if k.name == atDownMigration {
		r.approve(slackemu.UserDana, r.wait("DB approval request", hasAction(handlers.ActDBApprove)))
	}
	in := h.reached()
	if in.Status != k.status {
		t.Fatalf("RB-1 is %s when its owner is to be killed %s", in.Status, k.name)
	}
	r.kill(ownerPID(t, in))
	killed := time.Now()
	if h.release != nil {
		h.release()
	}
	switch k.name {
	case atAssessing, atConfirmation, atDecisionShow:
		// For atDecisionShow the buttons come from the replica that took
		// the showing over: the dead owner's update never reached Slack.
		r.confirm()
	case atDBApproval, atDBRequest:
		r.approve(slackemu.UserDana, r.wait("DB approval request", hasAction(handlers.ActDBApprove)))
	}
	if x.people != nil {
		x.people()
	}
	in = r.waitStatus("RB-1", 90*time.Second, is(state.Completed, state.VerifyFailed, state.RollbackFailed, state.Cancelled), "finished")
	if in.Status != state.Completed {
		t.Fatalf("RB-1 ended %s, want completed", in.Status)
	}
	if len(in.TakenOver) != k.takeovers() {
		t.Fatalf("%d takeovers after a kill while %s, want %d: %+v", len(in.TakenOver), k.name, k.takeovers(), in.TakenOver)
	}
	if k.takeovers() > 0 {
		to := in.TakenOver[0]
		if to.Status != k.status {
			t.Errorf("taken over in %s, want %s", to.Status, k.status)
		}
		if d := to.At.Sub(killed); d > replicaLease+10*time.Second {
			t.Errorf("taken over %s after the kill, want within the lease + 10s", d)
		}
		m := r.wait("takeover message", textHas("RB-1 resumed by"))
		if m.ThreadTS == "" {
			t.Errorf("takeover message outside the thread")
		}
		t.Logf("taken over %s after kill -9 while %s (lease %s)", to.At.Sub(killed).Round(10*time.Millisecond), k.name, replicaLease)
	}
	events := decisions(k.takeovers())
	if k.db {
		events = append(events, eventCount{"database", "approved the database step", 1}, eventCount{"database", "done:", 1})
	}
	if k.name == atDownMigration {
		events = append(events, eventCount{"database", "resuming the database step", 1})
	}
	r.checkTimeline("RB-1", events...)
	r.checkReleased()
	if x.db != nil {
		if got := x.db.version(); got != "2 dirty=false" {
			t.Errorf("schema_migrations = %s, want 2 dirty=false (the down migration once)", got)
		}
	}
	x.check(in)
}

// eventCount is how many timeline events of step carry detail.
type eventCount struct {
	step, detail string
	want         int
}

// decisions are the events of every rollback, each once: one request, one
// confirmation, one verdict; and each takeover.
func decisions(takeovers int) []eventCount {
	return []eventCount{
		{"request", "requested rollback", 1},
		{"confirm", "confirmed rollback", 1},
		{"verify", "verified:", 1},
		{"takeover", "resumed by", takeovers},
	}
}

// checkTimeline asserts that no event is on the incident's timeline twice
// — but across a takeover, where the next owner begins again the step the
// dead one had begun — and each count.
func (r *replicaSet) checkTimeline(id string, counts ...eventCount) {
	r.t.Helper()
	evs, err := r.store.Timeline(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	var all strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&all, "  %s %s %s: %s\n", ev.Time.Format("15:04:05.000"), ev.Actor, ev.Step, ev.Detail)
	}
	seen := map[string]int{} // event → takeovers before it
	takeovers := 0
	for _, ev := range evs {
		if ev.Step == "takeover" {
			takeovers++
		}
		key := ev.Actor + " " + ev.Step + ": " + ev.Detail
		if n, ok := seen[key]; ok && n == takeovers {
			r.t.Errorf("event twice, no takeover between: %s; timeline:\n%s", key, all.String())
		}
		seen[key] = takeovers
	}
	for _, c := range counts {
		n := 0
		for _, ev := range evs {
			if ev.Step == c.step && strings.Contains(ev.Detail, c.detail) {
				n++
			}
		}
		if n != c.want {
			r.t.Errorf("%d %q events with %q, want %d; timeline:\n%s", n, c.step, c.detail, c.want, all.String())
		}
	}
}

// checkReleased asserts that nothing holds myapp's lock any more.
func (r *replicaSet) checkReleased() {
	r.t.Helper()
	if l, _ := r.store.LockHolder(context.Background(), "myapp"); l != nil {
		r.t.Errorf("lock still held: %+v", l)
	}
}

// gmSchema is a PostgreSQL database whose golang-migrate schema
// (platforms/migrations/testdata/golang-migrate) is at the bad release's
// version 3, which adds users.email; version 2 was the last good
// release's. Its read-only DSN and migration URL are in the variables
// roVar and urlVar (MYAPP_…, which the replicas inherit).
type gmSchema struct {
	t        testing.TB
	db       dbtest.Database
	owner    *sql.DB
	dir, bin string // the migrations, golang-migrate's CLI
	roVar    string // the variable holding the read-only DSN
	urlVar   string // the variable holding the migration URL
}

func newGMSchema(t *testing.T, pg *dbtest.Postgres) *gmSchema {
	t.Helper()
	s := &gmSchema{t: t, db: pg.CreateDatabase(t), bin: migrateBin(t)}
	var err error
	if s.dir, err = filepath.Abs("../platforms/migrations/testdata/golang-migrate"); err != nil {
		t.Fatal(err)
	}
	if s.owner, err = sql.Open("pgx", s.db.DSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.owner.Close() })
	for _, n := range []string{"2", "1"} { // the good release's, then the bad one's migration
		if out, err := exec.Command(s.bin, "-path", s.dir, "-database", s.db.URL, "up", n).CombinedOutput(); err != nil {
			t.Fatalf("migrate up %s: %v\n%s", n, err, out)
		}
	}
	s.roVar = setenvFor(t, "MYAPP_RO_DSN", s.db.DSN)
	s.urlVar = setenvFor(t, "MYAPP_MIGRATE_URL", s.db.URL)
	return s
}

// recordGood stores what the replicas' recorder wrote two hours ago while
// the good release ran (artifact good): version 2.
func (s *gmSchema) recordGood(store *state.Store, good string) {
	s.t.Helper()
	if err := store.RecordSchema(context.Background(), "myapp", state.SchemaRecord{
		At: time.Now().Add(-2 * time.Hour), Artifact: good, Tool: "golang-migrate", Versions: []string{"2"}}); err != nil {
		s.t.Fatal(err)
	}
}

// service is the database block of myapp's configuration with down as its
// down migration (YAML at the indentation of a top-level key).
func (s *gmSchema) service(down string) string {
	return fmt.Sprintf(`    database:
      driver: postgres
      dsn_env: %s
      tool: golang-migrate
      migrations_dir: %q
      down:
%s
      approvers: {groups: [%s]}
`, s.roVar, s.dir, indent(strings.TrimSpace(down), "        "), slackemu.GroupDBA)
}

func indent(s, by string) string {
	return by + strings.ReplaceAll(s, "\n", "\n"+by)
}

// version is schema_migrations' row: "3 dirty=false".
func (s *gmSchema) version() string {
	s.t.Helper()
	var v int64
	var dirty bool
	if err := s.owner.QueryRow(`SELECT version, dirty FROM schema_migrations`).Scan(&v, &dirty); err != nil {
		s.t.Fatal(err)
	}
	return fmt.Sprintf("%d dirty=%v", v, dirty)
}

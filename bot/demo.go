package bot

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/sim"
	"rollbot/testkit/slackemu"
)

// DemoOptions configure `rollbot demo`.
type DemoOptions struct {
	Addr     string // the local Slack server and its page, default 127.0.0.1:8080
	RedisURL string // empty: embedded in-memory Redis
	Out      io.Writer
	Log      *slog.Logger
}

// Demo runs the local Slack-compatible server, rollbot connected to it and
// three SIMULATED services, until ctx ends: a newcomer can type
// `/rollback myapp` on the page and click through a verified rollback.
func Demo(ctx context.Context, o DemoOptions) error {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:8080"
	}
	emu, err := slackemu.New(slackemu.Options{Addr: o.Addr, Log: o.Log})
	if err != nil {
		return fmt.Errorf("start the local Slack server: %w (is %s in use? try --addr 127.0.0.1:0)", err, o.Addr)
	}
	defer emu.Close()

	var rdb redis.UniversalClient
	stateNote := "Redis at REDIS_URL"
	if o.RedisURL == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return fmt.Errorf("start embedded redis: %w", err)
		}
		defer mr.Close()
		rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
		stateNote = "embedded in-memory Redis (state is lost when the demo stops)"
	} else {
		opt, err := redis.ParseURL(o.RedisURL)
		if err != nil {
			return fmt.Errorf("REDIS_URL: not a valid redis URL")
		}
		rdb = redis.NewClient(opt)
	}
	defer rdb.Close()

	services, err := DemoServices()
	if err != nil {
		return err
	}
	b, err := New(ctx, Options{
		Env:      Env{BotToken: slackemu.BotToken, AppToken: slackemu.AppToken, APIURL: emu.APIURL()},
		Redis:    rdb,
		Services: services,
		Engine:   DemoEngineOptions(),
		Log:      o.Log,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Out, `
rollbot demo: everything runs in this process, nothing leaves this machine.

  Open %s

  - a local Slack-compatible server (not Slack) with the channel #incident-rollbacks
  - rollbot connected to it over Socket Mode
  - SIMULATED services: "myapp" (v1.5.0 is failing), "payments" (its bad deploy ran a migration)
    and "search" (healthy: myapp's neighbour in the "Deployment-related?" row)
  - state: %s
  - verification soak shortened to %s for the demo (verify_soak; the default is the runbook's 3m)

  Try: /rollback myapp     then "Roll back" as alice or bob (on-call)
       /rollback payments  the database step needs a DBA (dana or erin)
       /rollback timeline  /rollback history myapp   /rollback help

Ctrl-C stops the demo.
`, emu.PageURL(), stateNote, DemoVerifySoak)
	return b.Run(ctx)
}

// DemoVerifySoak is the demo's short soak window.
const DemoVerifySoak = 10 * time.Second

// DemoEngineOptions are quick timings for the demo.
func DemoEngineOptions() handlers.Options {
	return handlers.Options{
		IncidentChannels: []string{slackemu.ChannelIncident},
		VerifyInterval:   2 * time.Second,
		VerifyTimeout:    time.Minute,
		// Short for the demo (the default is the runbook's 3m), and said so
		// on the page and in the checklist.
		VerifySoak: DemoVerifySoak,
	}
}

// demoSims are the demo's simulated deployments.
var demoSims = map[string]sim.Config{
	"myapp": {
		Versions:  []sim.Version{{Artifact: "registry.local/myapp:v1.4.0"}, {Artifact: "registry.local/myapp:v1.4.1"}, {Artifact: "registry.local/myapp:v1.5.0", Bad: true}},
		Replicas:  3,
		StepDelay: 800 * time.Millisecond,
	},
	"payments": {
		Versions:  []sim.Version{{Artifact: "registry.local/payments:2.7.3"}, {Artifact: "registry.local/payments:2.8.0", Bad: true}},
		Replicas:  4,
		StepDelay: 600 * time.Millisecond,
	},
}

// demoConfig is the demo as a config file would say it (its services'
// platforms and the engine's timings), so that the demo's timings are
// validated like any other: every step budget covers the waits inside it.
func demoConfig() *Config {
	o := DemoEngineOptions()
	c := &Config{IncidentChannels: o.IncidentChannels, VerifyTimeout: o.VerifyTimeout, VerifySoak: o.VerifySoak,
		VerifyInterval: o.VerifyInterval, QueryTimeout: o.QueryTimeout, StepTimeout: o.StepTimeout, Lease: o.Lease, Budgets: o.Budgets,
		Services: map[string]ServiceConfig{}}
	for name, sc := range demoSims {
		c.Services[name] = ServiceConfig{Platform: "simulated", PlatformSections: PlatformSections{Simulated: &sc},
			Approvers: handlers.Access{Groups: []string{slackemu.GroupOnCall}}, Metrics: MetricsConfig{Simulated: true}}
	}
	return c
}

// DemoServices are the demo's simulated services.
func DemoServices() ([]*handlers.Service, error) {
	if err := demoConfig().Validate(); err != nil {
		return nil, fmt.Errorf("the demo's own timings: %w", err)
	}
	oncall := handlers.Access{Groups: []string{slackemu.GroupOnCall}}
	myapp, err := sim.New("myapp", demoSims["myapp"])
	if err != nil {
		return nil, err
	}
	payments, err := sim.New("payments", demoSims["payments"])
	if err != nil {
		return nil, err
	}
	// search is healthy: myapp's neighbour in its verdict, so the
	// assessment of myapp can tell its failure apart from one of the
	// infrastructure (other services degraded too).
	search, err := sim.New("search", sim.Config{
		Versions:    []sim.Version{{Artifact: "registry.local/search:3.2.0"}, {Artifact: "registry.local/search:3.2.1"}},
		Replicas:    2,
		DeployedAgo: 3 * time.Hour,
		StepDelay:   600 * time.Millisecond,
	})
	if err != nil {
		return nil, err
	}
	searchSvc := &handlers.Service{Name: "search", Platform: search, Metrics: search, Health: search, HasHealth: true, HasSmoke: true, Approvers: oncall}
	return []*handlers.Service{
		// As services.myapp.verdict.neighbours.services: [search] would.
		{Name: "myapp", Platform: myapp, Metrics: myapp, Health: myapp, HasHealth: true, HasSmoke: true, Approvers: oncall,
			Verdict: handlers.VerdictConfig{Neighbours: []handlers.Neighbour{{Name: searchSvc.Name, Metrics: searchSvc.Metrics, Thresholds: searchSvc.Thresholds}}}},
		{Name: "payments", Platform: payments, Metrics: payments, Health: payments, HasHealth: true, HasSmoke: true, Approvers: oncall,
			Database: newDemoDB(), DBApprovers: handlers.Access{Groups: []string{slackemu.GroupDBA}}},
		searchSvc,
	}, nil
}

// demoDB is a SIMULATED database whose last deploy applied one reversible
// Flyway migration.
type demoDB struct {
	mu         sync.Mutex
	rolledBack bool
}

var _ platforms.Database = (*demoDB)(nil)

func newDemoDB() *demoDB { return &demoDB{} }

func (d *demoDB) Detect(ctx context.Context, since time.Time) (platforms.MigrationReport, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := platforms.MigrationReport{Tool: "flyway", Source: "flyway_schema_history (simulated)"}
	if !d.rolledBack {
		r.Ran = []platforms.Migration{{ID: "V42", Description: "add invoices.currency", AppliedAt: since.Add(40 * time.Second), Reversible: true, Why: "undo script U42__add_invoices_currency.sql"}}
	}
	return r, nil
}

func (d *demoDB) DownPlan(r platforms.MigrationReport) string {
	return "run `flyway undo` (U42) as a Kubernetes Job with the bad release's image, then check flyway_schema_history (simulated)"
}

// RollBack is re-entrant like the real one (platforms.Database): once the
// simulated undo has run, a resumed call reports it instead of undoing again.
func (d *demoDB) RollBack(ctx context.Context, run platforms.DBRun, since time.Time, bad platforms.Revision, out io.Writer) (string, error) {
	d.mu.Lock()
	done := d.rolledBack
	d.mu.Unlock()
	if done {
		fmt.Fprintf(out, "attached to the down migration of %s started by an earlier attempt: it has finished\n", run.Incident)
		return "schema back at V41; flyway_schema_history checked (the earlier attempt's undo had finished)", nil
	}
	for _, l := range []string{
		"Flyway Community Edition (simulated)",
		"Database: jdbc:postgresql://payments-db/payments (PostgreSQL 15)",
		"Current version of schema \"public\": 42",
		"Undoing migration of schema \"public\" to version 42 - add invoices.currency",
		"Successfully undid 1 migration to schema \"public\", now at version v41",
	} {
		fmt.Fprintln(out, l)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(400 * time.Millisecond):
		}
	}
	d.mu.Lock()
	d.rolledBack = true
	d.mu.Unlock()
	return "schema back at V41; flyway_schema_history checked", nil
}

func (d *demoDB) RestorePlan(ctx context.Context, incident string, before time.Time) string {
	return "restore the newest snapshot before " + before.UTC().Format(time.RFC3339) + " (simulated)"
}

func (d *demoDB) Restore(ctx context.Context, run platforms.DBRun, before time.Time, progress func(string)) (string, error) {
	return "", platforms.Userf(nil, "the simulated database has no snapshots")
}

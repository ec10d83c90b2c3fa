package rds

// These tests run the real aws-sdk-go-v2 RDS client (SigV4 signing,
// standard retryer, paginator, query-protocol XML decoding) against
// awstest, a local HTTP server speaking the RDS query API. Nothing reaches
// AWS.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"rollbot/platforms"
	"rollbot/testkit/awstest"

	"rollbot/testkit/platformtest"
)

const (
	testKeyID  = "AKIAROLLBOTRDSTEST01"
	testSecret = "rds/Test+Secret/9xZkq2LmNoPqRsTuVwXyZ0123456789"
)

var (
	now      = time.Date(2026, 6, 26, 9, 42, 0, 0, time.UTC)
	deployAt = time.Date(2026, 6, 26, 9, 0, 0, 0, time.UTC)
)

func awsEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", testKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testSecret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "eu-west-1") // region from the default chain
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", dir+"/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", dir+"/credentials")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

type env struct {
	fake *awstest.Server
	cfg  Config
	logs *bytes.Buffer
}

// setup: source instance myapp-db with 7-day backups, 104 daily automated
// snapshots (more than one page), a manual pre-deploy snapshot at 08:50,
// and decoys the choice must skip.
func setup(t *testing.T) *env {
	t.Helper()
	awsEnv(t)
	f := awstest.New()
	t.Cleanup(f.Close)
	f.SetClock(func() time.Time { return now })
	f.AddDBInstance(awstest.DBInstance{
		ID: "myapp-db", Engine: "postgres", EngineVersion: "16.3", Class: "db.r6g.large",
		SubnetGroup: "myapp-private", SecurityGroups: []string{"sg-0app", "sg-0ops"}, ParameterGroup: "myapp-pg16",
		MultiAZ: true, Address: "myapp-db.c0fake0abcde.eu-west-1.rds.amazonaws.com", Port: 5432,
		CreatedAt: now.AddDate(-1, 0, 0), BackupRetentionDays: 7, LatestRestorableTime: now.Add(-5 * time.Minute),
	})
	f.AddDBInstance(awstest.DBInstance{ID: "other-db", Engine: "mysql", Port: 3306, Address: "other-db.x", CreatedAt: now.AddDate(-1, 0, 0)})
	for i := 104; i >= 1; i-- {
		at := time.Date(2026, 6, 26, 3, 10, 0, 0, time.UTC).AddDate(0, 0, -i+1)
		f.AddDBSnapshot(awstest.DBSnapshot{ID: "rds:myapp-db-" + at.Format("2006-01-02-15-04"), Instance: "myapp-db", Type: "automated", Created: at, Engine: "postgres", Port: 5432})
	}
	f.AddDBSnapshot(awstest.DBSnapshot{ID: "pre-deploy-2026-06-26", Instance: "myapp-db", Type: "manual", Created: deployAt.Add(-10 * time.Minute), Engine: "postgres", Port: 5432})
	f.AddDBSnapshot(awstest.DBSnapshot{ID: "still-copying", Instance: "myapp-db", Type: "manual", Status: "creating", Created: deployAt.Add(-2 * time.Minute)})
	f.AddDBSnapshot(awstest.DBSnapshot{ID: "after-deploy", Instance: "myapp-db", Type: "manual", Created: deployAt.Add(5 * time.Minute)})
	f.AddDBSnapshot(awstest.DBSnapshot{ID: "other-db-newer", Instance: "other-db", Type: "manual", Created: deployAt.Add(-1 * time.Minute)})
	return &env{
		fake: f,
		cfg:  Config{Endpoint: f.URL, Instance: "myapp-db", PollInterval: 5 * time.Millisecond, MaxAttempts: 4, MaxBackoff: 10 * time.Millisecond},
		logs: &bytes.Buffer{},
	}
}

func (e *env) adapter(t *testing.T) *Adapter {
	t.Helper()
	a, err := New(context.Background(), e.cfg, slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.now = func() time.Time { return now }
	return a
}

func TestRestoreFromSnapshot(t *testing.T) {
	e := setup(t)
	a := e.adapter(t)
	ctx := context.Background()
	plan, err := a.Plan(ctx, Request{Before: deployAt, Incident: "INC-42"})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if plan.Snapshot != "pre-deploy-2026-06-26" || !plan.DataAsOf.Equal(deployAt.Add(-10*time.Minute)) {
		t.Errorf("chose %s at %s; want pre-deploy-2026-06-26 at 08:50 (newest available before the deploy)", plan.Snapshot, plan.DataAsOf)
	}
	if plan.Target != "myapp-db-inc-42" || plan.Attach {
		t.Errorf("Target = %q (attach %v), want myapp-db-inc-42, named after the incident", plan.Target, plan.Attach)
	}
	if plan.SourceEndpoint != "myapp-db.c0fake0abcde.eu-west-1.rds.amazonaws.com:5432" {
		t.Errorf("SourceEndpoint = %q", plan.SourceEndpoint)
	}
	// Distinct pages, by marker: the SDK's retryer may repeat a request
	// whose connection broke (seen once under load), which is not a page.
	pages := map[string]bool{}
	for _, r := range e.fake.Requests("DescribeDBSnapshots") {
		pages[r.Params.Get("Marker")] = true
	}
	if len(pages) != 2 {
		t.Errorf("DescribeDBSnapshots pages = %v, want 2 (108 snapshots, 100 a page)", pages)
	}
	if got := strings.Join(plan.Lines(), "\n"); !strings.Contains(got, "after 2026-06-26 08:50:00 UTC will NOT be in myapp-db-inc-42") {
		t.Errorf("Lines = %s", got)
	}
	if len(e.fake.Requests("RestoreDBInstanceFromDBSnapshot")) != 0 {
		t.Fatal("Plan restored something")
	}

	// The plan goes through the state store between approval and restore.
	b, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	plan = Plan{}
	if err := json.Unmarshal(b, &plan); err != nil {
		t.Fatal(err)
	}

	dry, err := a.Restore(ctx, plan, true)
	if err != nil || dry.Outcome != platforms.Planned {
		t.Fatalf("dry run = %+v, %v", dry, err)
	}
	if len(e.fake.Requests("RestoreDBInstanceFromDBSnapshot")) != 0 {
		t.Fatal("dry run restored")
	}

	res, err := a.Restore(ctx, plan, false)
	if err != nil || res.Outcome != platforms.Done {
		t.Fatalf("Restore = %+v, %v", res, err)
	}
	reqs := e.fake.Requests("RestoreDBInstanceFromDBSnapshot")
	if len(reqs) != 1 {
		t.Fatalf("restore calls = %d", len(reqs))
	}
	p := reqs[0].Params
	for k, want := range map[string]string{
		"DBInstanceIdentifier": "myapp-db-inc-42", "DBSnapshotIdentifier": "pre-deploy-2026-06-26",
		"DBSubnetGroupName": "myapp-private", "DBParameterGroupName": "myapp-pg16", "DBInstanceClass": "db.r6g.large",
		"MultiAZ": "true", "VpcSecurityGroupIds.VpcSecurityGroupId.1": "sg-0app", "VpcSecurityGroupIds.VpcSecurityGroupId.2": "sg-0ops",
	} {
		if p.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, p.Get(k), want)
		}
	}
	if reqs[0].AccessKeyID != testKeyID {
		t.Errorf("signed with %q", reqs[0].AccessKeyID)
	}
	restored, _ := e.fake.DBInstance("myapp-db-inc-42")
	if restored.Tags["rollbot:incident"] != "INC-42" || restored.Tags["rollbot:restored-from"] != "myapp-db" ||
		restored.Tags["rollbot:before"] != "2026-06-26T09:00:00Z" || restored.Tags["rollbot:snapshot"] != "pre-deploy-2026-06-26" || restored.Tags["rollbot:method"] != "snapshot" {
		t.Errorf("tags = %v", restored.Tags)
	}
	orig, _ := e.fake.DBInstance("myapp-db")
	if orig.Status != "available" || orig.Address == "" {
		t.Errorf("source instance changed: %+v", orig)
	}

	var progress []string
	done := false
	r, err := a.Wait(ctx, plan, func(p platforms.Progress) {
		progress = append(progress, p.Message)
		done = done || p.Done
	})
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if r.Endpoint != "myapp-db-inc-42.c0fake0abcde.eu-west-1.rds.amazonaws.com:5432" {
		t.Errorf("Endpoint = %q", r.Endpoint)
	}
	if n := len(e.fake.Requests("DescribeDBInstances")); n < 4+3 { // Plan (2) + Restore (1) + 3 "creating" + 1 "available"
		t.Errorf("DescribeDBInstances = %d calls; Wait returned before the fake flipped to available", n)
	}
	if !done || len(progress) < 2 || !strings.Contains(progress[0], "creating") || !strings.Contains(progress[len(progress)-1], "available") {
		t.Errorf("progress = %q", progress)
	}
	if r.LossWindow() != 52*time.Minute {
		t.Errorf("LossWindow = %s, want 52m (08:50 snapshot to 09:42)", r.LossWindow())
	}
	sum := r.Summary()
	for _, want := range []string{
		"myapp-db-inc-42 is available at myapp-db-inc-42.c0fake0abcde",
		"from myapp-db.c0fake0abcde.eu-west-1.rds.amazonaws.com:5432 to myapp-db-inc-42",
		"after 2026-06-26 08:50:00 UTC", "52m of writes", "snapshot pre-deploy-2026-06-26",
	} {
		if !strings.Contains(sum, want) {
			t.Errorf("Summary lacks %q:\n%s", want, sum)
		}
	}
}

func TestRestorePointInTime(t *testing.T) {
	e := setup(t)
	e.cfg.Method = PointInTime
	a := e.adapter(t)
	ctx := context.Background()
	plan, err := a.Plan(ctx, Request{Before: deployAt.Add(17 * time.Second)})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	want := time.Date(2026, 6, 26, 8, 59, 17, 0, time.UTC) // one minute (pitr_margin) before the deploy
	if !plan.DataAsOf.Equal(want) {
		t.Errorf("DataAsOf = %s, want %s", plan.DataAsOf, want)
	}
	if _, err := a.Restore(ctx, plan, false); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	reqs := e.fake.Requests("RestoreDBInstanceToPointInTime")
	if len(reqs) != 1 || reqs[0].Params.Get("RestoreTime") != "2026-06-26T08:59:17Z" ||
		reqs[0].Params.Get("SourceDBInstanceIdentifier") != "myapp-db" || reqs[0].Params.Get("TargetDBInstanceIdentifier") != "myapp-db-rb-202606260942" ||
		reqs[0].Params.Get("UseLatestRestorableTime") != "" {
		t.Fatalf("restore requests = %+v", reqs)
	}
	in, _ := e.fake.DBInstance("myapp-db-rb-202606260942")
	if !in.RestoredToTime.Equal(want) {
		t.Errorf("fake restored to %s", in.RestoredToTime)
	}
	r, err := a.Wait(ctx, plan, nil)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if !strings.Contains(r.Summary(), "myapp-db as of 2026-06-26 08:59:17 UTC") {
		t.Errorf("Summary = %s", r.Summary())
	}
}

func TestPlanRefusals(t *testing.T) {
	tests := []struct {
		name    string
		req     Request
		prepare func(*awstest.Server)
		is      error
		want    string
	}{
		{"pitr too recent", Request{Before: now.Add(-2 * time.Minute), Method: PointInTime}, nil, nil, "latest restorable time is 2026-06-26 09:37:00 UTC"},
		{"pitr beyond retention", Request{Before: now.AddDate(0, 0, -10), Method: PointInTime}, nil, nil, "backups reach back only"},
		{"no snapshot before", Request{Before: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}, nil, platforms.ErrNotFound, "no available snapshot of myapp-db was taken before 2026-01-01 00:00:00 UTC"},
		{"target exists", Request{Before: deployAt, Target: "other-db"}, nil, platforms.ErrConflict, "other-db already exists"},
		{"bad target", Request{Before: deployAt, Target: "x--y"}, nil, nil, "not a valid RDS instance name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t)
			_, err := e.adapter(t).Plan(context.Background(), tt.req)
			if err == nil {
				t.Fatal("Plan succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v", err, tt.is)
			}
			if msg := platformtest.UserMessage(t, err); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q lacks %q", msg, tt.want)
			}
		})
	}
}

func TestThrottlingRetried(t *testing.T) {
	e := setup(t)
	e.fake.Inject(awstest.Fault{Action: "DescribeDBSnapshots", Code: "Throttling", Times: 2})
	e.fake.Inject(awstest.Fault{Action: "RestoreDBInstanceFromDBSnapshot", Code: "Throttling", Times: 1})
	e.fake.Inject(awstest.Fault{Action: "DescribeDBInstances", Code: "Throttling", Times: 1})
	a := e.adapter(t)
	ctx := context.Background()
	plan, err := a.Plan(ctx, Request{Before: deployAt})
	if err != nil {
		t.Fatalf("Plan under throttling: %v", err)
	}
	if plan.Snapshot != "pre-deploy-2026-06-26" {
		t.Errorf("snapshot = %s", plan.Snapshot)
	}
	if _, err := a.Restore(ctx, plan, false); err != nil {
		t.Fatalf("Restore under throttling: %v", err)
	}
	throttled := 0
	for _, r := range e.fake.Requests("") {
		if r.Failed == "Throttling" {
			throttled++
		}
	}
	if throttled != 4 {
		t.Errorf("throttled calls = %d, want 4 (all retried)", throttled)
	}
	var ok int
	for _, r := range e.fake.Requests("RestoreDBInstanceFromDBSnapshot") {
		if r.Failed == "" {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("successful restores = %d, want exactly 1", ok)
	}
}

func TestAccessDeniedNoSecrets(t *testing.T) {
	e := setup(t)
	e.fake.Inject(awstest.Fault{Action: "RestoreDBInstanceFromDBSnapshot", Code: "AccessDenied", Times: -1})
	a := e.adapter(t)
	plan, err := a.Plan(context.Background(), Request{Before: deployAt})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Restore(context.Background(), plan, false)
	if err == nil {
		t.Fatal("Restore succeeded without permission")
	}
	msg := platformtest.UserMessage(t, err)
	if !strings.Contains(msg, "rds:RestoreDBInstanceFromDBSnapshot") || strings.Contains(msg, "arn:") {
		t.Errorf("message = %q", msg)
	}
	if n := len(e.fake.Requests("RestoreDBInstanceFromDBSnapshot")); n != 1 {
		t.Errorf("AccessDenied retried: %d calls", n)
	}
	for _, secret := range []string{testSecret, testKeyID} {
		if strings.Contains(err.Error(), secret) || strings.Contains(e.logs.String(), secret) || strings.Contains(fmt.Sprintf("%+v", plan), secret) {
			t.Errorf("credential %q leaked", secret)
		}
	}
}

func TestWaitFailsAndTimesOut(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		e := setup(t)
		e.fake.SetRestoreDescribes(1 << 30)
		e.cfg.WaitTimeout = 150 * time.Millisecond
		a := e.adapter(t)
		plan, err := a.Plan(context.Background(), Request{Before: deployAt})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Restore(context.Background(), plan, false); err != nil {
			t.Fatal(err)
		}
		_, err = a.Wait(context.Background(), plan, nil)
		if err == nil || !strings.Contains(platformtest.UserMessage(t, err), `stopped waiting for myapp-db-rb-202606260942`) || !strings.Contains(platformtest.UserMessage(t, err), `"creating"`) {
			t.Fatalf("Wait = %v", err)
		}
	})
	t.Run("failed status", func(t *testing.T) {
		e := setup(t)
		e.fake.AddDBInstance(awstest.DBInstance{ID: "broken-rb", Status: "incompatible-restore"})
		a := e.adapter(t)
		_, err := a.Wait(context.Background(), Plan{Target: "broken-rb"}, nil)
		if err == nil || !strings.Contains(platformtest.UserMessage(t, err), `"incompatible-restore"`) {
			t.Fatalf("Wait = %v", err)
		}
	})
}

func TestDefaultTarget(t *testing.T) {
	long := strings.Repeat("a", 45) + "-bcd"
	tests := []struct{ in, want string }{
		{"myapp-db", "myapp-db-rb-202606260942"},
		{"MyApp-DB", "myapp-db-rb-202606260942"},
		{long, strings.Repeat("a", 45) + "-b-rb-202606260942"},
		{strings.Repeat("a", 46) + "-bcd", strings.Repeat("a", 46) + "-rb-202606260942"},
		{strings.Repeat("a", 46) + "--", strings.Repeat("a", 46) + "-rb-202606260942"},
	}
	for _, tt := range tests {
		got := DefaultTarget(tt.in, now)
		if got != tt.want || len(got) > 63 || !validInstanceID(got) {
			t.Errorf("DefaultTarget(%q) = %q (len %d), want %q", tt.in, got, len(got), tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", Config{Instance: "myapp-db"}, ""},
		{"pitr", Config{Instance: "myapp-db", Method: PointInTime}, ""},
		{"no instance", Config{}, "instance: required"},
		{"bad instance", Config{Instance: "1db"}, "instance: not an RDS"},
		{"bad method", Config{Instance: "db", Method: "dump"}, "method:"},
		{"negative", Config{Instance: "db", PollInterval: -time.Second}, "poll_interval:"},
		{"endpoint", Config{Instance: "db", Endpoint: "localhost"}, "endpoint:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestRestoreAttaches: a restore is re-entrant per incident. A second
// attempt for the same incident (another replica resuming it) plans an
// attach from the instance's tags, makes no second restore call (counted
// on the fake's side) and waits for the instance the first attempt
// started; any other instance of that name stays a conflict.
func TestRestoreAttaches(t *testing.T) {
	for _, method := range []Method{FromSnapshot, PointInTime} {
		t.Run(string(method), func(t *testing.T) {
			e := setup(t)
			e.cfg.Method = method
			ctx := context.Background()
			call := "RestoreDBInstanceFromDBSnapshot"
			if method == PointInTime {
				call = "RestoreDBInstanceToPointInTime"
			}
			req := Request{Before: deployAt.Add(17 * time.Second), Incident: "RB-7"}

			// The first attempt starts the restore, then its replica stops.
			first := e.adapter(t)
			p1, err := first.Plan(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := first.Restore(ctx, p1, false); err != nil {
				t.Fatal(err)
			}
			if n := len(e.fake.Requests(call)); n != 1 || p1.Target != "myapp-db-rb-7" {
				t.Fatalf("%d %s calls, target %s", n, call, p1.Target)
			}

			// The second replica: the same request finds it.
			second := e.adapter(t)
			p2, err := second.Plan(ctx, req)
			if err != nil {
				t.Fatalf("Plan of the second attempt: %v", err)
			}
			if !p2.Attach || p2.Target != p1.Target || p2.Method != method || p2.Snapshot != p1.Snapshot || !p2.DataAsOf.Equal(p1.DataAsOf) {
				t.Errorf("second plan %+v\nwant an attach to %+v", p2, p1)
			}
			res, err := second.Restore(ctx, p2, false)
			if err != nil || res.Outcome != platforms.Skipped || !strings.Contains(res.Detail, "attached to the restore of myapp-db-rb-7 started by an earlier attempt") {
				t.Errorf("second Restore = %+v, %v", res, err)
			}
			// Restore re-checks too: the first attempt's own plan, again.
			if res, err := first.Restore(ctx, p1, false); err != nil || res.Outcome != platforms.Skipped {
				t.Errorf("Restore of the same plan again = %+v, %v", res, err)
			}
			if n := len(e.fake.Requests(call)); n != 1 {
				t.Errorf("%d %s calls, want 1: a second restore was started", n, call)
			}
			r, err := second.Wait(ctx, p2, nil)
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if r.Target != "myapp-db-rb-7" || r.Endpoint != "myapp-db-rb-7.c0fake0abcde.eu-west-1.rds.amazonaws.com:5432" || !r.DataAsOf.Equal(p1.DataAsOf) {
				t.Errorf("Wait = %+v", r)
			}
			if len(e.fake.Requests("RestoreDBInstanceFromDBSnapshot"))+len(e.fake.Requests("RestoreDBInstanceToPointInTime")) != 1 {
				t.Error("more than one restore call in all")
			}
		})
	}

	t.Run("not ours", func(t *testing.T) {
		tests := []struct {
			name string
			tags map[string]string
		}{
			{"no tags", nil},
			{"another incident", map[string]string{TagIncident: "RB-9", TagRestoredFrom: "myapp-db", TagBefore: "2026-06-26T09:00:00Z", TagDataAsOf: "2026-06-26T08:50:00Z", TagMethod: "snapshot"}},
			{"same id, another deploy", map[string]string{TagIncident: "RB-8", TagRestoredFrom: "myapp-db", TagBefore: "2026-01-02T09:00:00Z", TagDataAsOf: "2026-01-02T08:50:00Z", TagMethod: "snapshot"}},
			{"another source", map[string]string{TagIncident: "RB-8", TagRestoredFrom: "other-db", TagBefore: "2026-06-26T09:00:00Z", TagDataAsOf: "2026-06-26T08:50:00Z", TagMethod: "snapshot"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := setup(t)
				e.fake.AddDBInstance(awstest.DBInstance{ID: "myapp-db-rb-8", Engine: "postgres", Address: "myapp-db-rb-8.x", Port: 5432, CreatedAt: now.AddDate(0, -1, 0), Tags: tt.tags})
				a := e.adapter(t)
				req := Request{Before: deployAt, Incident: "RB-8"}
				_, err := a.Plan(context.Background(), req)
				if !errors.Is(err, platforms.ErrConflict) || !strings.Contains(platformtest.UserMessage(t, err), "an RDS instance named myapp-db-rb-8 already exists") {
					t.Errorf("Plan = %v", err)
				}
				// Restore refuses it too (a plan made before it appeared).
				p := Plan{Method: FromSnapshot, Source: "myapp-db", Target: "myapp-db-rb-8", Snapshot: "pre-deploy-2026-06-26", DataAsOf: deployAt.Add(-10 * time.Minute), Incident: "RB-8", Before: deployAt}
				if _, err := a.Restore(context.Background(), p, false); !errors.Is(err, platforms.ErrConflict) {
					t.Errorf("Restore = %v", err)
				}
				if n := len(e.fake.Requests("RestoreDBInstanceFromDBSnapshot")); n != 0 {
					t.Errorf("%d restore calls", n)
				}
			})
		}
	})
}

func TestIncidentTarget(t *testing.T) {
	long := strings.Repeat("a", 60)
	tests := []struct{ instance, incident, want string }{
		{"myapp-db", "RB-42", "myapp-db-rb-42"},
		{"MyApp-DB", "RB-42", "myapp-db-rb-42"},
		{"myapp-db", "INC 7/ops", "myapp-db-inc-7-ops"},
		{long, "RB-42", strings.Repeat("a", 57) + "-rb-42"},
		{strings.Repeat("a", 56) + "-bcd", "RB-42", strings.Repeat("a", 56) + "-rb-42"},
		{"myapp-db", "--", ""},
		{"myapp-db", strings.Repeat("incident-", 5), ""},
	}
	for _, tt := range tests {
		got := IncidentTarget(tt.instance, tt.incident)
		if (tt.want != "" && got != tt.want) || len(got) > 63 || !validInstanceID(got) || IncidentTarget(tt.instance, tt.incident) != got {
			t.Errorf("IncidentTarget(%q, %q) = %q (len %d), want %q", tt.instance, tt.incident, got, len(got), tt.want)
		}
	}
	if IncidentTarget("db", strings.Repeat("incident-", 5)) == IncidentTarget("db", strings.Repeat("incident-", 5)+"x") {
		t.Error("two long ids share a name")
	}
}

// Package rds restores an Amazon RDS DB instance to its state before a bad
// deploy: the runbook's "If Migration Was Destructive" step, run only after
// the DB approvals (package handlers decides when).
//
// Both ways the runbook names create a NEW instance next to the damaged
// one and never touch the original:
//   - snapshot: the newest available snapshot (automated or manual) of the
//     instance taken before the deploy → RestoreDBInstanceFromDBSnapshot;
//   - point_in_time: RestoreDBInstanceToPointInTime to just before the
//     deploy (deploy start minus a margin), if the source's backups reach
//     that far and it is not later than its LatestRestorableTime.
//
// RDS restores with its defaults (default security group, default
// parameter group, default subnet group) unless told otherwise, which
// leaves a restored instance unreachable by the app; the restore copies
// the source's instance class, subnet group, VPC security groups,
// parameter group, Multi-AZ and public-access settings.
//
// The flow is Plan (read-only: which snapshot or time, the new name, the
// data-loss window, shown to approvers) → Restore (the API call) → Wait
// (poll DescribeDBInstances until "available") → Restored.Summary (the
// endpoint switch the team must make, with the data-loss window spelled
// out). Only RDS DB instances are handled, not Aurora clusters.
//
// A restore for an incident is re-entrant: the new instance is named after
// the incident (IncidentTarget) and tagged with it, so a second attempt
// (another replica resuming the incident) finds the instance the first
// one started, attaches to it (Plan.Attach: no second restore call) and
// waits for it. A same-named instance without the incident's tags is a
// conflict, never reused.
//
// AWS access uses aws-sdk-go-v2 with the default credential chain, an
// optional endpoint override and the SDK's standard retryer (throttling is
// retried with backoff). The tests run the real SDK against
// rollbot/testkit/awstest, a local server speaking the RDS query API.
package rds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsrds "github.com/aws/aws-sdk-go-v2/service/rds"
	rdstypes "github.com/aws/aws-sdk-go-v2/service/rds/types"
	"github.com/aws/smithy-go"

	"rollbot/platforms"
	"rollbot/platforms/awsconf"
)

// Method is how the database is restored.
type Method string

const (
	// FromSnapshot restores the newest snapshot taken before the deploy.
	FromSnapshot Method = "snapshot"
	// PointInTime restores to just before the deploy from automated backups.
	PointInTime Method = "point_in_time"
)

// Config is the RDS part of a service's database configuration.
type Config struct {
	Region   string `yaml:"region,omitempty"`
	Endpoint string `yaml:"endpoint,omitempty"`
	// Instance is the source DB instance identifier (e.g. myapp-db).
	Instance string `yaml:"instance"`
	// Method: snapshot (default) or point_in_time.
	Method Method `yaml:"method,omitempty"`
	// PITRMargin: a point-in-time restore goes to Before minus this (default 1m).
	PITRMargin time.Duration `yaml:"pitr_margin,omitempty"`
	// PollInterval between DescribeDBInstances while waiting (default 30s).
	PollInterval time.Duration `yaml:"poll_interval,omitempty"`
	// WaitTimeout bounds Wait (default 2h; restores of big databases are slow).
	WaitTimeout time.Duration `yaml:"wait_timeout,omitempty"`
	// MaxAttempts per AWS call, throttling retries included (default 5).
	MaxAttempts int `yaml:"max_attempts,omitempty"`
	// MaxBackoff caps the delay between retries (default 20s).
	MaxBackoff time.Duration `yaml:"max_backoff,omitempty"`
}

var instanceIDRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,62}$`)

func validInstanceID(id string) bool {
	return instanceIDRe.MatchString(id) && !strings.Contains(id, "--") && !strings.HasSuffix(id, "-")
}

// Validate checks the fields; errors name the field.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Instance == "":
		errs = append(errs, errors.New("instance: required"))
	case !validInstanceID(c.Instance):
		errs = append(errs, errors.New("instance: not an RDS DB instance identifier (letters, digits, hyphens; starts with a letter)"))
	}
	switch c.Method {
	case "", FromSnapshot, PointInTime:
	default:
		errs = append(errs, fmt.Errorf("method: %q is not snapshot or point_in_time", c.Method))
	}
	if c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "http://") && !strings.HasPrefix(c.Endpoint, "https://") {
		errs = append(errs, errors.New("endpoint: must be an http(s) URL"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"pitr_margin", c.PITRMargin}, {"poll_interval", c.PollInterval}, {"wait_timeout", c.WaitTimeout}, {"max_backoff", c.MaxBackoff}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", d.name))
		}
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, errors.New("max_attempts: must not be negative"))
	}
	return errors.Join(errs...)
}

// rdsAPI is the part of the RDS client the adapter uses.
type rdsAPI interface {
	DescribeDBSnapshots(context.Context, *awsrds.DescribeDBSnapshotsInput, ...func(*awsrds.Options)) (*awsrds.DescribeDBSnapshotsOutput, error)
	DescribeDBInstances(context.Context, *awsrds.DescribeDBInstancesInput, ...func(*awsrds.Options)) (*awsrds.DescribeDBInstancesOutput, error)
	RestoreDBInstanceFromDBSnapshot(context.Context, *awsrds.RestoreDBInstanceFromDBSnapshotInput, ...func(*awsrds.Options)) (*awsrds.RestoreDBInstanceFromDBSnapshotOutput, error)
	RestoreDBInstanceToPointInTime(context.Context, *awsrds.RestoreDBInstanceToPointInTimeInput, ...func(*awsrds.Options)) (*awsrds.RestoreDBInstanceToPointInTimeOutput, error)
	ModifyDBInstance(context.Context, *awsrds.ModifyDBInstanceInput, ...func(*awsrds.Options)) (*awsrds.ModifyDBInstanceOutput, error)
}

// Adapter restores one service's DB instance.
type Adapter struct {
	cfg Config
	api rdsAPI
	log *slog.Logger
	now func() time.Time
}

// New loads AWS configuration through the default chain. No AWS call.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = withDefaults(cfg)
	awsCfg, err := awsconf.Load(ctx, cfg.Region, cfg.MaxAttempts, cfg.MaxBackoff)
	if err != nil {
		return nil, err
	}
	client := awsrds.NewFromConfig(awsCfg, func(o *awsrds.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return newAdapter(cfg, client, log), nil
}

// defaultWaitTimeout is Config.WaitTimeout's default.
const defaultWaitTimeout = 2 * time.Hour

// Waits are the adapter's waits inside the runbook's steps
// (platforms.Wait), at the config path at: the restore waits for the new
// instance up to wait_timeout, and so does the rename swap (the endpoint
// switch, when it is rename).
func (c Config) Waits(at string) []platforms.Wait {
	d, what := c.WaitTimeout, fmt.Sprintf("%s.wait_timeout (%s)", at, c.WaitTimeout)
	if d <= 0 {
		d, what = defaultWaitTimeout, fmt.Sprintf("%s.wait_timeout (%s, the default)", at, defaultWaitTimeout)
	}
	lower := "lower " + at + ".wait_timeout"
	return []platforms.Wait{
		{Step: platforms.WaitRestore, D: d, What: what, Lower: lower},
		{Step: platforms.WaitSwitch, D: d, What: what + " for the rename swap", Lower: lower},
	}
}

func withDefaults(cfg Config) Config {
	if cfg.Method == "" {
		cfg.Method = FromSnapshot
	}
	if cfg.PITRMargin == 0 {
		cfg.PITRMargin = time.Minute
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 30 * time.Second
	}
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = defaultWaitTimeout
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 20 * time.Second
	}
	return cfg
}

func newAdapter(cfg Config, api rdsAPI, log *slog.Logger) *Adapter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Adapter{cfg: withDefaults(cfg), api: api, now: time.Now,
		log: log.With("platform", "rds", "target", "db instance "+cfg.Instance)}
}

// Target names the source instance for messages.
func (a *Adapter) Target() string { return "RDS instance " + a.cfg.Instance }

// Request says what to restore.
type Request struct {
	// Before is the earliest moment the bad change could have touched the
	// data: the migration's applied time when known, else the deploy start.
	// The restored data is from strictly before it.
	Before time.Time
	// Method overrides the configured method when set.
	Method Method
	// Target is the new instance's identifier; empty means
	// IncidentTarget(instance, Incident), or without an incident
	// DefaultTarget (<instance>-rb-<yyyymmddhhmm>, UTC, now).
	Target string
	// Incident is recorded as a tag on the new instance, when set; an
	// instance named Target that carries it (and the same source and
	// Before) is the restore of an earlier attempt: the plan attaches.
	Incident string
}

// Tags rollbot puts on a restored instance. The last three let a later
// attempt for the same incident attach to it with the plan it was
// started with.
const (
	TagIncident     = "rollbot:incident"
	TagRestoredFrom = "rollbot:restored-from"
	TagDataAsOf     = "rollbot:data-as-of"
	TagBefore       = "rollbot:before"
	TagMethod       = "rollbot:method"
	TagSnapshot     = "rollbot:snapshot"
)

// Plan is a restore decided but not started. Show Lines() to approvers.
// It survives a JSON round trip (state store) with everything Restore needs.
type Plan struct {
	Method   Method    `json:"method"`
	Source   string    `json:"source"`
	Target   string    `json:"target"`
	Snapshot string    `json:"snapshot,omitempty"` // snapshot identifier (snapshot method)
	DataAsOf time.Time `json:"data_as_of"`         // snapshot creation time or the restore time
	// SourceEndpoint is "host:port" of the instance the app uses today.
	SourceEndpoint string `json:"source_endpoint,omitempty"`
	Incident       string `json:"incident,omitempty"`
	// Before is Request.Before, recorded as a tag with the incident.
	Before time.Time `json:"before,omitzero"`
	// Attach: Target already exists, restored for Incident by an earlier
	// attempt (a replica that stopped). Restore makes no restore call;
	// Wait follows that instance.
	Attach bool `json:"attach,omitempty"`
	// Settings are copied from the source so the new instance is reachable
	// like the old one (RDS would otherwise use its defaults).
	Settings Settings `json:"settings"`
}

// Settings of the source instance that the restore copies.
type Settings struct {
	Class          string   `json:"class,omitempty"`
	SubnetGroup    string   `json:"subnet_group,omitempty"`
	SecurityGroups []string `json:"security_groups,omitempty"`
	ParameterGroup string   `json:"parameter_group,omitempty"`
	MultiAZ        bool     `json:"multi_az,omitempty"`
	Public         bool     `json:"public,omitempty"`
}

// Lines describes the plan, one change per line.
func (p Plan) Lines() []string {
	var what string
	if p.Method == FromSnapshot {
		what = fmt.Sprintf("restore snapshot %s of %s (taken %s) into a new instance %s", p.Snapshot, p.Source, utc(p.DataAsOf), p.Target)
	} else {
		what = fmt.Sprintf("restore %s as of %s (point in time) into a new instance %s", p.Source, utc(p.DataAsOf), p.Target)
	}
	return []string{
		what,
		fmt.Sprintf("%s itself is not changed; the app must be switched to the new instance's endpoint afterwards", p.Source),
		fmt.Sprintf("data written to %s after %s will NOT be in %s", p.Source, utc(p.DataAsOf), p.Target),
	}
}

func utc(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// DefaultTarget is <instance>-rb-<yyyymmddhhmm>, shortened to RDS's 63
// characters.
func DefaultTarget(instance string, now time.Time) string {
	suffix := "-rb-" + now.UTC().Format("200601021504")
	base := strings.ToLower(instance)
	if len(base)+len(suffix) > 63 {
		base = strings.TrimRight(base[:63-len(suffix)], "-")
	}
	return base + suffix
}

// IncidentTarget is <instance>-<incident>: the incident's id in lower case
// with anything but letters and digits as single hyphens ("RB-42" →
// myapp-db-rb-42), the instance shortened to fit RDS's 63 characters. An
// id longer than 30 characters is shortened and ends with a hash of the
// whole id. The same incident always gets the same name.
func IncidentTarget(instance, incident string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(incident) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		} else if s := b.String(); s != "" && !strings.HasSuffix(s, "-") {
			b.WriteByte('-')
		}
	}
	id := strings.TrimRight(b.String(), "-")
	if id == "" || len(id) > 30 {
		h := sha256.Sum256([]byte(incident))
		id = strings.TrimRight(id[:min(len(id), 21)], "-")
		if id != "" {
			id += "-"
		}
		id += hex.EncodeToString(h[:4])
	}
	base := strings.ToLower(instance)
	if len(base)+1+len(id) > 63 {
		base = base[:63-1-len(id)]
	}
	return strings.TrimRight(base, "-") + "-" + id
}

// Plan decides what to restore. It reads only. When the target exists
// and was restored for req.Incident (its tags: the incident, the source,
// req.Before), the plan is the one that restore was started with, marked
// Attach; any other existing instance of that name is a conflict.
func (a *Adapter) Plan(ctx context.Context, req Request) (Plan, error) {
	if req.Before.IsZero() {
		return Plan{}, errors.New("plan restore: Before is required")
	}
	method := req.Method
	if method == "" {
		method = a.cfg.Method
	}
	if method != FromSnapshot && method != PointInTime {
		return Plan{}, platforms.Userf(nil, "unknown restore method %q; use snapshot or point_in_time", method)
	}
	target := req.Target
	switch {
	case target != "":
	case req.Incident != "":
		target = IncidentTarget(a.cfg.Instance, req.Incident)
	default:
		target = DefaultTarget(a.cfg.Instance, a.now())
	}
	if !validInstanceID(target) {
		return Plan{}, platforms.Userf(nil, "%q is not a valid RDS instance name (letters, digits, single hyphens; starts with a letter; at most 63)", target)
	}
	src, err := a.describe(ctx, a.cfg.Instance)
	if err != nil {
		return Plan{}, err
	}
	if src == nil {
		return Plan{}, platforms.Userf(platforms.ErrNotFound, "%s not found; check the database instance in the config", a.Target())
	}
	p := Plan{Method: method, Source: a.cfg.Instance, Target: target, Incident: req.Incident, Before: req.Before, Settings: settingsOf(src)}
	if src.Endpoint != nil {
		p.SourceEndpoint = fmt.Sprintf("%s:%d", aws.ToString(src.Endpoint.Address), aws.ToInt32(src.Endpoint.Port))
	}
	if existing, err := a.describe(ctx, target); err != nil {
		return Plan{}, err
	} else if existing != nil {
		if !p.startedBy(existing) {
			return Plan{}, conflict(target)
		}
		return p.attached(existing), nil
	}
	switch method {
	case FromSnapshot:
		sn, err := a.newestSnapshotBefore(ctx, req.Before)
		if err != nil {
			return Plan{}, err
		}
		p.Snapshot, p.DataAsOf = aws.ToString(sn.DBSnapshotIdentifier), aws.ToTime(sn.SnapshotCreateTime)
	case PointInTime:
		at := req.Before.Add(-a.cfg.PITRMargin).UTC().Truncate(time.Second)
		if aws.ToInt32(src.BackupRetentionPeriod) == 0 {
			return Plan{}, platforms.Userf(nil, "%s has automated backups turned off, so it cannot be restored to a point in time; use a snapshot", a.Target())
		}
		latest := aws.ToTime(src.LatestRestorableTime)
		if latest.IsZero() || at.After(latest) {
			return Plan{}, platforms.Userf(nil, "%s cannot be restored to %s yet: its latest restorable time is %s. Wait a few minutes, or restore a snapshot", a.Target(), utc(at), utc(latest))
		}
		earliest := latest.Add(-time.Duration(aws.ToInt32(src.BackupRetentionPeriod)) * 24 * time.Hour)
		if at.Before(earliest) {
			return Plan{}, platforms.Userf(nil, "%s cannot be restored to %s: its backups reach back only to about %s; restore a snapshot", a.Target(), utc(at), utc(earliest))
		}
		p.DataAsOf = at
	}
	return p, nil
}

func settingsOf(in *rdstypes.DBInstance) Settings {
	s := Settings{Class: aws.ToString(in.DBInstanceClass), MultiAZ: aws.ToBool(in.MultiAZ), Public: aws.ToBool(in.PubliclyAccessible)}
	if in.DBSubnetGroup != nil {
		s.SubnetGroup = aws.ToString(in.DBSubnetGroup.DBSubnetGroupName)
	}
	for _, sg := range in.VpcSecurityGroups {
		s.SecurityGroups = append(s.SecurityGroups, aws.ToString(sg.VpcSecurityGroupId))
	}
	if len(in.DBParameterGroups) > 0 {
		s.ParameterGroup = aws.ToString(in.DBParameterGroups[0].DBParameterGroupName)
	}
	return s
}

// newestSnapshotBefore pages through the instance's snapshots.
func (a *Adapter) newestSnapshotBefore(ctx context.Context, before time.Time) (rdstypes.DBSnapshot, error) {
	pages := awsrds.NewDescribeDBSnapshotsPaginator(a.api, &awsrds.DescribeDBSnapshotsInput{DBInstanceIdentifier: aws.String(a.cfg.Instance)})
	var best rdstypes.DBSnapshot
	found, seen := false, 0
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return best, a.awsErr(err, "DescribeDBSnapshots")
		}
		for _, sn := range page.DBSnapshots {
			seen++
			created := aws.ToTime(sn.SnapshotCreateTime)
			if aws.ToString(sn.Status) != "available" || created.IsZero() || !created.Before(before) {
				continue
			}
			if !found || created.After(aws.ToTime(best.SnapshotCreateTime)) {
				best, found = sn, true
			}
		}
	}
	if !found {
		return best, platforms.Userf(platforms.ErrNotFound, "no available snapshot of %s was taken before %s (%d snapshots looked at); consider a point-in-time restore", a.cfg.Instance, utc(before), seen)
	}
	return best, nil
}

// describe returns the instance, or nil when it does not exist.
func (a *Adapter) describe(ctx context.Context, id string) (*rdstypes.DBInstance, error) {
	out, err := a.api.DescribeDBInstances(ctx, &awsrds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String(id)})
	if err != nil {
		var nf *rdstypes.DBInstanceNotFoundFault
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, a.awsErr(err, "DescribeDBInstances")
	}
	if len(out.DBInstances) == 0 {
		return nil, nil
	}
	return &out.DBInstances[0], nil
}

func conflict(target string) error {
	return platforms.Userf(platforms.ErrConflict, "an RDS instance named %s already exists (an earlier restore?); use it or choose another name", target)
}

func tagsOf(in *rdstypes.DBInstance) map[string]string {
	m := map[string]string{}
	for _, t := range in.TagList {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// startedBy reports whether in is the restore an attempt of p's incident
// started: tagged with the incident, the source and the same Before.
func (p Plan) startedBy(in *rdstypes.DBInstance) bool {
	if p.Incident == "" || aws.ToString(in.DBInstanceIdentifier) != p.Target {
		return false
	}
	tags := tagsOf(in)
	before, err := time.Parse(time.RFC3339Nano, tags[TagBefore])
	return tags[TagIncident] == p.Incident && tags[TagRestoredFrom] == p.Source && err == nil && before.Equal(p.Before)
}

// attached is p as the earlier attempt started it (its tags), marked
// Attach. The source's settings stay: the instance has its own.
func (p Plan) attached(in *rdstypes.DBInstance) Plan {
	tags := tagsOf(in)
	p.Attach = true
	if m := Method(tags[TagMethod]); m == FromSnapshot || m == PointInTime {
		p.Method = m
	}
	p.Snapshot = tags[TagSnapshot]
	if t, err := time.Parse(time.RFC3339, tags[TagDataAsOf]); err == nil {
		p.DataAsOf = t
	}
	return p
}

// Restore starts the restore the plan describes. With dryRun it checks the
// plan against AWS again (source and snapshot still there, target name
// free) and returns Planned. The new instance's name is p.Target.
//
// When p.Target exists and was started for p's incident (Plan.Attach, or
// an attempt that got there between Plan and Restore), it makes no
// restore call and returns Skipped: Wait follows that instance. Any other
// existing instance of that name is a conflict.
func (a *Adapter) Restore(ctx context.Context, p Plan, dryRun bool) (platforms.Result, error) {
	log := a.log.With("op", "restore", "method", string(p.Method), "new_instance", p.Target, "incident", p.Incident)
	if existing, err := a.describe(ctx, p.Target); err != nil {
		return platforms.Result{}, err
	} else if existing != nil {
		if !p.startedBy(existing) {
			return platforms.Result{}, conflict(p.Target)
		}
		status := aws.ToString(existing.DBInstanceStatus)
		if dryRun {
			return platforms.Result{Outcome: platforms.Planned, Detail: fmt.Sprintf("would attach to %s (%s), restored for %s by an earlier attempt", p.Target, status, p.Incident), Plan: p.Lines()}, nil
		}
		log.Info("attached to the restore started by an earlier attempt", "status", status)
		return platforms.Result{Outcome: platforms.Skipped, Plan: p.Lines(),
			Detail: fmt.Sprintf("attached to the restore of %s started by an earlier attempt for %s (status %s); no second restore", p.Target, p.Incident, status)}, nil
	} else if p.Attach {
		// Planned as an attach, but the instance is gone: starting a new
		// restore now would not be what the approvers approved.
		return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "%s, restored for %s by an earlier attempt, no longer exists (deleted?): check the RDS console", p.Target, p.Incident)
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Detail: "would create " + p.Target, Plan: p.Lines()}, nil
	}
	tags := []rdstypes.Tag{
		{Key: aws.String(TagRestoredFrom), Value: aws.String(p.Source)},
		{Key: aws.String(TagDataAsOf), Value: aws.String(p.DataAsOf.UTC().Format(time.RFC3339))},
		{Key: aws.String(TagMethod), Value: aws.String(string(p.Method))},
	}
	if p.Incident != "" {
		tags = append(tags, rdstypes.Tag{Key: aws.String(TagIncident), Value: aws.String(p.Incident)})
	}
	if !p.Before.IsZero() {
		tags = append(tags, rdstypes.Tag{Key: aws.String(TagBefore), Value: aws.String(p.Before.UTC().Format(time.RFC3339Nano))})
	}
	if p.Snapshot != "" {
		tags = append(tags, rdstypes.Tag{Key: aws.String(TagSnapshot), Value: aws.String(p.Snapshot)})
	}
	s := p.Settings
	var err error
	switch p.Method {
	case FromSnapshot:
		_, err = a.api.RestoreDBInstanceFromDBSnapshot(ctx, &awsrds.RestoreDBInstanceFromDBSnapshotInput{
			DBInstanceIdentifier: aws.String(p.Target),
			DBSnapshotIdentifier: aws.String(p.Snapshot),
			DBInstanceClass:      nonEmpty(s.Class),
			DBSubnetGroupName:    nonEmpty(s.SubnetGroup),
			VpcSecurityGroupIds:  s.SecurityGroups,
			DBParameterGroupName: nonEmpty(s.ParameterGroup),
			MultiAZ:              aws.Bool(s.MultiAZ),
			PubliclyAccessible:   aws.Bool(s.Public),
			Tags:                 tags,
		})
		err = a.awsErr(err, "RestoreDBInstanceFromDBSnapshot")
	case PointInTime:
		_, err = a.api.RestoreDBInstanceToPointInTime(ctx, &awsrds.RestoreDBInstanceToPointInTimeInput{
			SourceDBInstanceIdentifier: aws.String(p.Source),
			TargetDBInstanceIdentifier: aws.String(p.Target),
			RestoreTime:                aws.Time(p.DataAsOf),
			DBInstanceClass:            nonEmpty(s.Class),
			DBSubnetGroupName:          nonEmpty(s.SubnetGroup),
			VpcSecurityGroupIds:        s.SecurityGroups,
			DBParameterGroupName:       nonEmpty(s.ParameterGroup),
			MultiAZ:                    aws.Bool(s.MultiAZ),
			PubliclyAccessible:         aws.Bool(s.Public),
			Tags:                       tags,
		})
		err = a.awsErr(err, "RestoreDBInstanceToPointInTime")
	default:
		return platforms.Result{}, fmt.Errorf("restore %s: unknown method %q", p.Source, p.Method)
	}
	if err != nil {
		return platforms.Result{}, err
	}
	log.Info("restore started", "data_as_of", p.DataAsOf)
	return platforms.Result{Outcome: platforms.Done, Detail: fmt.Sprintf("restore started: new instance %s is being created", p.Target), Plan: p.Lines()}, nil
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// Restored is a finished restore.
type Restored struct {
	Plan
	// Endpoint is "host:port" of the new instance.
	Endpoint    string    `json:"endpoint"`
	AvailableAt time.Time `json:"available_at"`
}

// LossWindow is how much writing the restored data misses, counted up to
// when the instance became available (writes continue until the app is
// switched, so the real window is longer).
func (r Restored) LossWindow() time.Duration { return r.AvailableAt.Sub(r.DataAsOf) }

// Summary is the text to post in the incident thread.
func (r Restored) Summary() string {
	from := r.SourceEndpoint
	if from == "" {
		from = r.Source
	}
	return r.SummaryThen(fmt.Sprintf("Switch the app's database endpoint from %s to %s, then roll back the app.", from, r.Endpoint))
}

// SummaryThen is Summary with next as the line that says what happens next.
func (r Restored) SummaryThen(next string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "New RDS instance %s is available at %s (restored from ", r.Target, r.Endpoint)
	if r.Method == FromSnapshot {
		fmt.Fprintf(&b, "snapshot %s).\n", r.Snapshot)
	} else {
		fmt.Fprintf(&b, "%s as of %s).\n", r.Source, utc(r.DataAsOf))
	}
	b.WriteString(next + "\n")
	fmt.Fprintf(&b, "Data loss: everything written to %s after %s is not in %s — %s of writes up to %s, plus whatever is written until the app is switched. %s is left untouched, so lost rows can still be copied from it.",
		r.Source, utc(r.DataAsOf), r.Target, roundDuration(r.LossWindow()), utc(r.AvailableAt), r.Source)
	return b.String()
}

// roundDuration is a short human duration: "45s", "52m", "3h5m", "2d4h".
func roundDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Round(time.Minute).Minutes()))
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	d = d.Round(time.Hour)
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

var failedStatuses = map[string]bool{
	"failed": true, "incompatible-restore": true, "incompatible-parameters": true,
	"incompatible-network": true, "storage-full": true, "inaccessible-encryption-credentials": true,
	"restore-error": true, "deleting": true,
}

// Wait polls the new instance until it is available, reporting each status
// change, and returns where it is. Bounded by ctx and wait_timeout.
func (a *Adapter) Wait(ctx context.Context, p Plan, progress platforms.ProgressFunc) (Restored, error) {
	if progress == nil {
		progress = func(platforms.Progress) {}
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.WaitTimeout)
	defer cancel()
	start := a.now()
	last, seen := "", false
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return Restored{}, platforms.Userf(ctx.Err(), "stopped waiting for %s after %s (last status %q); it may still become available — check the RDS console", p.Target, roundDuration(a.now().Sub(start)), last)
		case <-timer.C:
		}
		in, err := a.describe(ctx, p.Target)
		if err != nil {
			if ctx.Err() != nil {
				continue // reported by the select above
			}
			return Restored{}, err
		}
		switch {
		case in == nil && seen:
			return Restored{}, platforms.Userf(platforms.ErrNotFound, "%s disappeared while being restored (deleted?)", p.Target)
		case in == nil:
			// Not visible yet right after the restore call (eventual consistency).
		default:
			seen = true
			status := aws.ToString(in.DBInstanceStatus)
			if status != last {
				last = status
				progress(platforms.Progress{Message: fmt.Sprintf("%s: %s (%s)", p.Target, status, roundDuration(a.now().Sub(start))), Desired: 1})
			}
			if failedStatuses[status] {
				return Restored{}, platforms.Userf(nil, "restoring %s failed: RDS reports status %q; see the RDS console", p.Target, status)
			}
			if status == "available" && in.Endpoint != nil && aws.ToString(in.Endpoint.Address) != "" {
				r := Restored{Plan: p, Endpoint: fmt.Sprintf("%s:%d", aws.ToString(in.Endpoint.Address), aws.ToInt32(in.Endpoint.Port)), AvailableAt: a.now()}
				progress(platforms.Progress{Message: fmt.Sprintf("%s is available at %s", p.Target, r.Endpoint), Updated: 1, Ready: 1, Desired: 1, Done: true})
				a.log.Info("restore available", "op", "wait", "new_instance", p.Target, "took", a.now().Sub(start))
				return r, nil
			}
		}
		timer.Reset(a.cfg.PollInterval)
	}
}

// awsErr turns an SDK error into one a user can act on, keeping the raw
// error as the cause for the log.
func (a *Adapter) awsErr(err error, op string) error {
	if err == nil {
		return nil
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch code := ae.ErrorCode(); code {
		case "AccessDenied", "AccessDeniedException", "UnauthorizedOperation":
			return platforms.Userf(err, "AWS denied rds:%s for %s: grant rollbot's IAM role that action, then retry", op, a.Target())
		case "Throttling", "ThrottlingException", "RequestLimitExceeded":
			return platforms.Userf(err, "AWS kept throttling rds:%s after %d attempts; wait a minute and retry", op, a.cfg.MaxAttempts)
		case "DBInstanceNotFound":
			return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrNotFound, err), "%s not found", a.Target())
		case "DBSnapshotNotFound":
			return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrNotFound, err), "the chosen snapshot of %s no longer exists; plan the restore again", a.cfg.Instance)
		case "DBInstanceAlreadyExists":
			return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrConflict, err), "an RDS instance with the new name already exists; use it or choose another name")
		case "InvalidRestoreFault", "InvalidDBSnapshotState", "InvalidDBInstanceState", "InvalidParameterValue", "InvalidParameterCombination",
			"StorageQuotaExceeded", "InstanceQuotaExceeded", "InsufficientDBInstanceCapacity":
			// AWS's explanation may name ARNs and parameters: the log has it.
			ref := platforms.SeeLog(context.Background(), a.log, "AWS refused rds:"+op, err, "code", code)
			return platforms.Userf(err, "AWS refused rds:%s for %s (%s); AWS's explanation: %s", op, a.Target(), code, ref)
		case "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "UnrecognizedClientException":
			return platforms.Userf(err, "AWS rejected rollbot's credentials (%s); check its AWS credentials", code)
		}
	}
	return fmt.Errorf("%s %s: %w", op, a.cfg.Instance, err)
}

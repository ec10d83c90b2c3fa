// Package bluegreen is the blue-green adapter: a service whose traffic an
// AWS Application Load Balancer sends to one of two target groups, "blue"
// and "green". Rolling back is switching the traffic to the other group.
//
// The runbook's command (aws elbv2 modify-target-group-attributes) does not
// switch anything: it changes target group attributes. The switch is the
// forward action of the listener's default action (or of one listener
// rule): this adapter rewrites it as a weighted forward with the chosen
// group at weight 100 and the other at weight 0. Keeping the old group in
// the action at weight 0 keeps it attached to the load balancer, so its
// targets stay health-checked and switching back is checkable.
//
// Before switching it checks that every target of the chosen group is
// healthy (DescribeTargetHealth) and refuses otherwise. The switch is a
// compare-and-set: the listener (or rule) is read when the rollback starts
// and re-read right before ModifyListener/ModifyRule, and the rollback
// fails with platforms.ErrConflict if it changed in between or since the
// last Snapshot. ELBv2 has no conditional write, so a change landing between
// that re-read and the write cannot be detected; the window is one API
// round trip.
//
// AWS access uses aws-sdk-go-v2 with the default credential chain (env,
// shared config/SSO, web identity, container and instance roles), an
// optional endpoint override, and the SDK's standard retryer, which retries
// throttling with backoff. The tests run the real SDK against
// rollbot/testkit/awstest, a local HTTP server that speaks the ELBv2 query
// protocol; they do not reach AWS.
package bluegreen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/smithy-go"

	"rollbot/platforms"
	"rollbot/platforms/awsconf"
)

// TargetGroup names one side.
type TargetGroup struct {
	// Name is shown to users; defaults to the name inside the ARN.
	Name string `yaml:"name,omitempty"`
	ARN  string `yaml:"arn"`
}

// Config is the blue-green part of a service's configuration
// (services.<name>.bluegreen).
type Config struct {
	// Region; empty means the default chain's (AWS_REGION, shared config).
	Region string `yaml:"region,omitempty"`
	// Endpoint overrides the ELBv2 endpoint URL (VPC endpoint, tests).
	Endpoint string `yaml:"endpoint,omitempty"`
	// ListenerARN is the listener whose default action forwards the traffic.
	ListenerARN string `yaml:"listener_arn"`
	// RuleARN, when set, switches this listener rule's forward action
	// instead of the listener's default action.
	RuleARN string      `yaml:"rule_arn,omitempty"`
	Blue    TargetGroup `yaml:"blue"`
	Green   TargetGroup `yaml:"green"`
	// MaxAttempts per AWS call, throttling retries included (default 5).
	MaxAttempts int `yaml:"max_attempts,omitempty"`
	// MaxBackoff caps the delay between retries (default 20s).
	MaxBackoff time.Duration `yaml:"max_backoff,omitempty"`
}

// Validate checks the fields; errors name the field.
func (c Config) Validate() error {
	var errs []error
	if c.ListenerARN == "" {
		errs = append(errs, errors.New("listener_arn: required"))
	} else if !strings.HasPrefix(c.ListenerARN, "arn:") || !strings.Contains(c.ListenerARN, ":listener/") {
		errs = append(errs, errors.New("listener_arn: not a listener ARN (arn:aws:elasticloadbalancing:…:listener/app/…)"))
	}
	if c.RuleARN != "" && (!strings.HasPrefix(c.RuleARN, "arn:") || !strings.Contains(c.RuleARN, ":listener-rule/")) {
		errs = append(errs, errors.New("rule_arn: not a listener rule ARN (arn:aws:elasticloadbalancing:…:listener-rule/app/…)"))
	}
	for _, g := range []struct {
		field string
		tg    TargetGroup
	}{{"blue", c.Blue}, {"green", c.Green}} {
		switch {
		case g.tg.ARN == "":
			errs = append(errs, fmt.Errorf("%s.arn: required", g.field))
		case !strings.HasPrefix(g.tg.ARN, "arn:") || !strings.Contains(g.tg.ARN, ":targetgroup/"):
			errs = append(errs, fmt.Errorf("%s.arn: not a target group ARN (arn:aws:elasticloadbalancing:…:targetgroup/name/id)", g.field))
		}
	}
	if c.Blue.ARN != "" && c.Blue.ARN == c.Green.ARN {
		errs = append(errs, errors.New("green.arn: same target group as blue"))
	}
	if c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "http://") && !strings.HasPrefix(c.Endpoint, "https://") {
		errs = append(errs, errors.New("endpoint: must be an http(s) URL"))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, errors.New("max_attempts: must not be negative"))
	}
	if c.MaxBackoff < 0 {
		errs = append(errs, errors.New("max_backoff: must not be negative"))
	}
	return errors.Join(errs...)
}

// elbAPI is the part of the ELBv2 client the adapter uses.
type elbAPI interface {
	DescribeListeners(context.Context, *elb.DescribeListenersInput, ...func(*elb.Options)) (*elb.DescribeListenersOutput, error)
	DescribeRules(context.Context, *elb.DescribeRulesInput, ...func(*elb.Options)) (*elb.DescribeRulesOutput, error)
	DescribeTargetHealth(context.Context, *elb.DescribeTargetHealthInput, ...func(*elb.Options)) (*elb.DescribeTargetHealthOutput, error)
	ModifyListener(context.Context, *elb.ModifyListenerInput, ...func(*elb.Options)) (*elb.ModifyListenerOutput, error)
	ModifyRule(context.Context, *elb.ModifyRuleInput, ...func(*elb.Options)) (*elb.ModifyRuleOutput, error)
	AddTags(context.Context, *elb.AddTagsInput, ...func(*elb.Options)) (*elb.AddTagsOutput, error)
	DescribeTags(context.Context, *elb.DescribeTagsInput, ...func(*elb.Options)) (*elb.DescribeTagsOutput, error)
}

// Adapter is bound to one service's listener (or rule) and its two groups.
type Adapter struct {
	cfg   Config
	api   elbAPI
	log   *slog.Logger
	sides [2]side // blue, green

	mu       sync.Mutex
	lastSeen string // fingerprint of the forward action at the last Snapshot
}

var _ platforms.Platform = (*Adapter)(nil)

type side struct {
	color string // "blue" or "green"
	name  string
	arn   string
}

func (s side) label() string { return s.color + " (" + s.name + ")" }

// New loads AWS configuration through the default chain and returns the
// adapter. It makes no AWS call.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 20 * time.Second
	}
	awsCfg, err := awsconf.Load(ctx, cfg.Region, cfg.MaxAttempts, cfg.MaxBackoff)
	if err != nil {
		return nil, err
	}
	client := elb.NewFromConfig(awsCfg, func(o *elb.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return newAdapter(cfg, client, log), nil
}

func newAdapter(cfg Config, api elbAPI, log *slog.Logger) *Adapter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Adapter{cfg: cfg, api: api}
	a.sides[0] = side{color: "blue", name: cfg.Blue.Name, arn: cfg.Blue.ARN}
	a.sides[1] = side{color: "green", name: cfg.Green.Name, arn: cfg.Green.ARN}
	for i := range a.sides {
		if a.sides[i].name == "" {
			a.sides[i].name = tgNameFromARN(a.sides[i].arn)
		}
	}
	a.log = log.With("platform", "bluegreen", "target", a.Target())
	return a
}

// Kind implements platforms.Platform.
func (a *Adapter) Kind() string { return "bluegreen" }

// Target implements platforms.Platform: "ELB listener my-lb/f2f7dc8e
// (blue myapp-blue, green myapp-green)".
func (a *Adapter) Target() string {
	what := "ELB listener " + shortARN(a.cfg.ListenerARN)
	if a.cfg.RuleARN != "" {
		what = "ELB listener rule " + shortARN(a.cfg.RuleARN)
	}
	return fmt.Sprintf("%s (blue %s, green %s)", what, a.sides[0].name, a.sides[1].name)
}

// tgNameFromARN: arn:…:targetgroup/NAME/id → NAME.
func tgNameFromARN(arn string) string {
	_, rest, ok := strings.Cut(arn, ":targetgroup/")
	if !ok {
		return arn
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// shortARN: arn:…:listener/app/my-lb/50dc6c495c0c9188/f2f7dc8efc522ab2 →
// my-lb/f2f7dc8e. Keeps messages short and free of account ids.
func shortARN(arn string) string {
	i := strings.LastIndex(arn, ":")
	parts := strings.Split(arn[i+1:], "/")
	if len(parts) < 5 {
		return arn[i+1:]
	}
	id := parts[len(parts)-1]
	if len(id) > 8 {
		id = id[:8]
	}
	return parts[2] + "/" + id
}

func (a *Adapter) where() string {
	if a.cfg.RuleARN != "" {
		return "listener rule " + shortARN(a.cfg.RuleARN)
	}
	return "listener " + shortARN(a.cfg.ListenerARN)
}

// traffic is the forward action as read from AWS.
type traffic struct {
	actions []elbtypes.Action
	fwd     int              // index of the forward action in actions
	weights map[string]int32 // target group ARN -> weight
}

// read returns the current actions of the listener or rule.
func (a *Adapter) read(ctx context.Context) (traffic, error) {
	var actions []elbtypes.Action
	if a.cfg.RuleARN != "" {
		out, err := a.api.DescribeRules(ctx, &elb.DescribeRulesInput{RuleArns: []string{a.cfg.RuleARN}})
		if err != nil {
			return traffic{}, a.awsErr(err, "DescribeRules")
		}
		if len(out.Rules) != 1 {
			return traffic{}, platforms.Userf(platforms.ErrNotFound, "%s not found; check rule_arn", a.where())
		}
		actions = out.Rules[0].Actions
	} else {
		out, err := a.api.DescribeListeners(ctx, &elb.DescribeListenersInput{ListenerArns: []string{a.cfg.ListenerARN}})
		if err != nil {
			return traffic{}, a.awsErr(err, "DescribeListeners")
		}
		if len(out.Listeners) != 1 {
			return traffic{}, platforms.Userf(platforms.ErrNotFound, "%s not found; check listener_arn", a.where())
		}
		actions = out.Listeners[0].DefaultActions
	}
	t := traffic{actions: actions, fwd: -1, weights: map[string]int32{}}
	for i, act := range actions {
		if act.Type != elbtypes.ActionTypeEnumForward {
			continue
		}
		t.fwd = i
		if act.ForwardConfig != nil && len(act.ForwardConfig.TargetGroups) > 0 {
			for _, g := range act.ForwardConfig.TargetGroups {
				w := int32(1) // ELBv2's default weight
				if g.Weight != nil {
					w = *g.Weight
				}
				t.weights[aws.ToString(g.TargetGroupArn)] = w
			}
		} else if act.TargetGroupArn != nil {
			t.weights[*act.TargetGroupArn] = 1
		}
	}
	if t.fwd < 0 {
		return t, platforms.Userf(nil, "%s has no forward action, so there is no blue-green traffic to switch; check the configuration", a.where())
	}
	for arn := range t.weights {
		if arn != a.sides[0].arn && arn != a.sides[1].arn {
			return t, platforms.Userf(nil, "%s forwards to target group %s, which is neither blue (%s) nor green (%s); update the configuration before switching", a.where(), tgNameFromARN(arn), a.sides[0].name, a.sides[1].name)
		}
	}
	return t, nil
}

// weight of side i.
func (t traffic) weight(i int, a *Adapter) int32 { return t.weights[a.sides[i].arn] }

// live returns the index of the side carrying the traffic (the heavier one
// when split) and whether traffic is split.
func (t traffic) live(a *Adapter) (int, bool, error) {
	b, g := t.weight(0, a), t.weight(1, a)
	switch {
	case b <= 0 && g <= 0:
		return 0, false, platforms.Userf(nil, "%s sends no traffic to blue or green (weights 0/0)", a.where())
	case b > 0 && g > 0:
		if g > b {
			return 1, true, nil
		}
		return 0, true, nil
	case g > 0:
		return 1, false, nil
	}
	return 0, false, nil
}

// describe is the human form of the split: "blue (myapp-blue) 100% / green (myapp-green) 0%".
func (t traffic) describe(a *Adapter) string {
	total := t.weight(0, a) + t.weight(1, a)
	pct := func(i int) int32 {
		if total <= 0 {
			return 0
		}
		return t.weight(i, a) * 100 / total
	}
	return fmt.Sprintf("%s %d%% / %s %d%%", a.sides[0].label(), pct(0), a.sides[1].label(), pct(1))
}

// fingerprint identifies the forward action's state for compare-and-set.
func (t traffic) fingerprint() string {
	keys := make([]string, 0, len(t.weights))
	for arn, w := range t.weights {
		keys = append(keys, fmt.Sprintf("%s=%d", arn, w))
	}
	slices.Sort(keys)
	types := make([]string, 0, len(t.actions))
	for _, act := range t.actions {
		types = append(types, string(act.Type))
	}
	return strings.Join(types, ",") + "|" + strings.Join(keys, ",")
}

// Snapshot implements platforms.Platform.
func (a *Adapter) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	t, err := a.read(ctx)
	if err != nil {
		return nil, err
	}
	liveIdx, split, err := t.live(a)
	if err != nil {
		return nil, err
	}
	live, other := a.sides[liveIdx], a.sides[1-liveIdx]
	h, err := a.health(ctx, live)
	if err != nil {
		return nil, err
	}
	hl := platforms.Health{Desired: h.total, Ready: h.healthy, Known: true, Detail: live.label() + ": " + h.summary()}
	if split {
		hl.Detail = "traffic split " + t.describe(a) + "; " + hl.Detail
	}
	a.mu.Lock()
	a.lastSeen = t.fingerprint()
	a.mu.Unlock()
	cur := platforms.Revision{ID: live.color, Artifact: live.name}
	return &platforms.Snapshot{
		Current:           cur,
		History:           []platforms.Revision{cur, {ID: other.color, Artifact: other.name}},
		Health:            hl,
		RolloutInProgress: split,
	}, nil
}

// Stop implements platforms.Platform. A blue-green switch has no rollout
// of its own to pause: the listener points at one group or it doesn't.
// When traffic is split something else (CodeDeploy, a pipeline) may be
// shifting it; rollbot cannot pause that tool, so it says so.
func (a *Adapter) Stop(ctx context.Context, dryRun bool) (platforms.Result, error) {
	t, err := a.read(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	_, split, err := t.live(a)
	if err != nil {
		return platforms.Result{}, err
	}
	detail := fmt.Sprintf("nothing to pause: a blue-green switch has no rollout in progress (%s)", t.describe(a))
	if split {
		detail = fmt.Sprintf("traffic is split (%s); rollbot cannot pause whatever is shifting it (e.g. CodeDeploy): stop it there. The rollback moves 100%% to one group.", t.describe(a))
	}
	return platforms.Result{Outcome: platforms.Skipped, Detail: detail}, nil
}

// resolve maps a revision (ID "blue"/"green" or a target group name) to a side.
func (a *Adapter) resolve(rev platforms.Revision) (int, error) {
	for i, s := range a.sides {
		if rev.ID == s.color || rev.ID == s.name || (rev.ID == "" && rev.Artifact == s.name) {
			return i, nil
		}
	}
	return 0, platforms.Userf(platforms.ErrNotFound, "%q is neither blue (%s) nor green (%s)", rev.ID, a.sides[0].name, a.sides[1].name)
}

// Rollback implements platforms.Platform: switch the forward action to
// the side to, 100/0, after checking that side's targets are healthy.
func (a *Adapter) Rollback(ctx context.Context, to platforms.Revision, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	if progress == nil {
		progress = func(platforms.Progress) {}
	}
	toIdx, err := a.resolve(to)
	if err != nil {
		return platforms.Result{}, err
	}
	dst, src := a.sides[toIdx], a.sides[1-toIdx]
	log := a.log.With("op", "rollback", "to", dst.color)

	before, err := a.read(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	if before.weight(toIdx, a) > 0 && before.weight(1-toIdx, a) == 0 {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("already switched: %s gets 100%% of the traffic", dst.label())}, nil
	}
	a.mu.Lock()
	seen := a.lastSeen
	a.mu.Unlock()
	if seen != "" && seen != before.fingerprint() {
		return platforms.Result{}, platforms.Userf(platforms.ErrConflict,
			"%s changed since the assessment (now %s); someone else is switching traffic. Re-run the assessment before rolling back", a.where(), before.describe(a))
	}

	progress(platforms.Progress{Message: fmt.Sprintf("checking %s targets", dst.label())})
	h, err := a.health(ctx, dst)
	if err != nil {
		return platforms.Result{}, err
	}
	if h.total == 0 || h.healthy < h.total {
		return platforms.Result{}, platforms.Userf(nil, "refusing to switch to %s: %s. Fix or wait for those targets, then retry", dst.label(), h.refusal())
	}

	after := newActions(before, dst.arn, src.arn)
	plan := []string{
		fmt.Sprintf("%s: forward %s -> %s 100%% / %s 0%%", a.where(), before.describe(a), dst.label(), src.label()),
		fmt.Sprintf("previous action, to switch back: %s (roll back to %s)", before.describe(a), src.color),
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Detail: fmt.Sprintf("would switch %s to %s (%d/%d targets healthy)", a.where(), dst.label(), h.healthy, h.total), Plan: plan}, nil
	}

	// Compare-and-set: re-read right before the write.
	now, err := a.read(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	if now.fingerprint() != before.fingerprint() {
		return platforms.Result{}, platforms.Userf(platforms.ErrConflict,
			"%s changed while rolling back (was %s, now %s); someone else is switching traffic, so rollbot did not touch it", a.where(), before.describe(a), now.describe(a))
	}
	progress(platforms.Progress{Message: fmt.Sprintf("switching %s to %s", a.where(), dst.label())})
	if a.cfg.RuleARN != "" {
		_, err = a.api.ModifyRule(ctx, &elb.ModifyRuleInput{RuleArn: aws.String(a.cfg.RuleARN), Actions: after})
		err = a.awsErr(err, "ModifyRule")
	} else {
		_, err = a.api.ModifyListener(ctx, &elb.ModifyListenerInput{ListenerArn: aws.String(a.cfg.ListenerARN), DefaultActions: after})
		err = a.awsErr(err, "ModifyListener")
	}
	if err != nil {
		return platforms.Result{}, err
	}
	log.Info("switched traffic", "from", before.describe(a), "to_group", dst.name)

	check, err := a.read(ctx)
	if err != nil {
		return platforms.Result{}, err
	}
	if check.weight(toIdx, a) <= 0 || check.weight(1-toIdx, a) != 0 {
		return platforms.Result{}, platforms.Userf(nil, "switched %s, but it now reads %s; check the load balancer", a.where(), check.describe(a))
	}
	a.mu.Lock()
	a.lastSeen = check.fingerprint()
	a.mu.Unlock()
	progress(platforms.Progress{Message: fmt.Sprintf("%s now forwards 100%% to %s", a.where(), dst.label()), Updated: h.total, Ready: h.healthy, Desired: h.total, Done: true})
	return platforms.Result{
		Outcome: platforms.Done,
		Detail:  fmt.Sprintf("switched traffic to %s; %s stays attached at weight 0 so it can be switched back", dst.label(), src.label()),
		Plan:    plan,
	}, nil
}

// newActions copies actions, replacing the forward action with a weighted
// forward dst=100, src=0 (stickiness kept). Authenticate-OIDC actions read
// back without their client secret are sent with UseExistingClientSecret,
// as ModifyListener requires.
func newActions(t traffic, dst, src string) []elbtypes.Action {
	out := make([]elbtypes.Action, len(t.actions))
	for i, act := range t.actions {
		if act.AuthenticateOidcConfig != nil && act.AuthenticateOidcConfig.ClientSecret == nil {
			c := *act.AuthenticateOidcConfig
			c.UseExistingClientSecret = aws.Bool(true)
			act.AuthenticateOidcConfig = &c
		}
		if i == t.fwd {
			fc := &elbtypes.ForwardActionConfig{
				TargetGroups: []elbtypes.TargetGroupTuple{
					{TargetGroupArn: aws.String(dst), Weight: aws.Int32(100)},
					{TargetGroupArn: aws.String(src), Weight: aws.Int32(0)},
				},
			}
			if act.ForwardConfig != nil {
				fc.TargetGroupStickinessConfig = act.ForwardConfig.TargetGroupStickinessConfig
			}
			act = elbtypes.Action{Type: elbtypes.ActionTypeEnumForward, Order: act.Order, ForwardConfig: fc}
		}
		out[i] = act
	}
	return out
}

// The do-not-deploy tags on a target group (runbook §6). The group is the
// environment, not the version: a deploy tool that puts a new version
// into it removes the tags, and must not switch traffic to a group that
// carries them.
const (
	TagDoNotDeploy   = "rollbot:do-not-deploy" // "true"
	TagDoNotDeployBy = "rollbot:do-not-deploy-by"
	TagDoNotDeployAt = "rollbot:do-not-deploy-at" // RFC 3339
)

// MarkDoNotDeploy implements platforms.Platform: it tags the bad side's
// target group (elasticloadbalancing:AddTags). A group already tagged is
// left as it is.
func (a *Adapter) MarkDoNotDeploy(ctx context.Context, rev platforms.Revision, by string) (platforms.Result, error) {
	var sd *side
	for i := range a.sides {
		if rev.ID == a.sides[i].color || rev.ID == a.sides[i].name || rev.Artifact == a.sides[i].name || rev.Artifact == a.sides[i].arn {
			sd = &a.sides[i]
		}
	}
	if sd == nil {
		return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "%s is neither the blue nor the green target group of %s", rev.Label(), a.Target())
	}
	out, err := a.api.DescribeTags(ctx, &elb.DescribeTagsInput{ResourceArns: []string{sd.arn}})
	if err != nil {
		return platforms.Result{}, a.awsErr(err, "DescribeTags")
	}
	for _, d := range out.TagDescriptions {
		for _, t := range d.Tags {
			if aws.ToString(t.Key) == TagDoNotDeploy && aws.ToString(t.Value) == "true" {
				return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("target group %s already carries the tag %s", sd.name, TagDoNotDeploy)}, nil
			}
		}
	}
	tags := []elbtypes.Tag{
		{Key: aws.String(TagDoNotDeploy), Value: aws.String("true")},
		{Key: aws.String(TagDoNotDeployAt), Value: aws.String(time.Now().UTC().Format(time.RFC3339))},
	}
	if by != "" {
		tags = append(tags, elbtypes.Tag{Key: aws.String(TagDoNotDeployBy), Value: aws.String(by)})
	}
	if _, err := a.api.AddTags(ctx, &elb.AddTagsInput{ResourceArns: []string{sd.arn}, Tags: tags}); err != nil {
		return platforms.Result{}, a.awsErr(err, "AddTags")
	}
	a.log.Info("target group tagged do-not-deploy", "op", "mark", "group", sd.name)
	return platforms.Result{Outcome: platforms.Done, Detail: fmt.Sprintf("target group %s tagged %s=true (a deploy into it removes the tag)", sd.name, TagDoNotDeploy)}, nil
}

// groupHealth summarises DescribeTargetHealth.
type groupHealth struct {
	total, healthy int
	bad            []string // "i-0abc unhealthy (Target.FailedHealthChecks)"
	unused         bool
}

func (h groupHealth) summary() string {
	s := fmt.Sprintf("%d/%d targets healthy", h.healthy, h.total)
	if len(h.bad) > 0 {
		s += "; " + strings.Join(h.bad, ", ")
	}
	return s
}

func (h groupHealth) refusal() string {
	switch {
	case h.total == 0:
		return "it has no registered targets"
	case h.unused:
		return h.summary() + ". Targets in state \"unused\" are not health-checked because the group is not attached to the load balancer; attach it (e.g. in the forward action at weight 0) so the load balancer checks it"
	}
	return h.summary()
}

func (a *Adapter) health(ctx context.Context, s side) (groupHealth, error) {
	out, err := a.api.DescribeTargetHealth(ctx, &elb.DescribeTargetHealthInput{TargetGroupArn: aws.String(s.arn)})
	if err != nil {
		return groupHealth{}, a.awsErr(err, "DescribeTargetHealth")
	}
	var h groupHealth
	for _, d := range out.TargetHealthDescriptions {
		h.total++
		state, reason, id := "unknown", "", "?"
		if d.TargetHealth != nil {
			state, reason = string(d.TargetHealth.State), string(d.TargetHealth.Reason)
		}
		if d.Target != nil {
			id = aws.ToString(d.Target.Id)
		}
		if state == string(elbtypes.TargetHealthStateEnumHealthy) {
			h.healthy++
			continue
		}
		if state == string(elbtypes.TargetHealthStateEnumUnused) {
			h.unused = true
		}
		b := id + " " + state
		if reason != "" {
			b += " (" + reason + ")"
		}
		if len(h.bad) < 5 {
			h.bad = append(h.bad, b)
		}
	}
	return h, nil
}

// awsErr turns an SDK error into one a user can act on, keeping the raw
// error as the cause for the log. op is the API operation.
func (a *Adapter) awsErr(err error, op string) error {
	if err == nil {
		return nil
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "AccessDenied", "AccessDeniedException", "UnauthorizedOperation":
			return platforms.Userf(err, "AWS denied elasticloadbalancing:%s on %s: grant rollbot's IAM role that action, then retry", op, a.where())
		case "Throttling", "ThrottlingException", "RequestLimitExceeded":
			return platforms.Userf(err, "AWS kept throttling elasticloadbalancing:%s after %d attempts; wait a minute and retry", op, a.cfg.MaxAttempts)
		case "ListenerNotFound":
			return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrNotFound, err), "%s not found; check listener_arn", a.where())
		case "RuleNotFound":
			return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrNotFound, err), "%s not found; check rule_arn", a.where())
		case "TargetGroupNotFound":
			return platforms.Userf(fmt.Errorf("%w: %w", platforms.ErrNotFound, err), "a target group of %s was not found; check blue.arn and green.arn", a.Target())
		case "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "UnrecognizedClientException":
			return platforms.Userf(err, "AWS rejected rollbot's credentials (%s); check its AWS credentials", ae.ErrorCode())
		}
	}
	return fmt.Errorf("%s %s: %w", op, a.where(), err)
}

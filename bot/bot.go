// Package bot wires rollbot to Slack (Socket Mode) and Redis and runs the
// runbook engine of package handlers. It is the only package that imports
// slack-go's socketmode.
package bot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/scrape"
	"rollbot/state"
)

// Options build a Bot.
type Options struct {
	Env      Env
	Redis    redis.UniversalClient
	Prefix   string
	Services []*handlers.Service
	Engine   handlers.Options
	Log      *slog.Logger
	// SchemaInterval is how often rollbot records the applied migration
	// versions of services whose tool stores no applied time (default 5m).
	SchemaInterval time.Duration
	// OpsAddr is where /healthz, /readyz and /metrics listen (bot/ops.go);
	// "" disables them. Metrics, if nil, are created by New.
	OpsAddr string
	Metrics *Metrics
	// GateToken is the bearer token of the deploy gate on the ops
	// listener (GET /v1/deployable); "" leaves the gate off.
	GateToken string
	// Durability is what every state write waits for (on Sentinel: one
	// replica), from the REDIS_URL's deployment.
	Durability state.Durability
	// Secrets are replaced in every Slack message, with Env.Secrets (see
	// Secrets).
	Secrets []string
	// Alertmanager, with AlertToken, serves the alert receiver on the ops
	// listener (nil: no receiver).
	Alertmanager *AlertmanagerConfig
	AlertToken   string
	// OwnProcess: the bot tends its process's memory: once connected to
	// Slack and settled it hands the executable's pages that start-up
	// touched back to the kernel (bot/pages_linux.go), and while quiet it
	// keeps the heap's runway free for a burst (bot/runway.go). Serve
	// sets it; tests running the bot inside the test binary leave it off.
	OwnProcess bool
}

// Bot is a running rollbot.
type Bot struct {
	api    *slack.Client
	sm     *socketmode.Client
	store  *state.Store
	engine *handlers.Engine
	log    *slog.Logger
	opts   Options

	metrics *Metrics
	ops     *ops // nil when Options.OpsAddr is ""
	// scrapes scrapes the services with a scrape: source in the background.
	scrapes *scrape.Collector

	// pages decides when the executable's pages are trimmed again
	// (pages.go); starts paces the handlers of a burst.
	pages pageTrim
	// readAheadDue: the first envelope after a trim came; the first
	// handler to start turns the tables' read-ahead back on.
	readAheadDue atomic.Bool
	// warmWarned is set once a warm pass has failed and said so: later
	// failures, every idleUnmap, go to the debug log.
	warmWarned atomic.Bool
	starts     *startSlots
	// gc keeps collections out of a burst's acks (runway.go).
	gc *gcHold
}

// Serve runs the production bot from a config and the environment until
// ctx ends.
func Serve(ctx context.Context, cfg *Config, env Env, log *slog.Logger) error {
	if err := errors.Join(cfg.Validate(), env.Validate()); err != nil {
		return err
	}
	opsAddr, err := OpsAddrFromOS()
	if err != nil {
		return err
	}
	gateToken, err := GateTokenFromOS()
	if err != nil {
		return err
	}
	var alertToken string
	if cfg.Alertmanager != nil {
		name := cfg.Alertmanager.tokenEnv()
		if alertToken = os.Getenv(name); len(alertToken) < 16 {
			return fmt.Errorf("%s: the alertmanager receiver needs a bearer token of at least 16 characters in this variable", name)
		}
		if opsAddr == "" {
			return fmt.Errorf("alertmanager: the receiver is served on the ops listener, which %s=off disables", OpsAddrVar)
		}
	}
	secrets := Secrets(cfg, env, os.Getenv)
	log = slog.New(NewRedactHandler(log.Handler(), secrets...))
	// One server, Sentinel or Cluster, by the form of REDIS_URL (see
	// state.ParseRedisURL); an unreachable Redis is named here, before
	// anything else starts.
	ru, err := state.ParseRedisURL(env.RedisURL)
	if err != nil {
		return err
	}
	rdb, err := connectRedis(ctx, ru)
	if err != nil {
		return err
	}
	defer rdb.Close()
	log.Info("connected to redis", "redis", ru.String())
	services, err := BuildServices(ctx, cfg, state.New(rdb, cfg.RedisPrefix), log)
	if err != nil {
		return err
	}
	checkAccess(ctx, services, log)
	b, err := New(ctx, Options{Env: env, Redis: rdb, Prefix: cfg.RedisPrefix, Services: services, Engine: cfg.EngineOptions(), Log: log,
		OpsAddr: opsAddr, GateToken: gateToken, Durability: ru.Durability(), Secrets: secrets, Alertmanager: cfg.Alertmanager, AlertToken: alertToken,
		OwnProcess: true})
	if err != nil {
		return err
	}
	return b.Run(ctx)
}

// New connects the pieces; Run starts serving. It adds a hook to
// o.Redis that counts failed commands in the metrics.
func New(ctx context.Context, o Options) (*Bot, error) {
	m := o.Metrics
	if m == nil {
		m = NewMetrics()
	}
	o.Redis.AddHook(m.RedisHook())
	api := slack.New(o.Env.BotToken, slack.OptionAPIURL(o.Env.APIURL), slack.OptionAppLevelToken(o.Env.AppToken))
	store := state.New(o.Redis, o.Prefix)
	store.SetDurability(o.Durability)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := store.Ping(pctx); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	b := &Bot{api: api, store: store, log: o.Log, opts: o, metrics: m, starts: newStartSlots(burstStarts, burstStartHold), gc: newGCHold()}
	b.sm = socketmode.New(api, socketmode.OptionPingInterval(20*time.Second))
	if o.Engine.Metrics == nil {
		o.Engine.Metrics = m
	}
	redactor := NewRedactor(append(o.Env.Secrets(), o.Secrets...)...)
	chat := newRedactChat(&slackChat{api: api, metrics: m, log: o.Log}, redactor)
	if o.Engine.Redact == nil {
		o.Engine.Redact = redactor.String
	}
	b.engine = handlers.New(ctx, chat, store, o.Services, o.Engine, o.Log)
	b.scrapes = scrape.NewCollector(scrape.CollectorOptions{Shared: store, Owner: b.engine.Replica(), Lease: o.Engine.Lease}, o.Log)
	for _, s := range o.Services {
		if a, ok := s.Metrics.(*scrape.Adapter); ok {
			b.scrapes.Add(s.Name, a)
		}
	}
	if o.OpsAddr != "" {
		var err error
		var g *gate
		if o.GateToken != "" {
			names := make([]string, 0, len(o.Services))
			for _, s := range o.Services {
				names = append(names, s.Name)
			}
			g = newGate(store, o.GateToken, names, o.Log)
		}
		var alerts http.Handler
		if o.Alertmanager != nil {
			if o.AlertToken == "" {
				return nil, errors.New("alertmanager: no bearer token for the receiver")
			}
			alerts = &alertReceiver{cfg: *o.Alertmanager, token: o.AlertToken, engine: b.Engine, log: o.Log}
		}
		if b.ops, err = listenOps(o.OpsAddr, m, o.Redis, g, o.Log, alerts); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Engine exposes the runbook engine (tests).
func (b *Bot) Engine() *handlers.Engine { return b.engine }

// Run checks the Slack token, reports incidents interrupted by a previous
// stop, then serves Socket Mode until ctx ends and background steps finish.
func (b *Bot) Run(ctx context.Context) error {
	defer b.serveOps(ctx)()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	auth, err := b.api.AuthTestContext(actx)
	cancel()
	if err != nil {
		var se slack.SlackErrorResponse
		if errors.As(err, &se) {
			return fmt.Errorf("slack auth.test: %s (check SLACK_BOT_TOKEN)", se.Err)
		}
		return fmt.Errorf("slack auth.test: %w", err)
	}
	b.log.Info("connected to slack", "team", auth.Team, "bot_user", auth.UserID)
	sctx, scancel := context.WithCancel(ctx)
	schemaDone := make(chan struct{})
	go func() { defer close(schemaDone); b.recordSchemas(sctx) }()
	superDone := make(chan struct{})
	go func() { defer close(superDone); b.engine.Supervise(sctx) }()
	scrapeDone := make(chan struct{})
	go func() { defer close(scrapeDone); b.scrapes.Run(sctx) }()
	defer func() { scancel(); <-schemaDone; <-superDone; <-scrapeDone }()
	if b.opts.OwnProcess {
		go b.releaseStartupPages(sctx)
		go b.keepHeapRunway(sctx)
	}
	errc := make(chan error, 1)
	go func() { errc <- b.sm.RunContext(ctx) }()
	for {
		select {
		case <-ctx.Done():
			b.engine.Wait()
			return nil
		case err := <-errc:
			b.engine.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("socket mode: %w", err)
		case evt := <-b.sm.Events:
			b.dispatch(ctx, evt)
		}
	}
}

// keepHeapRunway collects garbage while the bot is quiet and the heap
// has used a quarter of its runway (see keepHeapRunway in runway.go), so that a
// burst of commands does not start a collection among its acks.
func (b *Bot) keepHeapRunway(ctx context.Context) {
	tick := time.NewTicker(runwayCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if b.pages.quiet(time.Now(), runwayQuiet) && keepHeapRunway() {
			b.log.Debug("collected garbage while quiet, ahead of the next burst")
		}
	}
}

// runwayCheck is how often a quiet bot looks at its heap's runway;
// runwayQuiet is how
// long no envelope may have come and no handler run before it collects.
const (
	runwayCheck = 5 * time.Second
	runwayQuiet = time.Second
)

// startupSettle is how long after the first Socket Mode connection
// start-up counts as done: the first supervision pass, the first scrapes
// and schema records have run.
const startupSettle = 5 * time.Second

// releaseStartupPages waits for the first Socket Mode connection and for
// start-up to settle, then releases the executable's pages start-up
// touched (see releaseStartupPages in pages_linux.go).
func (b *Bot) releaseStartupPages(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !b.metrics.SocketConnected() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(startupSettle):
	}
	before, after, err := releaseStartupPages()
	if err != nil {
		b.log.Info("start-up pages kept", "reason", err.Error())
		return
	}
	b.log.Info("released the executable's start-up pages", "file_resident_kib_before", before, "file_resident_kib_after", after)
	b.pages.trimmedAt(time.Now())
	b.warmAcks(ctx)
	// After an incident or a burst, once rollbot is quiet again, the
	// pages it brought in are returned the same way.
	tick.Reset(idleUnmap / 4)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if b.pages.unmapDue(time.Now()) {
			if err := unmapIdlePages(); err != nil {
				b.log.Info("executable pages kept mapped", "reason", err.Error())
				return
			}
			b.warmAcks(ctx)
			continue
		}
		if !b.pages.due(time.Now()) {
			continue
		}
		before, after, err := releaseStartupPages()
		if err != nil {
			b.log.Info("executable pages kept", "reason", err.Error())
			return
		}
		b.log.Debug("released the executable's pages after a quiet spell", "file_resident_kib_before", before, "file_resident_kib_after", after)
		b.warmAcks(ctx)
	}
}

// warmAcks maps the acknowledgement's code again after a trim or an
// unmap (see warmAckPath in warm.go).
func (b *Bot) warmAcks(ctx context.Context) {
	wctx, cancel := context.WithTimeoutCause(ctx, 3*time.Second, errWarmTimeout)
	defer cancel()
	err := b.warmAckPath(wctx)
	// The pass's garbage is collected now, if it has used a quarter of
	// the heap's runway, rather than by the burst that follows.
	keepHeapRunway()
	switch {
	case err == nil || ctx.Err() != nil:
	case b.warmWarned.CompareAndSwap(false, true):
		b.log.Warn("acknowledgement path not warmed; the first acks after a long idle may wait for disk reads", "err", err.Error())
	default:
		b.log.Debug("acknowledgement path not warmed", "err", err.Error())
	}
}

// burstStarts handlers start at once under a burst, each holding its slot
// for burstStartHold at most (see startSlots).
const (
	burstStarts    = 4
	burstStartHold = 20 * time.Millisecond
	burstQuiet     = 5 * time.Millisecond
	burstQuietMax  = 250 * time.Millisecond
)

// dispatch acknowledges every envelope before any Redis or platform work
// (the duplicate check included) and hands the work to its own goroutine,
// so the socket loop never waits on a store or a handler.
func (b *Bot) dispatch(ctx context.Context, evt socketmode.Event) {
	b.metrics.socketEvent(evt.Type)
	switch evt.Type {
	case socketmode.EventTypeConnecting, socketmode.EventTypeConnected, socketmode.EventTypeHello:
		b.log.Debug("socket mode", "event", string(evt.Type))
		return
	case socketmode.EventTypeConnectionError, socketmode.EventTypeInvalidAuth, socketmode.EventTypeIncomingError, socketmode.EventTypeErrorBadMessage:
		b.log.Warn("socket mode", "event", string(evt.Type))
		return
	case socketmode.EventTypeDisconnect:
		b.log.Info("socket mode disconnect; reconnecting")
		return
	}
	if evt.Request == nil {
		return
	}
	b.starts.envelope(time.Now())
	b.gc.envelope(time.Now())
	if b.pages.busy(time.Now()) {
		// Trimmed while idle: the work this envelope starts reads its
		// tables ahead again, once the burst's acks are out (the first
		// handler past the quiet gate turns it on). Not here: with
		// read-ahead on, a table page the host has reclaimed is read
		// back with its whole read-around window (8 MB on this
		// machine's disk, ~3–5 ms a fault) while every later ack waits;
		// page by page it is one small read.
		b.readAheadDue.Store(true)
	}
	if op, work := b.acknowledge(ctx, b.sm, evt); work != nil {
		b.work(op, work)
	}
}

// acknowledge acks a request envelope on sm and returns the work it calls
// for (nil: none, or none that waits for the ack). It touches no store or
// platform: it is the whole of what an envelope waits for before its ack,
// and warmAckPath (warm.go) runs it on canned envelopes to keep that code
// mapped while rollbot idles.
func (b *Bot) acknowledge(ctx context.Context, sm *socketmode.Client, evt socketmode.Event) (op string, work func(ctx context.Context)) {
	req := *evt.Request
	switch evt.Type {
	case socketmode.EventTypeSlashCommand:
		sm.Ack(req)
		cmd, ok := evt.Data.(slack.SlashCommand)
		if !ok {
			return "", nil
		}
		return "command", func(ctx context.Context) {
			if !b.first(ctx, firstNonEmpty(cmd.TriggerID, req.EnvelopeID)) {
				return
			}
			b.engine.HandleCommand(ctx, handlers.SlashCommand{UserID: cmd.UserID, ChannelID: cmd.ChannelID,
				ChannelName: cmd.ChannelName, Text: cmd.Text, TriggerID: cmd.TriggerID})
		}
	case socketmode.EventTypeInteractive:
		cb, ok := evt.Data.(slack.InteractionCallback)
		if !ok {
			sm.Ack(req)
			return "", nil
		}
		switch cb.Type {
		case slack.InteractionTypeViewSubmission:
			// Inline errors must travel in the ack, so this one is
			// acknowledged when the check is done: off the event loop,
			// so other envelopes are not held behind it.
			go func() {
				vctx, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
				errs := b.engine.HandleView(vctx, viewSubmission(cb))
				cancel()
				if len(errs) > 0 {
					sm.Ack(req, map[string]any{"response_action": "errors", "errors": errs})
					return
				}
				sm.Ack(req)
			}()
			return "", nil
		case slack.InteractionTypeBlockActions:
			sm.Ack(req)
			return "action", func(ctx context.Context) {
				if !b.first(ctx, firstNonEmpty(cb.TriggerID, req.EnvelopeID)) {
					return
				}
				for _, act := range cb.ActionCallback.BlockActions {
					a := handlers.Action{UserID: cb.User.ID, ChannelID: cb.Channel.ID, MessageTS: cb.Container.MessageTs,
						ActionID: act.ActionID, Value: act.Value, TriggerID: cb.TriggerID}
					if a.ChannelID == "" {
						a.ChannelID = cb.Container.ChannelID
					}
					b.engine.HandleAction(ctx, a)
				}
			}
		}
	}
	sm.Ack(req)
	return "", nil
}

// first reports whether a user action is new. The key is the action's
// trigger_id (one per user action, the same in every copy Slack delivers),
// else the envelope id: redeliveries and duplicates act once.
func (b *Bot) first(ctx context.Context, key string) bool {
	if key == "" {
		return true
	}
	ok, err := b.store.Once(ctx, "action:"+key, time.Hour)
	if err != nil {
		b.log.Warn("envelope dedup", "err", err)
		return true
	}
	if !ok {
		b.log.Info("duplicate delivery ignored", "key", key)
	}
	return ok
}

// work runs a handler off the socket loop with a bounded context.
func (b *Bot) work(op string, f func(ctx context.Context)) {
	go func() {
		b.pages.begin()
		defer func() { b.pages.end(time.Now()) }()
		release := b.starts.take()
		defer release()
		if b.readAheadDue.CompareAndSwap(true, false) {
			if err := readAheadTables(); err != nil {
				b.log.Debug("read-ahead not restored", "reason", err.Error())
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		defer func() {
			if r := recover(); r != nil {
				b.log.Error("handler panic", "op", op, "panic", r)
			}
		}()
		f(ctx)
	}()
}

func viewSubmission(cb slack.InteractionCallback) handlers.ViewSubmission {
	v := handlers.ViewSubmission{UserID: cb.User.ID, CallbackID: cb.View.CallbackID, PrivateMetadata: cb.View.PrivateMetadata,
		Values: map[string]map[string]string{}}
	if cb.View.State != nil {
		for bid, acts := range cb.View.State.Values {
			v.Values[bid] = map[string]string{}
			for aid, val := range acts {
				v.Values[bid][aid] = val.Value
			}
		}
	}
	return v
}

// checkAccess reports missing permissions at start, so a Role without
// `patch` is found before the incident, not during it. It does not stop
// the bot: the other services still work.
func checkAccess(ctx context.Context, services []*handlers.Service, log *slog.Logger) {
	for _, s := range services {
		for _, x := range []any{s.Platform, s.Database} {
			c, ok := x.(platforms.AccessChecker)
			if !ok {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.CheckAccess(cctx)
			cancel()
			if err != nil {
				msg, _ := platforms.UserMessage(err)
				log.Error("permission check failed: rollbacks of this service will fail until it is fixed", "service", s.Name, "problem", msg, "err", err)
			}
		}
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// recordSchemas records every service's applied migration versions now and
// then every SchemaInterval until ctx ends: the golang-migrate and Rails
// tables store no applied time, so "which migrations ran since the deploy"
// is answered against the newest record from before the deploy.
func (b *Bot) recordSchemas(ctx context.Context) {
	every := b.opts.SchemaInterval
	if every <= 0 {
		every = 5 * time.Minute
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, svc := range b.opts.Services {
			r, ok := svc.Database.(platforms.SchemaRecorder)
			if !ok {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := r.RecordSchema(rctx); err != nil && ctx.Err() == nil {
				b.log.Warn("record applied migrations", "service", svc.Name, "err", err)
			}
			cancel()
		}
		t.Reset(every)
	}
}

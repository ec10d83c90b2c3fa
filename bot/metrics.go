package bot

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// Metrics are rollbot's Prometheus metrics, in a registry of their own
// (never the global one: two bots in one test binary must not share
// counters). A nil *Metrics records nothing.
//
// The runbook engine reports through RollbackFinished, StepDone and
// LeaseTakeover; the Slack wrapper, the Socket Mode loop and a Redis hook
// report the rest.
type Metrics struct {
	reg *prometheus.Registry

	rollbacks   *prometheus.CounterVec
	steps       *prometheus.HistogramVec
	slackCalls  *prometheus.CounterVec
	slackErrors *prometheus.CounterVec
	slack429s   *prometheus.CounterVec
	slackPaced  *prometheus.HistogramVec
	reconnects  prometheus.Counter
	socketUp    prometheus.Gauge
	redisErrors *prometheus.CounterVec
	takeovers   prometheus.Counter

	connected atomic.Bool // Socket Mode has a live connection
	connects  atomic.Int64
}

// NewMetrics creates the metrics and their registry (with the Go runtime
// and process collectors).
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollbot_rollbacks_total",
			Help: "Rollbacks that ended, by outcome.",
		}, []string{"outcome"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rollbot_step_duration_seconds",
			Help: "Duration of runbook steps, by step.",
			// A step lasts from a second (assessment) to hours (RDS restore).
			Buckets: []float64{0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200},
		}, []string{"step"}),
		slackCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollbot_slack_api_calls_total",
			Help: "Slack Web API calls (each try), by method.",
		}, []string{"method"}),
		slackErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollbot_slack_api_errors_total",
			Help: "Slack Web API calls that failed (429s included), by method.",
		}, []string{"method"}),
		slack429s: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollbot_slack_api_ratelimited_total",
			Help: "Slack Web API calls answered HTTP 429, by method.",
		}, []string{"method"}),
		slackPaced: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rollbot_slack_pace_wait_seconds",
			Help: "Time a Slack Web API call waited for its turn under Slack's rate-limit tier before being sent, by method.",
			// From no wait to a queue of many incidents' updates.
			Buckets: []float64{0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120},
		}, []string{"method"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rollbot_socketmode_reconnects_total",
			Help: "Socket Mode connections opened after the first one.",
		}),
		socketUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rollbot_socketmode_connected",
			Help: "1 while Socket Mode has a live connection.",
		}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollbot_redis_errors_total",
			Help: "Redis commands that failed (a missing key is not a failure), by command.",
		}, []string{"command"}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rollbot_lease_takeovers_total",
			Help: "Incidents taken over from a replica whose lease expired.",
		}),
	}
	m.reg.MustRegister(m.rollbacks, m.steps, m.slackCalls, m.slackErrors, m.slack429s, m.slackPaced,
		m.reconnects, m.socketUp, m.redisErrors, m.takeovers,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the metrics live (/metrics serves it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// RollbackFinished counts a rollback that ended with outcome (for example
// "verified", "failed", "cancelled").
func (m *Metrics) RollbackFinished(outcome string) {
	if m != nil {
		m.rollbacks.WithLabelValues(outcome).Inc()
	}
}

// StepDone records how long a runbook step took.
func (m *Metrics) StepDone(step string, d time.Duration) {
	if m != nil {
		m.steps.WithLabelValues(step).Observe(d.Seconds())
	}
}

// LeaseTakeover counts an incident taken over after its owner's lease
// expired.
func (m *Metrics) LeaseTakeover() {
	if m != nil {
		m.takeovers.Inc()
	}
}

// slackCall counts one try of a Web API method and its outcome.
func (m *Metrics) slackCall(method string, err error) {
	if m == nil {
		return
	}
	m.slackCalls.WithLabelValues(method).Inc()
	if err == nil {
		return
	}
	m.slackErrors.WithLabelValues(method).Inc()
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		m.slack429s.WithLabelValues(method).Inc()
	}
}

// slackPace records how long a call waited under its rate-limit tier.
func (m *Metrics) slackPace(method string, d time.Duration) {
	if m != nil {
		m.slackPaced.WithLabelValues(method).Observe(d.Seconds())
	}
}

// socketEvent follows the Socket Mode client's connection events: a
// connection attempt or a disconnect means no live connection; each
// connection after the first is a reconnect.
func (m *Metrics) socketEvent(t socketmode.EventType) {
	if m == nil {
		return
	}
	switch t {
	case socketmode.EventTypeConnected:
		m.connected.Store(true)
		m.socketUp.Set(1)
		if m.connects.Add(1) > 1 {
			m.reconnects.Inc()
		}
	case socketmode.EventTypeConnecting, socketmode.EventTypeDisconnect, socketmode.EventTypeConnectionError, socketmode.EventTypeInvalidAuth:
		m.connected.Store(false)
		m.socketUp.Set(0)
	}
}

// SocketConnected reports whether Socket Mode has a live connection.
func (m *Metrics) SocketConnected() bool { return m != nil && m.connected.Load() }

// redisHook counts Redis commands that fail; redis.Nil (no such key) is
// an answer, not a failure.
type redisHook struct{ m *Metrics }

// RedisHook returns a go-redis hook that feeds rollbot_redis_errors_total.
func (m *Metrics) RedisHook() redis.Hook { return redisHook{m} }

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

// ProcessHook counts by the error the command returns: go-redis sets the
// command's own error only after the hooks have run.
func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.count(cmd.Name(), err)
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		counted := false
		for _, c := range cmds {
			if handshake(c) {
				// go-redis identifies itself on each new connection and
				// ignores a server too old for CLIENT SETINFO (before 7.2).
				counted = true
				continue
			}
			if c.Err() != nil && !errors.Is(c.Err(), redis.Nil) {
				h.count(c.Name(), c.Err())
				counted = true
			}
		}
		if !counted {
			h.count("pipeline", err)
		}
		return err
	}
}

func (h redisHook) count(command string, err error) {
	if err != nil && !errors.Is(err, redis.Nil) && h.m != nil {
		h.m.redisErrors.WithLabelValues(command).Inc()
	}
}

// handshake reports whether cmd is go-redis's CLIENT SETINFO.
func handshake(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 || cmd.Name() != "client" {
		return false
	}
	sub, _ := args[1].(string)
	return strings.EqualFold(sub, "setinfo")
}

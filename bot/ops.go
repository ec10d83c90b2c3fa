package bot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// OpsAddrVar names the ops listener's address in the environment.
const OpsAddrVar = "ROLLBOT_OPS_ADDR"

// DefaultOpsAddr is where the ops listener listens unless told otherwise.
const DefaultOpsAddr = ":9090"

// OpsAddrFromOS reads ROLLBOT_OPS_ADDR: unset or empty is DefaultOpsAddr,
// "off" disables the listener (""), anything else must be host:port.
func OpsAddrFromOS() (string, error) {
	v := strings.TrimSpace(os.Getenv(OpsAddrVar))
	switch {
	case v == "":
		return DefaultOpsAddr, nil
	case strings.EqualFold(v, "off"):
		return "", nil
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		return "", fmt.Errorf("%s: %q is not host:port (for example :9090) or off", OpsAddrVar, v)
	}
	return v, nil
}

// ops is the operations listener: /healthz, /readyz, /metrics and, with
// a token, the deploy gate /v1/deployable (gate.go).
type ops struct {
	ln      net.Listener
	srv     *http.Server
	metrics *Metrics
	redis   redis.UniversalClient
	log     *slog.Logger
}

// listenOps opens the ops listener on addr; it serves once serve is called.
func listenOps(addr string, m *Metrics, rdb redis.UniversalClient, g *gate, log *slog.Logger, alerts http.Handler) (*ops, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ops listener (%s): %w", OpsAddrVar, err)
	}
	o := &ops{ln: ln, metrics: m, redis: rdb, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", o.healthz)
	mux.HandleFunc("GET /readyz", o.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{Registry: m.Registry()}))
	if g != nil {
		mux.HandleFunc("GET /v1/deployable", g.deployable)
	}
	if alerts != nil {
		mux.Handle("POST /alertmanager", alerts)
	}
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	return o, nil
}

// Addr is the listener's address (with the port chosen for ":0").
func (o *ops) Addr() string { return o.ln.Addr().String() }

// serve answers until ctx ends, then shuts the listener down.
func (o *ops) serve(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := o.srv.Serve(o.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.log.Error("ops listener", "err", err)
		}
	}()
	o.log.Info("ops listener", "addr", o.Addr())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := o.srv.Shutdown(sctx); err != nil {
		_ = o.srv.Close()
	}
	<-done
}

// healthz answers 200 while the process runs.
func (o *ops) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyz answers 200 only when Socket Mode is connected and Redis
// answers PING, else 503 with the reason. A replica that is not ready gets
// no envelopes anyway (it has no connection), but the probe keeps a
// rolling update from going on while the new pods cannot work.
func (o *ops) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	var problems []string
	if !o.metrics.SocketConnected() {
		problems = append(problems, "slack: socket mode not connected")
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if err := o.redis.Ping(ctx).Err(); err != nil {
		// The reason only: the error text could carry the Redis address.
		problems = append(problems, "redis: no answer to PING")
		o.log.Warn("readiness: redis ping failed", "err", err)
	}
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(problems, "\n"))
		return
	}
	fmt.Fprintln(w, "ready")
}

// serveOps starts the ops listener, if any, for the life of Run; the
// returned func stops it and waits.
func (b *Bot) serveOps(ctx context.Context) (stop func()) {
	if b.ops == nil {
		return func() {}
	}
	octx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); b.ops.serve(octx) }()
	return func() { cancel(); <-done }
}

// OpsAddr is the address the ops listener listens on, "" without one.
func (b *Bot) OpsAddr() string {
	if b.ops == nil {
		return ""
	}
	return b.ops.Addr()
}

// Metrics are the bot's metrics (the runbook engine reports to them).
func (b *Bot) Metrics() *Metrics { return b.metrics }

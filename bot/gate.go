package bot

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"rollbot/state"
)

// The deploy gate: pipelines ask whether a version of a service may be
// deployed, from the command line (rollbot deployable) or over HTTP
// (GET /v1/deployable on the ops listener). A version is refused while it
// is marked DO_NOT_DEPLOY, while the service has a post-rollback deploy
// lock (deploy_lock), or while a rollback of it is in progress.

// GateTokenVar names the bearer token of GET /v1/deployable in the
// environment. Unset, the endpoint is not served.
const GateTokenVar = "ROLLBOT_GATE_TOKEN"

// ExitNotDeployable is the exit status of `rollbot deployable` for a
// version that must not be deployed.
const ExitNotDeployable = 3

const maxVersion = 300

// gate answers GET /v1/deployable.
type gate struct {
	store    *state.Store
	token    [32]byte // sha256 of the token: compared in constant time
	services map[string]bool
	log      *slog.Logger
}

func newGate(store *state.Store, token string, services []string, log *slog.Logger) *gate {
	g := &gate{store: store, token: sha256.Sum256([]byte(token)), services: map[string]bool{}, log: log}
	for _, s := range services {
		g.services[s] = true
	}
	return g
}

// authorized checks the bearer token; nothing about it is logged.
func (g *gate) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], g.token[:]) == 1
}

// verdictJSON is the HTTP and --json answer.
type verdictJSON struct {
	state.Verdict
	Reason string `json:"reason,omitempty"`
}

func (g *gate) deployable(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if !g.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rollbot"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		g.log.Warn("deploy gate: request without a valid token", "remote", r.RemoteAddr)
		return
	}
	service, version := r.URL.Query().Get("service"), strings.TrimSpace(r.URL.Query().Get("version"))
	switch {
	case service == "" || version == "":
		gateError(w, http.StatusBadRequest, "give service and version: /v1/deployable?service=myapp&version=v1.2.3")
		return
	case len(version) > maxVersion:
		gateError(w, http.StatusBadRequest, fmt.Sprintf("version is too long (at most %d characters)", maxVersion))
		return
	case !g.services[service]:
		gateError(w, http.StatusNotFound, fmt.Sprintf("unknown service %q; services: %s", service, strings.Join(g.serviceNames(), ", ")))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v, err := g.store.Deployable(ctx, service, version)
	if err != nil {
		g.log.Error("deploy gate: read state", "service", service, "err", err)
		gateError(w, http.StatusServiceUnavailable, "rollbot cannot read its state store (Redis) now; retry, or treat as not deployable")
		return
	}
	g.log.Info("deploy gate", "service", service, "version", version, "deployable", v.Deployable)
	w.Header().Set("Content-Type", "application/json")
	if !v.Deployable {
		w.WriteHeader(http.StatusConflict)
	}
	json.NewEncoder(w).Encode(verdictJSON{Verdict: v, Reason: strings.Join(v.Reasons, "; ")})
}

func (g *gate) serviceNames() []string {
	out := make([]string, 0, len(g.services))
	for s := range g.services {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func gateError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// GateTokenFromOS reads ROLLBOT_GATE_TOKEN ("" disables the HTTP gate).
func GateTokenFromOS() (string, error) {
	t := os.Getenv(GateTokenVar)
	if t != "" && len(t) < 16 {
		return "", fmt.Errorf("%s: at least 16 characters (a random token, e.g. openssl rand -hex 32)", GateTokenVar)
	}
	return t, nil
}

// ErrNotDeployable is returned by Deployable for a refused version, after
// it printed why.
var ErrNotDeployable = errors.New("not deployable")

// Deployable is `rollbot deployable`: it prints whether version of
// service may be deployed (or the verdict as JSON), and returns
// ErrNotDeployable when not.
func Deployable(ctx context.Context, cfg *Config, redisURL, service, version string, asJSON bool, out io.Writer) error {
	if service == "" || version == "" {
		return errors.New("usage: rollbot deployable --service <name> --version <version|tag|digest|image> [--json]")
	}
	if _, ok := cfg.Services[service]; !ok {
		return fmt.Errorf("unknown service %q; services: %s", service, strings.Join(sortedServiceNames(cfg), ", "))
	}
	if redisURL == "" {
		return errors.New("REDIS_URL: required, the Redis rollbot uses")
	}
	ru, err := state.ParseRedisURL(redisURL)
	if err != nil {
		return err
	}
	rdb := ru.Client()
	defer rdb.Close()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := state.New(rdb, cfg.RedisPrefix).Deployable(qctx, service, strings.TrimSpace(version))
	if err != nil {
		return fmt.Errorf("read rollbot's state (%s): %w", ru, err)
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		enc.Encode(verdictJSON{Verdict: v, Reason: strings.Join(v.Reasons, "; ")})
	} else if v.Deployable {
		fmt.Fprintf(out, "deployable: %s %s\n", service, version)
	} else {
		fmt.Fprintf(out, "not deployable: %s %s\n", service, version)
		for _, r := range v.Reasons {
			fmt.Fprintf(out, "  - %s\n", r)
		}
	}
	if !v.Deployable {
		return ErrNotDeployable
	}
	return nil
}

package bot

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"rollbot/handlers"
)

// DefaultAlertTokenEnv names the variable holding the bearer token
// Alertmanager must send to the receiver.
const DefaultAlertTokenEnv = "ROLLBOT_ALERTMANAGER_TOKEN"

// AlertmanagerConfig is the `alertmanager:` section: the receiver of
// Alertmanager's webhook (POST /alertmanager on the ops listener) and how
// alert labels map to services.
type AlertmanagerConfig struct {
	// TokenEnv names the variable with the bearer token Alertmanager
	// sends (webhook_configs http_config.authorization.credentials).
	// Default ROLLBOT_ALERTMANAGER_TOKEN. Required at start.
	TokenEnv string `yaml:"token_env"`
	// ServiceLabel is the alert label whose value names the service, when
	// no route matches (default "service").
	ServiceLabel string `yaml:"service_label"`
	// Routes map label sets to services, checked in order first.
	Routes []AlertRoute `yaml:"routes"`
}

// AlertRoute maps the alerts whose labels include Match to Service.
type AlertRoute struct {
	Match   map[string]string `yaml:"match"`
	Service string            `yaml:"service"`
	// Channel is where the assessment goes (default: the first of
	// incident_channels).
	Channel string `yaml:"channel"`
}

func (a *AlertmanagerConfig) tokenEnv() string {
	if a.TokenEnv == "" {
		return DefaultAlertTokenEnv
	}
	return a.TokenEnv
}

// validate checks the routes, and that every service's alerts have a
// channel to go to that a click can be bound to: a route's channel and
// the default (the first of the service's channels, else of
// incident_channels, given by id) must be channel ids, since a click
// carries the id and one outside the incident's channel is refused.
func (a *AlertmanagerConfig) validate(services map[string]ServiceConfig, incidentChannels []string) []error {
	var errs []error
	routed := map[string]bool{}
	for i, r := range a.Routes {
		p := fmt.Sprintf("alertmanager.routes[%d]", i)
		if len(r.Match) == 0 {
			errs = append(errs, fmt.Errorf("%s.match: at least one label", p))
		}
		if _, ok := services[r.Service]; !ok {
			errs = append(errs, fmt.Errorf("%s.service: %q is not a configured service", p, r.Service))
		}
		if r.Channel != "" && !handlers.IsChannelID(r.Channel) {
			errs = append(errs, fmt.Errorf("%s.channel: %q is not a channel id (C…): the incident an alert opens is bound to its channel's id", p, r.Channel))
		}
		routed[r.Service] = routed[r.Service] || r.Channel != ""
	}
	for _, name := range slices.Sorted(maps.Keys(services)) {
		chs := services[name].Channels
		if len(chs) == 0 {
			chs = incidentChannels
		}
		if !routed[name] && !slices.ContainsFunc(chs, handlers.IsChannelID) {
			errs = append(errs, fmt.Errorf("services.%s: its alerts have no channel to go to: give a channel id (C…) in its channels (or incident_channels), or a channel in an alertmanager route for it", name))
		}
	}
	return errs
}

// alertPayload is Alertmanager's webhook body (version 4).
type alertPayload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []struct {
		Status       string            `json:"status"`
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       time.Time         `json:"endsAt"`
		GeneratorURL string            `json:"generatorURL"`
	} `json:"alerts"`
}

// alertReceiver serves POST /alertmanager.
type alertReceiver struct {
	cfg    AlertmanagerConfig
	token  string
	engine func() *handlers.Engine
	log    *slog.Logger
}

// route finds the service (and channel) of an alert group.
func (r *alertReceiver) route(p alertPayload) (service, channel string, ok bool) {
	labels := map[string]string{}
	for k, v := range p.CommonLabels {
		labels[k] = v
	}
	if len(p.Alerts) > 0 {
		for k, v := range p.Alerts[0].Labels {
			if _, set := labels[k]; !set {
				labels[k] = v
			}
		}
	}
	for _, rt := range r.cfg.Routes {
		match := true
		for k, v := range rt.Match {
			if labels[k] != v {
				match = false
				break
			}
		}
		if match {
			return rt.Service, rt.Channel, true
		}
	}
	label := r.cfg.ServiceLabel
	if label == "" {
		label = "service"
	}
	if v := labels[label]; v != "" {
		return v, "", true
	}
	return "", "", false
}

func (r *alertReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	got, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(r.token)) != 1 {
		// Never log what was sent: it may be a real token of something else.
		r.log.Warn("alertmanager receiver: request without the right bearer token refused", "remote", req.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="rollbot"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, "cannot read the body", http.StatusBadRequest)
		return
	}
	var p alertPayload
	if err := json.Unmarshal(body, &p); err != nil || p.GroupKey == "" || (p.Status != "firing" && p.Status != "resolved") {
		http.Error(w, "not an Alertmanager webhook payload (version 4)", http.StatusBadRequest)
		return
	}
	service, channel, ok := r.route(p)
	if !ok {
		r.log.Warn("alertmanager receiver: no service for the alert group", "group", p.GroupKey, "labels", fmt.Sprint(p.CommonLabels))
		// 200: Alertmanager would retry a 4xx/5xx forever; the config is what to fix.
		fmt.Fprintln(w, "no service matches this alert group; see alertmanager.routes in rollbot's config")
		return
	}
	al := handlers.Alert{GroupKey: p.GroupKey, Resolved: p.Status == "resolved", Service: service, Channel: channel,
		Name: firstNonEmptyStr(p.CommonLabels["alertname"], p.GroupLabels["alertname"]), Summary: p.CommonAnnotations["summary"]}
	for _, a := range p.Alerts {
		if al.StartsAt.IsZero() || a.StartsAt.Before(al.StartsAt) {
			al.StartsAt = a.StartsAt
		}
		if a.EndsAt.After(al.EndsAt) {
			al.EndsAt = a.EndsAt
		}
		if al.URL == "" {
			al.URL = a.GeneratorURL
		}
		if al.Name == "" {
			al.Name = a.Labels["alertname"]
		}
		if al.Summary == "" {
			al.Summary = a.Annotations["summary"]
		}
	}
	ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
	defer cancel()
	outcome, id, err := r.engine().HandleAlert(ctx, al)
	if err != nil {
		r.log.Error("alertmanager receiver", "group", p.GroupKey, "service", service, "err", err)
		if errors.Is(err, context.DeadlineExceeded) {
			http.Error(w, "timed out", http.StatusServiceUnavailable)
			return
		}
		// A service that is not configured, a channel missing: retrying
		// will not help, so 200 with the reason.
		fmt.Fprintln(w, "not handled, see rollbot's log")
		return
	}
	r.log.Info("alertmanager receiver", "group", p.GroupKey, "service", service, "status", p.Status, "outcome", string(outcome), "incident", id)
	fmt.Fprintf(w, "%s %s\n", outcome, id)
}

func firstNonEmptyStr(vs ...string) string {
	if i := slices.IndexFunc(vs, func(v string) bool { return v != "" }); i >= 0 {
		return vs[i]
	}
	return ""
}

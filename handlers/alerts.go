package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"rollbot/state"
)

// AlertRequester is who requests a rollback opened by an alert.
const AlertRequester = "alertmanager"

// alertGroupTTL is how long an alert group's incident is remembered.
const alertGroupTTL = 7 * 24 * time.Hour

// Alert is one notification of an Alertmanager alert group, mapped to a
// service by the bot's config.
type Alert struct {
	GroupKey string
	Resolved bool // the group's status is "resolved"
	Service  string
	Channel  string // the service's incident channel
	Name     string // alertname
	Summary  string
	StartsAt time.Time
	EndsAt   time.Time
	URL      string
}

// AlertOutcome says what HandleAlert did, for the receiver's log.
type AlertOutcome string

const (
	AlertOpened    AlertOutcome = "opened"    // a new incident: its assessment is posted
	AlertDuplicate AlertOutcome = "duplicate" // the group already has its incident
	AlertResolved  AlertOutcome = "resolved"  // the group's message now says resolved
	AlertIgnored   AlertOutcome = "ignored"   // resolved with no incident, or refused
)

// HandleAlert turns an alert group into an assessment with the Roll back
// button in the service's incident channel, exactly as `/rollback
// <service>` would: it never acts alone, a person decides. One incident
// per alert group, across replicas (the group is claimed in Redis); a
// later notification of the same group changes nothing, and its
// resolution updates the incident's message.
func (e *Engine) HandleAlert(ctx context.Context, al Alert) (AlertOutcome, string, error) {
	svc := e.services[al.Service]
	if svc == nil {
		return AlertIgnored, "", fmt.Errorf("alert %s: service %q is not in rollbot's config", al.Name, al.Service)
	}
	if al.Channel == "" {
		ch, ok := alertChannel(e.channelsOf(svc))
		if !ok {
			return AlertIgnored, "", fmt.Errorf("alert %s: no incident channel id (C…) for %s in its channels or incident_channels; give one, or a channel in alertmanager.routes", al.Name, al.Service)
		}
		al.Channel = ch
	}
	if al.Resolved {
		return e.resolveAlert(ctx, al)
	}
	ok, id, err := e.store.ClaimAlertGroup(ctx, al.GroupKey, alertGroupTTL)
	if err != nil {
		return AlertIgnored, "", err
	}
	if !ok {
		return AlertDuplicate, id, nil
	}
	reason := "alert " + al.Name
	if al.Summary != "" {
		reason += ": " + al.Summary
	}
	ref := &state.AlertRef{GroupKey: al.GroupKey, Name: al.Name, Summary: al.Summary, StartsAt: al.StartsAt, URL: al.URL}
	in, msg := e.openIncident(ctx, svc, al.Channel, AlertRequester, Command{Kind: CmdRollback, Service: svc.Name, Reason: reason}, ref)
	if msg != nil {
		// Said once per group in the channel (the claim stays, so a repeat
		// of the notification is not said again).
		e.post(ctx, al.Channel, "", withAlertNote(*msg, al))
		return AlertIgnored, "", e.store.SetAlertGroup(ctx, al.GroupKey, "refused", alertGroupTTL)
	}
	if err := e.store.SetAlertGroup(ctx, al.GroupKey, in.ID, alertGroupTTL); err != nil {
		e.log.Warn("record the alert group's incident", "incident", in.ID, "err", err)
	}
	return AlertOpened, in.ID, nil
}

func withAlertNote(m Msg, al Alert) Msg {
	return simple(fmt.Sprintf(":rotating_light: Alertmanager alert *%s* fired for *%s*. %s", al.Name, al.Service, m.Text))
}

// resolveAlert marks the group's incident resolved and shows it on the
// assessment message (the buttons stay while it awaits a decision: a
// person may still want to roll back).
func (e *Engine) resolveAlert(ctx context.Context, al Alert) (AlertOutcome, string, error) {
	id, err := e.store.ResolveAlertGroup(ctx, al.GroupKey, alertGroupTTL)
	if err != nil || id == "" || id == "refused" {
		return AlertIgnored, id, err
	}
	at := al.EndsAt
	if at.IsZero() || at.After(e.now()) {
		at = e.now()
	}
	in, err := e.store.Update(ctx, id, state.Claim{}, func(in *state.Incident) {
		if in.Alert != nil && in.Alert.ResolvedAt.IsZero() {
			in.Alert.ResolvedAt = at
		}
	})
	if errors.Is(err, state.ErrNotFound) {
		return AlertIgnored, id, nil
	}
	if err != nil {
		return AlertIgnored, id, err
	}
	e.record(ctx, id, AlertRequester, "alert", "alert "+al.Name+" resolved at "+clock(at))
	if ts := in.Messages["assessment"]; ts != "" && in.Status != state.Assessing {
		e.update(ctx, in.Channel, ts, assessmentMsg(in, e.assessmentOf(in), nil))
	}
	return AlertResolved, id, nil
}

// alertChannel is where an alert without a route channel goes: the first
// of the service's incident channels given by id. A click carries the
// channel's id, and a click outside the incident's channel is refused, so
// an incident opened in a channel given by name could not be acted on.
func alertChannel(channels []string) (string, bool) {
	for _, c := range channels {
		if IsChannelID(c) {
			return c, true
		}
	}
	return "", false
}

// IsChannelID reports whether c is a channel id (C… or G…), not a name.
func IsChannelID(c string) bool {
	if len(c) < 3 || (c[0] != 'C' && c[0] != 'G') {
		return false
	}
	for _, r := range c[1:] {
		if (r < 'A' || r > 'Z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

package handlers

import (
	"context"
	"fmt"
)

// Drill configures practice rollbacks of a service in a non-production
// environment (runbook best practice 5: practise rollbacks monthly on
// staging with the same procedures).
type Drill struct {
	// Bad is the artifact the drill deploys as its "bad" version (an
	// image with a failing health check, a known bad tag).
	Bad string
}

// startDrill answers `/rollback drill <service>`.
func (e *Engine) startDrill(ctx context.Context, sc SlashCommand, cmd Command) {
	svc := e.services[cmd.Service]
	if svc.Drill == nil {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, drillRefusedMsg(svc, "its environment is not marked for drills"))
		return
	}
	e.ephemeral(ctx, sc.ChannelID, sc.UserID, errorMsg(fmt.Sprintf("drills of `%s` are configured, but this version of rollbot cannot run them yet; practise with `/rollback %s --dry-run`.", svc.Name, svc.Name)))
}

// drills answers `/rollback drills <service>`.
func (e *Engine) drills(ctx context.Context, sc SlashCommand, cmd Command) {
	svc := e.services[cmd.Service]
	e.ephemeral(ctx, sc.ChannelID, sc.UserID, simple(fmt.Sprintf("No drills of `%s` have run yet.", svc.Name)))
}

func drillRefusedMsg(svc *Service, why string) Msg {
	t := fmt.Sprintf("No drill of `%s`: %s. Drills run only on environments with `drills: true` in rollbot's config (for example staging)", svc.Name, why)
	if svc.Env == "" {
		t += "; define the service per environment (`services.<name>.environments`) and mark the non-production one"
	}
	return errorMsg(t + ". Nothing was done.")
}

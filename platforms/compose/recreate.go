package compose

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"rollbot/platforms"
	"rollbot/platforms/internal/docker"
)

// rollbackRecreate replaces the containers in todo, one at a time, by
// containers of target with the same configuration.
func (a *Adapter) rollbackRecreate(ctx context.Context, st state, todo []container.InspectResponse, target string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	svc := a.cfg.Service
	var plan []string
	for _, c := range todo {
		plan = append(plan, fmt.Sprintf("container %s (%s): recreate with image %s -> %s, same env, ports%s, networks %s, volumes, labels, restart policy %s",
			name(c), c.ID[:12], docker.WithoutDigest(c.Config.Image), docker.WithoutDigest(target), portsText(c), strings.Join(networkNames(c), ", "), restartText(c)))
	}
	note := ""
	if file, err := a.composeFile(st); err == nil {
		note = fmt.Sprintf(" Note: %s still names %s, so the next `docker-compose up` redeploys it; change it to %s there.", file.path, docker.WithoutDigest(st.current), docker.WithoutDigest(target))
	}
	if dryRun {
		return platforms.Result{Outcome: platforms.Planned, Plan: plan,
			Detail: fmt.Sprintf("would recreate %d containers of compose service %s with %s.%s", len(todo), svc, docker.WithoutDigest(target), note)}, nil
	}
	p := platforms.Progress{Desired: len(st.containers), Updated: len(st.containers) - len(todo)}
	p.Ready = p.Updated
	report := func(msg string) {
		if progress != nil {
			p.Message = msg
			progress(p)
		}
	}
	for i, old := range todo {
		report(fmt.Sprintf("Replacing container %s (%d of %d) with %s", name(old), i+1, len(todo), docker.WithoutDigest(target)))
		newID, err := a.replace(ctx, old, target, report)
		if err != nil {
			return platforms.Result{Plan: plan}, err
		}
		p.Updated++
		p.Ready++
		a.log.InfoContext(ctx, "container replaced", "op", "rollback", "container", name(old), "old_id", old.ID[:12], "new_id", newID[:12], "image", target)
	}
	p.Done = true
	report(fmt.Sprintf("compose service %s converged: %d/%d containers running %s and healthy", svc, p.Ready, p.Desired, docker.WithoutDigest(target)))
	return platforms.Result{Outcome: platforms.Done, Plan: plan,
		Detail: fmt.Sprintf("recreated %d containers of compose service %s with %s; all healthy.%s", len(todo), svc, docker.WithoutDigest(target), note)}, nil
}

func portsText(c container.InspectResponse) string {
	if c.HostConfig == nil || len(c.HostConfig.PortBindings) == 0 {
		return ""
	}
	var out []string
	for p, bs := range c.HostConfig.PortBindings {
		for _, b := range bs {
			host := b.HostPort
			if host == "" {
				host = "random"
			}
			if b.HostIP.IsValid() {
				host = b.HostIP.String() + ":" + host
			}
			out = append(out, host+"->"+p.String())
		}
	}
	slices.Sort(out)
	return " " + strings.Join(slices.Compact(out), " ")
}

func networkNames(c container.InspectResponse) []string {
	if c.NetworkSettings == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(c.NetworkSettings.Networks))
}

func restartText(c container.InspectResponse) string {
	if c.HostConfig == nil || c.HostConfig.RestartPolicy.Name == "" {
		return "no"
	}
	return string(c.HostConfig.RestartPolicy.Name)
}

// replace swaps old for a new container of target: check old is still
// what was read, stop it, rename it aside, create and start the new one
// under old's name, wait until it is ready, then remove old. If the new
// container does not get ready, it is removed and old comes back.
func (a *Adapter) replace(ctx context.Context, old container.InspectResponse, target string, report func(string)) (string, error) {
	cname := name(old)
	// Compare-and-set: the container must still be the one read, on the same image.
	now, err := a.api.ContainerInspect(ctx, old.ID, client.ContainerInspectOptions{})
	if err != nil {
		if docker.IsNotFound(err) {
			return "", a.conflict(fmt.Errorf("container %s (%s): %w", cname, old.ID[:12], err), fmt.Sprintf("container %s was removed or replaced", cname))
		}
		return "", a.eng.Err(err, "inspect container "+cname)
	}
	if now.Container.Image != old.Image || now.Container.Config.Image != old.Config.Image || name(now.Container) != cname {
		return "", a.conflict(fmt.Errorf("container %s (%s): image %s -> %s", cname, old.ID[:12], old.Config.Image, now.Container.Config.Image),
			fmt.Sprintf("container %s now runs %s", cname, now.Container.Config.Image))
	}
	create, connect, err := a.newContainerSpec(ctx, old, target)
	if err != nil {
		return "", err
	}
	wasRunning := old.State != nil && old.State.Running
	if err := a.stop(ctx, old.ID); err != nil {
		return "", a.eng.Err(err, "stop container "+cname)
	}
	aside := fmt.Sprintf("%s_rollbot_replaced_%s", cname, old.ID[:12])
	if _, err := a.api.ContainerRename(ctx, old.ID, client.ContainerRenameOptions{NewName: aside}); err != nil {
		return "", a.restore(ctx, old, "", wasRunning, a.eng.Err(err, "rename container "+cname))
	}
	res, err := a.api.ContainerCreate(ctx, create)
	if err != nil {
		return "", a.restore(ctx, old, "", wasRunning, a.eng.Err(err, "create container "+cname))
	}
	for netName, ep := range connect {
		if _, err := a.api.NetworkConnect(ctx, netName, client.NetworkConnectOptions{Container: res.ID, EndpointConfig: ep}); err != nil {
			return "", a.restore(ctx, old, res.ID, wasRunning, a.eng.Err(err, "connect container "+cname+" to "+netName))
		}
	}
	if _, err := a.api.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		return "", a.restore(ctx, old, res.ID, wasRunning, a.eng.Err(err, "start container "+cname))
	}
	if err := a.waitReady(ctx, res.ID, report); err != nil {
		cause := fmt.Errorf("container %s on %s: %w", cname, target, err)
		if !isFinal(err) {
			return "", a.restore(ctx, old, res.ID, wasRunning, cause) // engine error
		}
		return "", a.restore(ctx, old, res.ID, wasRunning, platforms.Userf(cause,
			"the new container %s on %s did not become healthy (%v); rollbot put the previous container (%s) back. %s",
			cname, docker.WithoutDigest(target), err, docker.WithoutDigest(old.Config.Image), docker.FallbackHint(docker.WithoutDigest(target))))
	}
	if _, err := a.api.ContainerRemove(ctx, old.ID, client.ContainerRemoveOptions{}); err != nil {
		a.log.WarnContext(ctx, "remove replaced container", "container", aside, "err", err)
	}
	return res.ID, nil
}

// restore undoes a failed replacement: the new container goes, the old one
// gets its name back and, if it ran, runs again. It returns cause, joined
// with any error of the restore itself.
func (a *Adapter) restore(ctx context.Context, old container.InspectResponse, newID string, start bool, cause error) error {
	// Restore even when ctx is done (e.g. the wait timed out).
	ctx = context.WithoutCancel(ctx)
	var errs []error
	if newID != "" {
		if _, err := a.api.ContainerRemove(ctx, newID, client.ContainerRemoveOptions{Force: true}); err != nil {
			errs = append(errs, fmt.Errorf("remove new container: %w", err))
		}
	}
	if _, err := a.api.ContainerRename(ctx, old.ID, client.ContainerRenameOptions{NewName: name(old)}); err != nil {
		errs = append(errs, fmt.Errorf("rename %s back: %w", old.ID[:12], err))
	}
	if start {
		if _, err := a.api.ContainerStart(ctx, old.ID, client.ContainerStartOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("start %s again: %w", old.ID[:12], err))
		}
	}
	if len(errs) > 0 {
		a.log.ErrorContext(ctx, "restore previous container", "container", name(old), "err", errors.Join(errs...))
		return platforms.Userf(errors.Join(append([]error{cause}, errs...)...),
			"the rollback of container %s failed and putting the previous container back failed too; check `docker ps -a --filter label=%s=%s`",
			name(old), labelProject, a.cfg.Project)
	}
	return cause
}

// newContainerSpec is the create request for old's replacement on target,
// plus the networks to connect before start (API 1.41 takes one network
// at create).
func (a *Adapter) newContainerSpec(ctx context.Context, old container.InspectResponse, target string) (client.ContainerCreateOptions, map[string]*network.EndpointSettings, error) {
	if old.Config == nil || old.HostConfig == nil {
		return client.ContainerCreateOptions{}, nil, fmt.Errorf("container %s: incomplete inspect data", name(old))
	}
	cfg := *old.Config
	cfg.Image = target
	// Settings the old image supplied are left to the new image.
	img, err := a.api.ImageInspect(ctx, old.Image)
	if err != nil && !docker.IsNotFound(err) {
		return client.ContainerCreateOptions{}, nil, a.eng.Err(err, "inspect image "+old.Config.Image)
	}
	if err == nil && img.Config != nil {
		ic := img.Config
		cfg.Env = slices.DeleteFunc(slices.Clone(cfg.Env), func(e string) bool { return slices.Contains(ic.Env, e) })
		if slices.Equal(cfg.Cmd, ic.Cmd) {
			cfg.Cmd = nil
		}
		if slices.Equal(cfg.Entrypoint, ic.Entrypoint) {
			cfg.Entrypoint = nil
		}
		if reflect.DeepEqual(cfg.Healthcheck, ic.Healthcheck) {
			cfg.Healthcheck = nil
		}
		if cfg.WorkingDir == ic.WorkingDir {
			cfg.WorkingDir = ""
		}
		if cfg.User == ic.User {
			cfg.User = ""
		}
		if cfg.StopSignal == ic.StopSignal {
			cfg.StopSignal = ""
		}
		cfg.Labels = maps.Clone(cfg.Labels)
		for k, v := range ic.Labels {
			if cfg.Labels[k] == v {
				delete(cfg.Labels, k)
			}
		}
		cfg.ExposedPorts = maps.Clone(cfg.ExposedPorts)
		for p := range ic.ExposedPorts {
			if np, err := network.ParsePort(p); err == nil {
				delete(cfg.ExposedPorts, np)
			}
		}
		cfg.Volumes = maps.Clone(cfg.Volumes)
		for v := range ic.Volumes {
			delete(cfg.Volumes, v)
		}
	}
	// The engine set the hostname to the old container's short ID.
	if cfg.Hostname == old.ID[:12] {
		cfg.Hostname = ""
	}
	host := *old.HostConfig
	// Keep anonymous volumes (and any volume not named in the host config):
	// mount the same volume at the same place.
	targets := map[string]bool{}
	for _, b := range host.Binds {
		if parts := strings.Split(b, ":"); len(parts) >= 2 {
			targets[parts[1]] = true
		}
	}
	for _, m := range host.Mounts {
		targets[m.Target] = true
	}
	for _, m := range old.Mounts {
		if m.Type == mount.TypeVolume && m.Name != "" && !targets[m.Destination] {
			host.Mounts = append(slices.Clone(host.Mounts), mount.Mount{Type: mount.TypeVolume, Source: m.Name, Target: m.Destination, ReadOnly: !m.RW})
			delete(cfg.Volumes, m.Destination)
		}
	}
	// Networks: the one of NetworkMode at create, the others connected after.
	endpoints := map[string]*network.EndpointSettings{}
	if old.NetworkSettings != nil {
		for n, ep := range old.NetworkSettings.Networks {
			if ep == nil {
				continue
			}
			e := &network.EndpointSettings{
				IPAMConfig: ep.IPAMConfig,
				Links:      ep.Links,
				DriverOpts: ep.DriverOpts,
				Aliases:    slices.DeleteFunc(slices.Clone(ep.Aliases), func(s string) bool { return s == old.ID[:12] }),
			}
			endpoints[n] = e
		}
	}
	primary := string(host.NetworkMode)
	create := client.ContainerCreateOptions{Name: name(old), Config: &cfg, HostConfig: &host}
	connect := map[string]*network.EndpointSettings{}
	userDefined := !host.NetworkMode.IsDefault() && !host.NetworkMode.IsBridge() && !host.NetworkMode.IsHost() &&
		!host.NetworkMode.IsNone() && !host.NetworkMode.IsContainer()
	if ep, ok := endpoints[primary]; ok && userDefined {
		create.NetworkingConfig = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{primary: ep}}
	}
	for n, ep := range endpoints {
		if n != primary {
			connect[n] = ep
		}
	}
	return create, connect, nil
}

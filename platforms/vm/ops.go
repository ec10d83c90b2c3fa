package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"rollbot/platforms"
	"rollbot/platforms/internal/neterr"
)

var (
	_ platforms.Platform  = (*Adapter)(nil)
	_ platforms.Fallbacks = (*Adapter)(nil)
)

// hostState is one host as read at the start of an operation.
type hostState struct {
	host Host
	idx  int
	read hostRead
	err  error
}

// readAll reads every host concurrently.
func (a *Adapter) readAll(ctx context.Context) []hostState {
	out := make([]hostState, len(a.cfg.Hosts))
	var wg sync.WaitGroup
	for i, h := range a.cfg.Hosts {
		out[i] = hostState{host: h, idx: i}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].read, out[i].err = a.readHost(ctx, h)
		}()
	}
	wg.Wait()
	return out
}

func (a *Adapter) readHost(ctx context.Context, h Host) (hostRead, error) {
	c, err := a.dial(ctx, h)
	if err != nil {
		return hostRead{}, err
	}
	defer c.Close()
	out, err := a.run(ctx, c, a.readScript(), false)
	if err != nil {
		if text, ok := hostText(err); ok {
			return hostRead{}, platforms.Userf(err, "cannot read the state of %s: %s", h.Name, text)
		}
		return hostRead{}, fmt.Errorf("read the state of %s: %w", h.Name, err)
	}
	return a.parseRead(out), nil
}

// isHostKeyErr: a host key problem is never just "a host is down".
func isHostKeyErr(err error) bool {
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	return errors.As(err, &ke) || errors.As(err, &re)
}

// hostText is the user text of a failed step on one host: the tail of the
// remote command's stderr, the error's user message, or what neterr says
// of a network failure. ok is false for an error rollbot has no words for:
// the caller then returns an error without a user message, and the
// handlers show a reference into the log instead of the raw error.
func hostText(err error) (text string, ok bool) {
	var ce *cmdError
	if errors.As(err, &ce) {
		return ce.tail(), true
	}
	if msg, ok := platforms.UserMessage(err); ok {
		return msg, true
	}
	if reason := neterr.Classify(context.Background(), err).Reason(0); reason != "" {
		return reason, true
	}
	return "an unexpected error", false
}

// history builds the newest-first list of versions available on every
// reachable host.
func (a *Adapter) history(states []hostState) []platforms.Revision {
	type agg struct {
		rel   release
		count int
	}
	all := map[string]*agg{}
	reachable := 0
	for _, s := range states {
		if s.err != nil {
			continue
		}
		reachable++
		for v, r := range s.read.releases {
			g := all[v]
			if g == nil {
				g = &agg{rel: r}
				all[v] = g
			}
			g.count++
			if r.mtime.After(g.rel.mtime) {
				g.rel.mtime = r.mtime
			}
		}
	}
	var rels []release
	for _, g := range all {
		if g.count == reachable {
			rels = append(rels, g.rel)
		}
	}
	sort.Slice(rels, func(i, j int) bool {
		if a.cfg.HistoryOrder == "version" {
			if c := compareVersions(rels[i].version, rels[j].version); c != 0 {
				return c > 0
			}
		}
		if !rels[i].mtime.Equal(rels[j].mtime) {
			return rels[i].mtime.After(rels[j].mtime)
		}
		return compareVersions(rels[i].version, rels[j].version) > 0
	})
	out := make([]platforms.Revision, 0, len(rels))
	for _, r := range rels {
		rev := platforms.Revision{ID: r.version, Artifact: r.artifact, CreatedAt: r.mtime}
		for _, st := range states {
			if by, ok := st.read.marked[r.version]; ok && st.err == nil {
				rev.DoNotDeploy, rev.DoNotDeployBy = true, by
			}
		}
		out = append(out, rev)
	}
	return out
}

// Snapshot implements platforms.Platform: the version on each host (the
// newest of them is Current; disagreement is shown), the versions
// available on every host (newest first), and which hosts are healthy.
func (a *Adapter) Snapshot(ctx context.Context) (*platforms.Snapshot, error) {
	states := a.readAll(ctx)
	var problems []string
	var firstErr, unexpected error
	reachable := 0
	for _, s := range states {
		if s.err == nil {
			reachable++
			continue
		}
		if isHostKeyErr(s.err) {
			return nil, s.err
		}
		if firstErr == nil {
			firstErr = s.err
		}
		text, ok := hostText(s.err)
		if !ok {
			a.log.WarnContext(ctx, "host not read", "op", "snapshot", "host", s.host.Name, "err", s.err)
			text = s.host.Name + " could not be read: " + text
			unexpected = cmp(unexpected, s.err)
		}
		problems = append(problems, text)
	}
	if reachable == 0 {
		if unexpected != nil {
			return nil, fmt.Errorf("no host of %s could be read: %w", a.cfg.Unit, unexpected)
		}
		return nil, platforms.Userf(firstErr, "no host of %s could be read: %s", a.cfg.Unit, strings.Join(problems, "; "))
	}
	hist := a.history(states)
	pos := map[string]int{}
	for i, r := range hist {
		pos[r.ID] = i
	}

	// Current: the newest version running anywhere.
	versions := map[string][]string{} // version -> hosts
	var deployed time.Time
	var unknown []string
	for _, s := range states {
		if s.err != nil {
			continue
		}
		if s.read.version == "" {
			unknown = append(unknown, s.host.Name)
			continue
		}
		versions[s.read.version] = append(versions[s.read.version], s.host.Name)
		if s.read.deployed.After(deployed) {
			deployed = s.read.deployed
		}
	}
	if len(versions) == 0 {
		return nil, platforms.Userf(nil, "could not read the running version of %s on any host (version command: %s)", a.cfg.Unit, a.versionCmd())
	}
	vs := make([]string, 0, len(versions))
	for v := range versions {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool {
		pi, iok := pos[vs[i]]
		pj, jok := pos[vs[j]]
		switch {
		case iok && jok:
			return pi < pj
		case iok != jok:
			return !iok // a version not among the listed ones is newer than all of them
		}
		return compareVersions(vs[i], vs[j]) > 0
	})
	cur := vs[0]
	current := platforms.Revision{ID: cur, Artifact: a.artifact(cur, "")}
	if i, ok := pos[cur]; ok {
		current = hist[i]
	} else {
		hist = append([]platforms.Revision{current}, hist...)
	}

	health := a.healthAll(ctx, states)
	var detail []string
	detail = append(detail, fmt.Sprintf("%d/%d hosts healthy", health.Ready, len(states)))
	detail = append(detail, health.bad...)
	if len(versions) > 1 {
		var parts []string
		for _, v := range vs {
			parts = append(parts, fmt.Sprintf("%s on %s", v, strings.Join(versions[v], ", ")))
		}
		detail = append(detail, "hosts disagree: "+strings.Join(parts, "; "))
	}
	if len(unknown) > 0 {
		detail = append(detail, "version unknown on "+strings.Join(unknown, ", "))
	}
	detail = append(detail, problems...)
	return &platforms.Snapshot{
		Current: current,
		History: hist,
		Health: platforms.Health{
			Desired: len(states), Ready: health.Ready, Known: true,
			Detail: strings.Join(detail, "; "),
		},
		// Hosts on different versions: a deploy tool may still be rolling.
		RolloutInProgress: len(versions) > 1,
		DeployedAt:        deployed,
	}, nil
}

type fleetHealth struct {
	Ready int
	bad   []string
}

func (a *Adapter) healthAll(ctx context.Context, states []hostState) fleetHealth {
	res := make([]error, len(states))
	var wg sync.WaitGroup
	for i, s := range states {
		if s.err != nil {
			res[i] = errors.New("unreachable")
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = a.checkHealth(ctx, s.idx, nil)
		}()
	}
	wg.Wait()
	var h fleetHealth
	for i, err := range res {
		if err == nil {
			h.Ready++
		} else if states[i].err == nil {
			h.bad = append(h.bad, fmt.Sprintf("%s: %v", states[i].host.Name, err))
		}
	}
	return h
}

// healthURL renders host i's health URL ("" when none is configured).
func (a *Adapter) healthURL(i int) (string, error) {
	t := a.health[i]
	if t == nil {
		return "", nil
	}
	h := a.cfg.Hosts[i]
	host, _, _ := net.SplitHostPort(h.Addr)
	var b bytes.Buffer
	if err := t.Execute(&b, map[string]string{"Name": h.Name, "Host": host, "Addr": h.Addr, "User": h.User}); err != nil {
		return "", fmt.Errorf("health_url for %s: %w", h.Name, err)
	}
	return b.String(), nil
}

// checkHealth asks host i once: its health URL answers 2xx, or, without a
// URL, `systemctl is-active` succeeds (c: an open connection, or nil).
func (a *Adapter) checkHealth(ctx context.Context, i int, c *client) error {
	u, err := a.healthURL(i)
	if err != nil {
		return err
	}
	if u == "" {
		if c == nil {
			c, err = a.dial(ctx, a.cfg.Hosts[i])
			if err != nil {
				return errors.New("unreachable over SSH")
			}
			defer c.Close()
		}
		out, err := a.run(ctx, c, a.systemctl("is-active"), false)
		if err != nil {
			if s := strings.TrimSpace(out); s != "" {
				return fmt.Errorf("unit %s is %s", a.cfg.Unit, s)
			}
			return fmt.Errorf("unit %s is not active", a.cfg.Unit)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, min(5*time.Second, a.cfg.HealthTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("bad health URL %s", u)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		reason := neterr.Classify(ctx, err).Reason(0)
		if reason == "" {
			reason = "the request failed"
		}
		return fmt.Errorf("GET %s: %s", u, reason)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// waitHealthy polls host i until healthy or health_timeout.
func (a *Adapter) waitHealthy(ctx context.Context, i int, c *client) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.HealthTimeout)
	defer cancel()
	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := a.checkHealth(ctx, i, c)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%v (still failing after %s)", err, time.Since(start).Round(time.Second))
		case <-tick.C:
		}
	}
}

// Stop implements platforms.Platform.
//
// The runbook's VM step 2 is `sudo systemctl stop myapp`. On one host that
// stops a bad version from doing more harm; on a fleet it stops the whole
// service — an outage rollbot should not cause by default. There is also
// nothing to "pause": systemd has no rollout of its own, and whatever
// deploys (Ansible, a pipeline) runs elsewhere. So Stop is Skipped with
// that explanation, and the rollback restarts one host at a time. Set
// stop_unit_on_pause to get the runbook's literal behaviour (e.g. for a
// single-host service whose bad version damages data while it runs).
func (a *Adapter) Stop(ctx context.Context, dryRun bool) (platforms.Result, error) {
	if !a.cfg.StopUnitOnPause {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf(
			"no rollout in progress to pause on VMs: rollbot does not stop %s on every host (that would take the service down); the rollback restarts one host at a time. If a deploy tool is still running, stop it there", a.cfg.Unit)}, nil
	}
	return a.stopAll(ctx, dryRun)
}

// ScaleToZero implements platforms.Fallbacks: stop the unit on every host.
func (a *Adapter) ScaleToZero(ctx context.Context, dryRun bool) (platforms.Result, error) {
	return a.stopAll(ctx, dryRun)
}

// stopAll runs `systemctl stop` on every host, continuing past failures
// (this is the emergency brake), and reports each.
func (a *Adapter) stopAll(ctx context.Context, dryRun bool) (platforms.Result, error) {
	log := a.log.With("op", "stop")
	var plan, stopped, already, failed []string
	var firstErr, unexpected error
	fail := func(h Host, err error) {
		text, ok := hostText(err)
		if !ok {
			unexpected = cmp(unexpected, err)
		}
		failed = append(failed, fmt.Sprintf("%s: %s", h.Name, text))
		firstErr = cmp(firstErr, err)
	}
	for i, h := range a.cfg.Hosts {
		c, err := a.dial(ctx, h)
		if err != nil {
			fail(h, err)
			continue
		}
		_, activeErr := a.run(ctx, c, a.systemctl("is-active"), false)
		if activeErr != nil {
			already = append(already, h.Name)
			plan = append(plan, fmt.Sprintf("%s: %s already stopped", h.Name, a.cfg.Unit))
			c.Close()
			continue
		}
		plan = append(plan, fmt.Sprintf("%s: %s stop %s", h.Name, a.cfg.Systemctl, a.cfg.Unit))
		if dryRun {
			c.Close()
			continue
		}
		if _, err := a.run(ctx, c, a.systemctl("stop"), true); err != nil {
			fail(h, err)
		} else {
			stopped = append(stopped, h.Name)
			log.Info("unit stopped", "host", h.Name, "index", i)
		}
		c.Close()
	}
	if len(failed) > 0 {
		msg := fmt.Sprintf("could not stop %s on %s", a.cfg.Unit, strings.Join(failed, "; "))
		if len(stopped) > 0 {
			msg += "; stopped on " + strings.Join(stopped, ", ")
		}
		if unexpected != nil {
			return platforms.Result{Outcome: platforms.Done, Detail: msg, Plan: plan}, fmt.Errorf("%s: %w", msg, unexpected)
		}
		return platforms.Result{Outcome: platforms.Done, Detail: msg, Plan: plan}, platforms.Userf(firstErr, "%s", msg)
	}
	switch {
	case dryRun:
		return platforms.Result{Outcome: platforms.Planned, Detail: fmt.Sprintf("would stop %s on %d hosts", a.cfg.Unit, len(a.cfg.Hosts)-len(already)), Plan: plan}, nil
	case len(stopped) == 0:
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("%s is already stopped on every host", a.cfg.Unit), Plan: plan}, nil
	}
	return platforms.Result{Outcome: platforms.Done, Detail: fmt.Sprintf("stopped %s on %s", a.cfg.Unit, strings.Join(stopped, ", ")), Plan: plan}, nil
}

func cmp(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// MarkDoNotDeploy implements platforms.Platform: a marker file
// "<version>.DO_NOT_DEPLOY" beside the version's artifact (in the
// releases, packages or backup directory) on every host, saying who marked
// it and when. Deploy scripts can test for it; rollbot reads it back
// (Revision.DoNotDeploy) and never chooses a marked version. A host that
// already has the marker is left as it is; a host that fails does not stop
// the others.
func (a *Adapter) MarkDoNotDeploy(ctx context.Context, rev platforms.Revision, by string) (platforms.Result, error) {
	if !versionRe.MatchString(rev.ID) {
		return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "%q is not a version rollbot can mark on the hosts", rev.ID)
	}
	marker := a.markerPath(rev.ID)
	content := fmt.Sprintf("DO_NOT_DEPLOY\nversion=%s\nartifact=%s\nby=%s\nat=%s\n", rev.ID, rev.Artifact, by, time.Now().UTC().Format(time.RFC3339))
	tmp := marker + ".rollbot-tmp"
	script := fmt.Sprintf("if [ -f %s ]; then echo exists; exit 0; fi\nprintf '%%s' %s > %s && mv -f %s %s && echo made",
		q(marker), q(content), q(tmp), q(tmp), q(marker))
	var made, existed, failed []string
	var firstErr, unexpected error
	for _, h := range a.cfg.Hosts {
		c, err := a.dial(ctx, h)
		if err == nil {
			var out string
			out, err = a.run(ctx, c, script, true)
			c.Close()
			if err == nil {
				if strings.TrimSpace(out) == "exists" {
					existed = append(existed, h.Name)
				} else {
					made = append(made, h.Name)
					a.log.Info("do-not-deploy marker written", "op", "mark", "host", h.Name, "path", marker)
				}
				continue
			}
		}
		text, ok := hostText(err)
		if !ok {
			// The whole error goes back without a user message: the
			// handlers log it with a reference and say so.
			unexpected = cmp(unexpected, err)
		}
		failed = append(failed, h.Name+": "+text)
		firstErr = cmp(firstErr, err)
	}
	detail := fmt.Sprintf("marker %s on %s", marker, strings.Join(append(made, existed...), ", "))
	if len(failed) > 0 {
		msg := fmt.Sprintf("could not write the marker %s on %s", marker, strings.Join(failed, "; "))
		if len(made)+len(existed) > 0 {
			msg += "; written on " + strings.Join(append(made, existed...), ", ")
		}
		if unexpected != nil {
			return platforms.Result{Outcome: platforms.Done, Detail: msg}, fmt.Errorf("%s: %w", msg, unexpected)
		}
		return platforms.Result{Outcome: platforms.Done, Detail: msg}, platforms.Userf(firstErr, "%s", msg)
	}
	if len(made) == 0 {
		return platforms.Result{Outcome: platforms.Skipped, Detail: detail + " (already there)"}, nil
	}
	return platforms.Result{Outcome: platforms.Done, Detail: detail}, nil
}

// markerPath is the do-not-deploy marker of version ver, beside its
// artifact. The listings ignore it (they list directories, or *.deb).
func (a *Adapter) markerPath(ver string) string {
	return path.Join(a.listDir(), ver+".DO_NOT_DEPLOY")
}

// Rollback implements platforms.Platform: host by host, install to.ID,
// restart, wait healthy; stop at the first failure.
func (a *Adapter) Rollback(ctx context.Context, to platforms.Revision, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	return a.rollTo(ctx, to.ID, dryRun, progress)
}

// SetArtifact implements platforms.Fallbacks: roll every host to an
// explicit version (or artifact path) from the hosts' listed versions.
func (a *Adapter) SetArtifact(ctx context.Context, artifact string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	ver := artifact
	if strings.HasPrefix(artifact, "/") {
		// An artifact path: find which listed version it is.
		ver = ""
		states := a.readAll(ctx)
		for _, s := range states {
			for v, r := range s.read.releases {
				if r.artifact == artifact {
					ver = v
				}
			}
		}
		if ver == "" {
			return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "%s is not one of the versions listed on the hosts (in %s)", artifact, a.listDir())
		}
	}
	return a.rollTo(ctx, ver, dryRun, progress)
}

func (a *Adapter) rollTo(ctx context.Context, ver string, dryRun bool, progress platforms.ProgressFunc) (platforms.Result, error) {
	if progress == nil {
		progress = func(platforms.Progress) {}
	}
	if !versionRe.MatchString(ver) {
		return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "%q is not a version name", ver)
	}
	log := a.log.With("op", "rollback", "to", ver)
	n := len(a.cfg.Hosts)

	// Read every host before touching any.
	states := a.readAll(ctx)
	for _, s := range states {
		if s.err != nil {
			if text, ok := hostText(s.err); ok {
				return platforms.Result{}, platforms.Userf(s.err, "%s; nothing was changed", text)
			}
			return platforms.Result{}, fmt.Errorf("read %s before the rollback, nothing was changed: %w", s.host.Name, s.err)
		}
	}
	avail := a.history(states)
	var availIDs []string
	for _, r := range avail {
		availIDs = append(availIDs, r.ID)
	}
	var plan []string
	todo := 0
	for _, s := range states {
		if s.read.version == ver {
			plan = append(plan, fmt.Sprintf("%s: already at %s", s.host.Name, ver))
			continue
		}
		rel, ok := s.read.releases[ver]
		if !ok {
			where := a.listDir()
			if !s.read.listDirOK {
				where += ", which does not exist there"
			}
			return platforms.Result{}, platforms.Userf(platforms.ErrNotFound, "version %s is not available on %s (not in %s); versions available on every host: %s. Nothing was changed",
				ver, s.host.Name, where, orNone(availIDs))
		}
		from := s.read.version
		if from == "" {
			from = "unknown version"
		}
		plan = append(plan, fmt.Sprintf("%s: %s -> %s: %s; wait for health", s.host.Name, from, ver, a.describeInstall(rel)))
		todo++
	}
	if todo == 0 {
		return platforms.Result{Outcome: platforms.Skipped, Detail: fmt.Sprintf("already at %s on every host", ver), Plan: plan}, nil
	}
	if dryRun {
		if err := a.preflight(ctx, states); err != nil {
			return platforms.Result{}, err
		}
		return platforms.Result{Outcome: platforms.Planned, Detail: fmt.Sprintf("would roll %d of %d hosts to %s, one at a time, each healthy before the next", todo, n, ver), Plan: plan}, nil
	}

	var done []string
	for i, s := range states {
		h := s.host
		if s.read.version == ver {
			done = append(done, h.Name+" (already)")
			progress(platforms.Progress{Message: fmt.Sprintf("%s: already at %s", h.Name, ver), Updated: i + 1, Ready: i + 1, Desired: n, Done: i == n-1})
			continue
		}
		progress(platforms.Progress{Message: fmt.Sprintf("%s: installing %s", h.Name, ver), Updated: i, Ready: i, Desired: n})
		stage, err := a.rollHost(ctx, s, ver)
		if err != nil {
			var rest []string
			for _, r := range states[i+1:] {
				rest = append(rest, r.host.Name)
			}
			msg, curated := failureMessage(done, h.Name, stage, err, ver, s.read.version, rest)
			log.Error("rollback stopped", "host", h.Name, "stage", stage, "err", err)
			progress(platforms.Progress{Message: msg, Updated: i, Ready: i, Desired: n, Done: true})
			cause := err
			var ce *cmdError
			if errors.As(err, &ce) && ce.code == exitConflict {
				cause = fmt.Errorf("%w: %w", platforms.ErrConflict, err)
			}
			if !curated {
				return platforms.Result{Outcome: platforms.Done, Detail: msg, Plan: plan}, fmt.Errorf("%s: %w", msg, cause)
			}
			return platforms.Result{Outcome: platforms.Done, Detail: msg, Plan: plan}, platforms.Userf(cause, "%s", msg)
		}
		done = append(done, h.Name)
		log.Info("host rolled back", "host", h.Name, "from", s.read.version)
		progress(platforms.Progress{Message: fmt.Sprintf("%s: %s installed, restarted, healthy", h.Name, ver), Updated: i + 1, Ready: i + 1, Desired: n, Done: i == n-1})
	}
	return platforms.Result{
		Outcome: platforms.Done,
		Detail:  fmt.Sprintf("rolled back %s to %s one host at a time, each healthy before the next: %s", a.cfg.Unit, ver, strings.Join(done, ", ")),
		Plan:    plan,
	}, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// failureMessage: "rolled back hostA to v1; hostB failed health after
// restart: …; hostB now has v1 installed; hosts not touched: hostC".
func failureMessage(done []string, host, stage string, err error, ver, was string, rest []string) (msg string, curated bool) {
	curated = true
	var b strings.Builder
	if len(done) == 0 {
		b.WriteString("rolled back no host")
	} else {
		fmt.Fprintf(&b, "rolled back %s to %s", strings.Join(done, ", "), ver)
	}
	var ce *cmdError
	switch {
	case errors.As(err, &ce) && ce.code == exitConflict:
		fmt.Fprintf(&b, "; %s changed since rollbot read it (someone else is deploying?), so rollbot did not touch it", host)
	case errors.As(err, &ce) && ce.code == exitMissing:
		fmt.Fprintf(&b, "; on %s the files of %s disappeared before install, nothing was installed there", host, ver)
	default:
		var text string
		text, curated = hostText(err)
		fmt.Fprintf(&b, "; %s failed %s: %s", host, stage, text)
		switch stage {
		case "health after restart", "the version check after restart":
			fmt.Fprintf(&b, "; %s now has %s installed but is not healthy (it was on %s)", host, ver, was)
		case "to restart":
			fmt.Fprintf(&b, "; %s now has %s installed (it was on %s)", host, ver, was)
		}
	}
	if len(rest) > 0 {
		fmt.Fprintf(&b, "; hosts not touched: %s", strings.Join(rest, ", "))
	}
	return b.String(), curated
}

// rollHost installs ver on one host, restarts the unit and waits until it
// is healthy. It returns the stage that failed.
func (a *Adapter) rollHost(ctx context.Context, s hostState, ver string) (string, error) {
	c, err := a.dial(ctx, s.host)
	if err != nil {
		return "to connect", err
	}
	defer c.Close()
	rel := s.read.releases[ver]
	if _, err := a.run(ctx, c, a.installScript(rel, s.read.fingerprint), true); err != nil {
		return "to install " + ver, err
	}
	if _, err := a.run(ctx, c, a.systemctl("restart"), true); err != nil {
		return "to restart", err
	}
	if err := a.waitHealthy(ctx, s.idx, c); err != nil {
		return "health after restart", platforms.Userf(nil, "%v", err) // rollbot's own words
	}
	out, err := a.run(ctx, c, a.versionCmd(), false)
	if got := a.parseVersion(out); err != nil || got != ver {
		if err == nil {
			err = platforms.Userf(nil, "it reports version %q", got)
		}
		return "the version check after restart", err
	}
	return "", nil
}

// preflight checks, for a dry run, that each host to change has the
// systemctl command and, when configured, passwordless sudo.
func (a *Adapter) preflight(ctx context.Context, states []hostState) error {
	for _, s := range states {
		c, err := a.dial(ctx, s.host)
		if err != nil {
			return err
		}
		_, err = a.run(ctx, c, a.preflightScript(), true)
		c.Close()
		if err != nil {
			if text, ok := hostText(err); ok {
				return platforms.Userf(err, "dry run: %s is not ready: %s", s.host.Name, text)
			}
			return fmt.Errorf("dry run: check %s: %w", s.host.Name, err)
		}
	}
	return nil
}

// preflightScript fails, saying so, when the systemctl command is missing.
func (a *Adapter) preflightScript() string {
	return "command -v " + q(a.cfg.Systemctl) + " >/dev/null || { echo " + q("no "+a.cfg.Systemctl+" command") + " >&2; exit 1; }"
}

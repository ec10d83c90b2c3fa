package kube

import (
	"context"
	"fmt"
	"regexp"
	"slices"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"rollbot/platforms"
)

// Identity is a Kubernetes user and its groups, for impersonation.
type Identity struct {
	User   string   `yaml:"user"`
	Groups []string `yaml:"groups"`
}

// ImpersonateClusterRole is the ClusterRole of RBACFile that lets rollbot
// impersonate exactly the users and groups of Config.Impersonate (its
// resourceNames: `rollbot rbac` prints it from the config).
const ImpersonateClusterRole = "rollbot-impersonate"

// Keys of Config.Impersonate: a Slack user id (U…, or W… on Enterprise
// Grid) or a Slack user-group id (S…). Slack's ids are upper case.
var (
	slackUserKey  = regexp.MustCompile(`^[UW][A-Z0-9]+$`)
	slackGroupKey = regexp.MustCompile(`^S[A-Z0-9]+$`)
)

// slackGroups lists the user-group keys of Impersonate, sorted: the order
// identityFor tries them in.
func (c Config) slackGroups() []string {
	var gs []string
	for k := range c.Impersonate {
		if slackGroupKey.MatchString(k) {
			gs = append(gs, k)
		}
	}
	slices.Sort(gs)
	return gs
}

// validateImpersonate checks the keys and identities of Impersonate, in
// key order.
func (c Config) validateImpersonate() []error {
	var errs []error
	for _, key := range slices.Sorted(func(yield func(string) bool) {
		for k := range c.Impersonate {
			if !yield(k) {
				return
			}
		}
	}) {
		if !slackUserKey.MatchString(key) && !slackGroupKey.MatchString(key) {
			errs = append(errs, fmt.Errorf("impersonate.%s: %q is neither a Slack user id (U… or W…) nor a Slack user-group id (S…); use the id, in upper case (a user's profile: ⋮ → Copy member ID), not a name or @handle", key, key))
			continue
		}
		if c.Impersonate[key].User == "" {
			who := "the Slack user " + key
			if slackGroupKey.MatchString(key) {
				who = "the members of the Slack user group " + key
			}
			errs = append(errs, fmt.Errorf("impersonate.%s.user: required (the Kubernetes user %s act as)", key, who))
		}
	}
	return errs
}

// acting is the identity a write runs as, chosen by identityFor.
type acting struct {
	Identity
	// as names it for messages: "bob@example.com (for <@U0BOB>)",
	// "oncall-bot (for <@U0ALICE> via <!subteam^S0ONCALL>)".
	as string
}

// identityFor is the Kubernetes identity a write for the Slack user in
// ctx (platforms.WithActor) runs as, shared by every adapter of this
// package: nil when Impersonate is not configured (the adapter writes as
// itself). An entry for the user's id wins over one for a user group;
// when several of the user's groups have one, the first group id in
// sorted order wins, so the choice never depends on map order or on the
// order Slack lists groups in. A user the map does not cover is refused
// with a user error, and so is one without an entry of their own whose
// groups could not all be looked up (platforms.WithActorGroupsError) when
// groups are mapped: nothing is written either way.
func (c Config) identityFor(ctx context.Context, target string) (*acting, error) {
	if len(c.Impersonate) == 0 {
		return nil, nil
	}
	user := platforms.ActorFrom(ctx)
	if id, ok := c.Impersonate[user]; ok && user != "" && !slackGroupKey.MatchString(user) {
		return &acting{Identity: id, as: id.User + " (for <@" + user + ">)"}, nil
	}
	mapped := c.slackGroups()
	if user != "" && len(mapped) > 0 {
		// Any failed group refuses, even when another group was found:
		// the failed one might come first in sorted order.
		if err := platforms.ActorGroupsError(ctx); err != nil {
			return nil, platforms.Userf(fmt.Errorf("impersonate for %s: slack user groups of %q: %w", target, user, err),
				"the Slack user-group lookup for <@%s> failed, so rollbot changed nothing on %s: `impersonate:` maps user groups there and rollbot could not tell which of them you are in; try again in a minute, or ask someone mapped by user id",
				user, target)
		}
		in := platforms.ActorGroupsFrom(ctx)
		for _, g := range mapped {
			if slices.Contains(in, g) {
				id := c.Impersonate[g]
				return &acting{Identity: id, as: id.User + " (for <@" + user + "> via <!subteam^" + g + ">)"}, nil
			}
		}
	}
	who := "this write has no Slack user"
	if user != "" {
		who = "<@" + user + "> has no Kubernetes identity"
	}
	via := ""
	if len(mapped) > 0 {
		via = " (neither by user id nor through a user group)"
	}
	return nil, platforms.Userf(fmt.Errorf("impersonate for %s: no identity for %q", target, user),
		"%s in rollbot's `impersonate:` for %s%s, so rollbot changed nothing: ask an admin to map you, or ask someone who is mapped", who, target, via)
}

// restConfig is rc impersonating the identity. rc is the configuration the
// adapter was built from; nil on an adapter built on a bare clientset,
// which cannot impersonate.
func (act *acting) restConfig(rc *rest.Config, target string) (*rest.Config, error) {
	if rc == nil {
		return nil, platforms.Userf(nil, "impersonation for %s needs an adapter built by kube.New or kube.NewPlatform", target)
	}
	rc = rest.CopyConfig(rc)
	rc.Impersonate = rest.ImpersonationConfig{UserName: act.User, Groups: slices.Clone(act.Groups)}
	return rc, nil
}

// client is the impersonating configuration (restConfig) and its
// clientset, for a write on target.
func (act *acting) client(rc *rest.Config, target string) (*rest.Config, kubernetes.Interface, error) {
	rc, err := act.restConfig(rc, target)
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("impersonating client for %s: %w", target, err)
	}
	return rc, cs, nil
}

// refusedAs is the user error for the cluster's Forbidden on a write that
// ran as an impersonated identity: its own RBAC said no.
func refusedAs(as string, cause error, err error) error {
	return platforms.Userf(cause, "the cluster refused %s: %s", as, statusMessage(err))
}

// Impersonated lists the Kubernetes users and groups of the identities
// in Impersonate, each sorted and without repeats: the resourceNames of
// ImpersonateClusterRole.
func (c Config) Impersonated() (users, groups []string) {
	for _, id := range c.Impersonate {
		users = append(users, id.User)
		groups = append(groups, id.Groups...)
	}
	slices.Sort(users)
	slices.Sort(groups)
	return slices.Compact(users), slices.Compact(groups)
}

// IsWrite reports whether p changes something (any verb but get, list and
// watch): with Config.Impersonate, those run as the clicker's identity.
func (p Permission) IsWrite() bool {
	return !slices.Contains([]string{"get", "list", "watch"}, p.Verb)
}

// SlackGroups implements platforms.SlackGroupMapper.
func (a *Adapter) SlackGroups() []string { return a.cfg.slackGroups() }

// SlackGroups implements platforms.SlackGroupMapper.
func (r *RevisionAdapter) SlackGroups() []string { return r.cfg.slackGroups() }

var (
	_ platforms.SlackGroupMapper = (*Adapter)(nil)
	_ platforms.SlackGroupMapper = (*RevisionAdapter)(nil)
)

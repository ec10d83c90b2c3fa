package bot

import (
	"fmt"
	"slices"
	"sort"
)

// minDestructiveApprovals is the README's promise for a destructive
// database restore: two distinct DB approvers, neither the requester.
const minDestructiveApprovals = 2

// validateSafety checks the settings whose wrong value does not break
// rollbot but quietly weakens a safeguard: fewer approvals than promised,
// or an approver set that cannot approve without the requester (who may
// never approve their own request). Errors name the field path.
func (c *Config) validateSafety() []error {
	var errs []error
	names := make([]string, 0, len(c.Services))
	for n := range c.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		d := c.Services[name].Database
		if d == nil {
			continue
		}
		p := c.Services[name].path(name) + ".database"
		if d.DestructiveApprovals != 0 && d.DestructiveApprovals < minDestructiveApprovals {
			errs = append(errs, fmt.Errorf("%s.destructive_approvals: at least %d (a destructive restore needs two people besides the requester); leave it unset for %d",
				p, minDestructiveApprovals, minDestructiveApprovals))
		}
		errs = append(errs, d.validateApproverCount(p)...)
	}
	return errs
}

// validateApproverCount: when the DB approvers are listed only as users,
// there must be one more of them than the step needs, since the requester
// may be one of them. Groups change membership, so they are not counted.
func (d *DatabaseSettings) validateApproverCount(p string) []error {
	if len(d.Approvers.Groups) > 0 || len(d.Approvers.Users) == 0 {
		return nil
	}
	need, why := 1, "the down migration needs 1 approval"
	if d.Restore != nil {
		need = d.DestructiveApprovals
		if need == 0 {
			need = minDestructiveApprovals
		}
		why = fmt.Sprintf("a restore needs %d approvals (destructive_approvals)", need)
	}
	users := slices.Clone(d.Approvers.Users)
	slices.Sort(users)
	users = slices.Compact(users)
	if len(users) >= need+1 {
		return nil
	}
	return []error{fmt.Errorf("%s.approvers.users: %d distinct user(s) cannot approve without the requester: %s from people other than the requester, so list at least %d users (or a group)",
		p, len(users), why, need+1)}
}

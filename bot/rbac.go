package bot

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"rollbot/platforms/kube"
	"rollbot/platforms/migrations"
)

// RBACRole is the name of the Role WriteRBAC prints for the Kubernetes
// adapter, the same as the one in deploy/kubernetes/rbac.yaml.
const RBACRole = "rollbot"

// WriteRBAC prints (`rollbot rbac`) the least Kubernetes RBAC for the
// config's kubernetes services: per namespace, a Role and RoleBinding for
// the Deployment adapter whose Deployment rules name the configured
// Deployments (resourceNames); the rollbot-workloads Role (kube.WorkloadsRole)
// for StatefulSets and DaemonSets, naming them; where a service's
// database.down.kind is kubernetes_job, the down Job's Role
// (migrations.JobRole) and its binding in down.namespace. Per cluster, the
// rollbot-nodes ClusterRole (kube.NodesClusterRole) when a Deployment
// service's assessment reads the nodes, and, when services impersonate, the
// rollbot-impersonate ClusterRole (kube.ImpersonateClusterRole) naming
// exactly the configured identities' users and groups; a namespace whose
// every service impersonates (and runs no drills, which deploy as rollbot)
// gets its Roles without the write verbs, which are then the clickers'.
// The rules are kube.RequiredPermissions, kube.WorkloadPermissions,
// kube.NodePermissions and migrations.JobPermissions, so they follow the
// code. The bindings bind the ServiceAccount serviceAccount
// ("namespace/name"); services on different clusters (kubeconfig,
// context) get one block per cluster. With helm (`rollbot rbac --helm`:
// the Deployments are Helm releases'), each namespace with Deployments
// also gets kube.HelmRole, for their releases' Secrets there (Helm's
// default: the release namespace is the workload's); whether a Deployment
// is Helm-owned is read from its annotations at run time, so the config
// cannot say.
func WriteRBAC(w io.Writer, c *Config, serviceAccount string, helm bool) error {
	saNS, saName, ok := strings.Cut(serviceAccount, "/")
	if !ok || len(validation.IsDNS1123Label(saNS)) > 0 || len(validation.IsDNS1123Subdomain(saName)) > 0 {
		return fmt.Errorf("service account %q: want namespace/name, e.g. rollbot/rollbot", serviceAccount)
	}
	type nsKey struct{ cluster, ns string }
	// nsRBAC is what one namespace of one cluster needs.
	type nsRBAC struct {
		deployments, statefulsets, daemonsets []string
		// selfDeploy / selfWorkload: some Deployment / StatefulSet or
		// DaemonSet service here writes as rollbot itself (no
		// impersonate:, or drills, which deploy as rollbot).
		selfDeploy, selfWorkload bool
		jobs                     bool // a down Job runs here
	}
	// clusterRBAC is what one cluster needs outside namespaces.
	type clusterRBAC struct {
		nodes         bool // a Deployment service: its assessment reads the nodes
		users, groups []string
	}
	namespaces := map[nsKey]*nsRBAC{}
	clusters := map[string]*clusterRBAC{}
	nsOf := func(k nsKey) *nsRBAC {
		if namespaces[k] == nil {
			namespaces[k] = &nsRBAC{}
		}
		return namespaces[k]
	}
	add := func(list *[]string, name string) {
		if !slices.Contains(*list, name) {
			*list = append(*list, name)
		}
	}
	for _, name := range sortedServiceNames(c) {
		s := c.Services[name]
		if s.Platform != "kubernetes" || s.Kubernetes == nil {
			continue
		}
		k := s.Kubernetes
		cluster := clusterOf(*k)
		if clusters[cluster] == nil {
			clusters[cluster] = &clusterRBAC{}
		}
		cl := clusters[cluster]
		self := len(k.Impersonate) == 0 || s.Drills
		users, groups := k.Impersonated()
		for _, u := range users {
			add(&cl.users, u)
		}
		for _, g := range groups {
			add(&cl.groups, g)
		}
		n := nsOf(nsKey{cluster, k.Namespace})
		workload := cmp.Or(k.Name, k.Deployment)
		switch strings.ToLower(k.Kind) {
		case kube.KindStatefulSet:
			add(&n.statefulsets, workload)
			n.selfWorkload = n.selfWorkload || self
		case kube.KindDaemonSet:
			add(&n.daemonsets, workload)
			n.selfWorkload = n.selfWorkload || self
		default:
			add(&n.deployments, workload)
			n.selfDeploy = n.selfDeploy || self
			cl.nodes = true
		}
		if d := s.Database; d != nil && d.Down.Kind == migrations.DownKubernetesJob {
			nsOf(nsKey{cluster, d.Down.Namespace}).jobs = true
		}
	}
	if len(namespaces) == 0 {
		return errors.New("no service has platform: kubernetes; there is no Role to print")
	}
	keys := slices.SortedFunc(maps.Keys(namespaces), func(a, b nsKey) int {
		return cmp.Or(strings.Compare(a.cluster, b.cluster), strings.Compare(a.ns, b.ns))
	})

	var b strings.Builder
	fmt.Fprintf(&b, `# Least RBAC for the kubernetes services of this config, printed by
# rollbot rbac. Apply it on each cluster named below. It binds the
# ServiceAccount %s (create that yourself, as in deploy/kubernetes/rbac.yaml).
#
# What is narrowed: get, watch and patch on deployments, statefulsets and
# daemonsets name the configured workloads (resourceNames); the adapter
# watches its Deployment with a metadata.name field selector, which the API
# server authorizes by name; impersonate names the configured identities.
# What cannot be: list and watch of a collection (pods, replicasets,
# controllerrevisions) are authorized before any name is known, and the
# names of ReplicaSets, ControllerRevisions, pods and down Jobs are generated
# (pod-template-hash, generateName), so those rules hold for the whole
# namespace; create cannot name its object.
`, serviceAccount)
	if !helm {
		b.WriteString("# Deployments that Helm releases own are rolled back through Helm: add --helm\n# for the Role on their releases' Secrets (rollbot-helm).\n")
	}
	for i, k := range keys {
		if len(clusters) > 1 && (i == 0 || keys[i-1].cluster != k.cluster) {
			fmt.Fprintf(&b, "\n# ==== cluster %s ====\n", strconv.Quote(k.cluster))
		}
		n := namespaces[k]
		if len(n.deployments) > 0 {
			comment := fmt.Sprintf("The Kubernetes adapter for Deployment(s) %s in %s.", strings.Join(n.deployments, ", "), k.ns)
			if !n.selfDeploy {
				comment += clickersWrite(adapterRules(n.deployments, true), k.ns)
			}
			writeRole(&b, RBACRole, k.ns, adapterRules(n.deployments, n.selfDeploy), comment)
			writeBinding(&b, RBACRole, k.ns, saNS, saName)
			if helm {
				writeRole(&b, kube.HelmRole, k.ns, helmRules(),
					"Helm releases in "+k.ns+" (rollbot rbac --helm): their revisions are Secrets here.\n"+
						"# Helm's rollback re-applies every object of the target revision: a chart\n"+
						"# with kinds other than the Deployment needs get and patch on them too.")
				writeBinding(&b, kube.HelmRole, k.ns, saNS, saName)
			}
		}
		if len(n.statefulsets)+len(n.daemonsets) > 0 {
			comment := fmt.Sprintf("StatefulSets and DaemonSets (kubernetes.kind) in %s: %s.", k.ns, strings.Join(slices.Concat(n.statefulsets, n.daemonsets), ", "))
			if !n.selfWorkload {
				comment += clickersWrite(workloadRules(n.statefulsets, n.daemonsets, true), k.ns)
			}
			writeRole(&b, kube.WorkloadsRole, k.ns, workloadRules(n.statefulsets, n.daemonsets, n.selfWorkload), comment)
			writeBinding(&b, kube.WorkloadsRole, k.ns, saNS, saName)
		}
		if n.jobs {
			writeRole(&b, migrations.JobRole, k.ns, jobRules(),
				"The database down migration as a Job (database.down.kind: kubernetes_job).\n"+
					"# Whoever may create Jobs here can run any image with any Secret of the\n"+
					"# namespace; bind it only where a service rolls its database back this way.")
			writeBinding(&b, migrations.JobRole, k.ns, saNS, saName)
		}
		if i+1 < len(keys) && keys[i+1].cluster == k.cluster {
			continue
		}
		// The cluster's last namespace: its cluster-scoped roles.
		cl := clusters[k.cluster]
		if cl.nodes {
			writeClusterRole(&b, kube.NodesClusterRole, nodeRules(),
				"Optional: the assessment's \"Deployment-related?\" row reads the conditions of\n"+
					"# the cluster's nodes (cluster-scoped, so a ClusterRole; it only reads).\n"+
					"# Without it the row says the nodes could not be read.")
			writeClusterBinding(&b, kube.NodesClusterRole, saNS, saName)
		}
		if len(cl.users) > 0 {
			writeClusterRole(&b, kube.ImpersonateClusterRole, impersonateRules(cl.users, cl.groups),
				"kubernetes.impersonate: the writes for a click run as the clicker's mapped\n"+
					"# identity (client-go impersonation), so the cluster's RBAC decides. rollbot\n"+
					"# may impersonate exactly these users and groups (resourceNames, generated\n"+
					"# from the config; never leave them out: rollbot could act as anyone,\n"+
					"# cluster-admin included). Print it again when impersonate: changes.")
			writeClusterBinding(&b, kube.ImpersonateClusterRole, saNS, saName)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// clickersWrite says, in a Role's comment, that the write verbs of the
// rules are left out because every service of the namespace impersonates.
func clickersWrite(rules []rbacRule, ns string) string {
	var writes []string
	for _, r := range rules {
		for _, v := range r.verbs {
			if (kube.Permission{Verb: v}).IsWrite() {
				writes = append(writes, "`"+v+"` on "+r.resource)
			}
		}
	}
	return "\n# Every service here impersonates (kubernetes.impersonate) and runs no drills:\n" +
		"# their writes run as the clicker's identity, so this Role only reads. The\n" +
		"# mapped identities' own Roles must grant, in " + ns + ", the same reads and\n# " + strings.Join(writes, ", ") + "."
}

// rbacRule is one rule of a printed Role, with its comment.
type rbacRule struct {
	comment       string
	group         string
	resource      string
	verbs         []string
	resourceNames []string
}

// adapterRules groups kube.RequiredPermissions by resource; the
// Deployment rules name the Deployments. Without self (every service
// impersonates) the write verbs are left out.
func adapterRules(names []string, self bool) []rbacRule {
	return groupRules(kube.RequiredPermissions, self, func(r *rbacRule) bool {
		switch r.resource {
		case "deployments":
			r.resourceNames = slices.Sorted(slices.Values(names))
			r.comment = "Snapshot reads the Deployment, Stop/Rollback/SetArtifact/ScaleToZero patch it,\n# the rollout wait watches it (by name). Narrowed to these Deployments."
			if !self {
				r.comment = "Snapshot reads the Deployment (by name). Narrowed to these Deployments."
			}
		case "replicasets":
			r.comment = "The rollout history; MarkDoNotDeploy annotates one. NOT narrowed: the\n# ReplicaSets' names are generated (pod-template-hash) and list is by label."
		case "pods":
			r.comment = "Readiness and restarts. NOT narrowed: a list by label selector."
		case "pods/log":
			r.comment = "The migration init container's log, and the bad pods' logs kept before a\n# rollback. NOT narrowed: pod names are generated."
		case "events":
			r.comment = "The bad pods' and the Deployment's events, kept before a rollback. NOT\n# narrowed: a list by field selector."
		}
		return true
	})
}

// workloadRules groups kube.WorkloadPermissions by resource, for the kinds
// configured; the StatefulSet and DaemonSet rules name them. Without self
// the write verbs are left out.
func workloadRules(statefulsets, daemonsets []string, self bool) []rbacRule {
	names := map[string][]string{"statefulsets": statefulsets, "daemonsets": daemonsets}
	return groupRules(kube.WorkloadPermissions, self, func(r *rbacRule) bool {
		switch r.resource {
		case "statefulsets", "daemonsets":
			if len(names[r.resource]) == 0 {
				return false // no workload of this kind here
			}
			r.resourceNames = slices.Sorted(slices.Values(names[r.resource]))
			r.comment = "Snapshot and the rollout wait read it; Stop (partition / OnDelete), Rollback,\n# SetArtifact and ScaleToZero patch it. Narrowed to these " + r.resource + "."
			if !self {
				r.comment = "Snapshot reads it (by name). Narrowed to these " + r.resource + "."
			}
		case "controllerrevisions":
			r.comment = "The rollout history; MarkDoNotDeploy annotates one. NOT narrowed: their\n# names are generated and list is by label."
		case "pods":
			r.comment = "Readiness and restarts. NOT narrowed: a list by label selector."
		}
		return true
	})
}

// groupRules groups perms into one rule per API group and resource, in
// their order, leaving the write verbs out unless self. describe fills in
// a new rule's names and comment, or returns false to leave the resource
// out.
func groupRules(perms []kube.Permission, self bool, describe func(*rbacRule) bool) []rbacRule {
	var rules []rbacRule
	left := map[string]bool{}
	for _, p := range perms {
		key := p.Group + "/" + p.Resource
		if p.IsWrite() && !self || left[key] {
			continue
		}
		i := slices.IndexFunc(rules, func(r rbacRule) bool { return r.group == p.Group && r.resource == p.Resource })
		if i < 0 {
			r := rbacRule{group: p.Group, resource: p.Resource}
			if !describe(&r) {
				left[key] = true
				continue
			}
			rules = append(rules, r)
			i = len(rules) - 1
		}
		rules[i].verbs = append(rules[i].verbs, p.Verb)
	}
	return rules
}

// nodeRules is kube.NodePermissions as one rule.
func nodeRules() []rbacRule {
	r := rbacRule{comment: "NodeConditions lists the nodes (NotReady, memory/disk/PID pressure).", resource: "nodes"}
	for _, p := range kube.NodePermissions {
		r.group = p.Group
		r.verbs = append(r.verbs, p.Verb)
	}
	return []rbacRule{r}
}

// impersonateRules names the users and groups rollbot may impersonate.
func impersonateRules(users, groups []string) []rbacRule {
	rules := []rbacRule{{comment: "The users of the configured identities.", resource: "users", verbs: []string{"impersonate"},
		resourceNames: slices.Sorted(slices.Values(users))}}
	if len(groups) > 0 {
		rules = append(rules, rbacRule{comment: "Their groups (impersonate: ... groups:).", resource: "groups", verbs: []string{"impersonate"},
			resourceNames: slices.Sorted(slices.Values(groups))})
	}
	return rules
}

// helmRules is kube.HelmPermissions as one rule.
func helmRules() []rbacRule {
	r := rbacRule{comment: "Helm's Secrets storage: the history (list by label), the target revision,\n" +
		"# the rollback's new revision and its status. NOT narrowed: list cannot be,\n" +
		"# and the names grow with every revision (sh.helm.release.v1.<release>.v<N>).", resource: "secrets"}
	for _, p := range kube.HelmPermissions {
		r.group = p.Group
		r.verbs = append(r.verbs, p.Verb)
	}
	return []rbacRule{r}
}

// jobRules groups migrations.JobPermissions by resource. None can be
// narrowed: the Job's name is generated and its pod's too.
func jobRules() []rbacRule {
	var rules []rbacRule
	for _, p := range migrations.JobPermissions {
		i := slices.IndexFunc(rules, func(r rbacRule) bool { return r.group == p.Group && r.resource == p.Resource })
		if i < 0 {
			r := rbacRule{group: p.Group, resource: p.Resource}
			switch p.Resource {
			case "jobs":
				r.comment = "Create the down Job, follow it, delete it when its pod cannot start. NOT\n# narrowed: create cannot name its object and the Job's name is generated."
			case "pods":
				r.comment = "The Job's pod. NOT narrowed: a list by label selector."
			case "pods/log":
				r.comment = "The Job's log, streamed into the thread. NOT narrowed: the pod's name is generated."
			}
			rules = append(rules, r)
			i = len(rules) - 1
		}
		rules[i].verbs = append(rules[i].verbs, p.Verb)
	}
	return rules
}

func writeRole(b *strings.Builder, name, ns string, rules []rbacRule, comment string) {
	fmt.Fprintf(b, "---\n# %s\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: %s\n  namespace: %s\nrules:\n",
		comment, yamlString(name), yamlString(ns))
	writeRules(b, rules)
}

func writeClusterRole(b *strings.Builder, name string, rules []rbacRule, comment string) {
	fmt.Fprintf(b, "---\n# %s\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: %s\nrules:\n",
		comment, yamlString(name))
	writeRules(b, rules)
}

func writeRules(b *strings.Builder, rules []rbacRule) {
	for _, r := range rules {
		fmt.Fprintf(b, "# %s\n- apiGroups: [%s]\n  resources: [%s]\n  verbs: [%s]\n", r.comment, yamlString(r.group), yamlString(r.resource), yamlList(r.verbs))
		if len(r.resourceNames) > 0 {
			fmt.Fprintf(b, "  resourceNames: [%s]\n", yamlList(r.resourceNames))
		}
	}
}

func writeBinding(b *strings.Builder, role, ns, saNS, saName string) {
	fmt.Fprintf(b, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: %s\n  namespace: %s\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: %s\nsubjects:\n- kind: ServiceAccount\n  name: %s\n  namespace: %s\n",
		yamlString(role), yamlString(ns), yamlString(role), yamlString(saName), yamlString(saNS))
}

func writeClusterBinding(b *strings.Builder, role, saNS, saName string) {
	fmt.Fprintf(b, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: %s\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: %s\nsubjects:\n- kind: ServiceAccount\n  name: %s\n  namespace: %s\n",
		yamlString(role), yamlString(role), yamlString(saName), yamlString(saNS))
}

// yamlString quotes s as a YAML (and JSON) double-quoted string, so no
// configured value can change the document's structure.
func yamlString(s string) string { return strconv.Quote(s) }

func yamlList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = yamlString(x)
	}
	return strings.Join(q, ", ")
}

// clusterOf names the cluster a service's adapter talks to.
func clusterOf(k kube.Config) string {
	switch {
	case k.InCluster:
		return "in-cluster"
	case k.Kubeconfig != "" || k.Context != "":
		s := k.Kubeconfig
		if s == "" {
			s = "default kubeconfig"
		}
		if k.Context != "" {
			s += " context " + k.Context
		}
		return s
	}
	return "default kubeconfig"
}

func sortedServiceNames(c *Config) []string {
	names := make([]string, 0, len(c.Services))
	for n := range c.Services {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

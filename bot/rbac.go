package bot

import (
	"errors"
	"fmt"
	"io"
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
// the adapter whose Deployment rules name the configured Deployments
// (resourceNames), and, where a service's database.down.kind is
// kubernetes_job, the down Job's Role (migrations.JobRole) and its binding
// in down.namespace. The rules are kube.RequiredPermissions and
// migrations.JobPermissions, so they follow the code. The RoleBindings bind
// the ServiceAccount serviceAccount ("namespace/name"); services on
// different clusters (kubeconfig, context) get one block per cluster.
// With helm (`rollbot rbac --helm`: the Deployments are Helm releases'),
// each namespace with Deployments also gets kube.HelmRole, for their
// releases' Secrets there (Helm's default: the release namespace is the
// workload's); whether a Deployment is Helm-owned is read from its
// annotations at run time, so the config cannot say.
func WriteRBAC(w io.Writer, c *Config, serviceAccount string, helm bool) error {
	saNS, saName, ok := strings.Cut(serviceAccount, "/")
	if !ok || len(validation.IsDNS1123Label(saNS)) > 0 || len(validation.IsDNS1123Subdomain(saName)) > 0 {
		return fmt.Errorf("service account %q: want namespace/name, e.g. rollbot/rollbot", serviceAccount)
	}
	type nsKey struct{ cluster, ns string }
	deployments := map[nsKey][]string{} // namespace -> Deployment names
	jobs := map[nsKey]bool{}            // namespaces of down Jobs
	var keys []nsKey
	see := func(k nsKey) {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	for _, name := range sortedServiceNames(c) {
		s := c.Services[name]
		if s.Platform != "kubernetes" || s.Kubernetes == nil {
			continue
		}
		k := s.Kubernetes
		cluster := clusterOf(*k)
		// StatefulSets and DaemonSets need the rollbot-workloads Role of
		// deploy/kubernetes/rbac.yaml instead.
		if k.Kind == "" || strings.EqualFold(k.Kind, kube.KindDeployment) {
			key := nsKey{cluster, k.Namespace}
			see(key)
			name := k.Deployment
			if name == "" {
				name = k.Name
			}
			if !slices.Contains(deployments[key], name) {
				deployments[key] = append(deployments[key], name)
			}
		}
		if d := s.Database; d != nil && d.Down.Kind == migrations.DownKubernetesJob {
			jk := nsKey{cluster, d.Down.Namespace}
			see(jk)
			jobs[jk] = true
		}
	}
	if len(keys) == 0 {
		return errors.New("no service has platform: kubernetes; there is no Role to print")
	}
	slices.SortFunc(keys, func(a, b nsKey) int {
		return strings.Compare(a.cluster+"\x00"+a.ns, b.cluster+"\x00"+b.ns)
	})
	clusters := map[string]bool{}
	for _, k := range keys {
		clusters[k.cluster] = true
	}

	var b strings.Builder
	fmt.Fprintf(&b, `# Least RBAC for the kubernetes services of this config, printed by
# rollbot rbac. Apply it on each cluster named below. It binds the
# ServiceAccount %s (create that yourself, as in deploy/kubernetes/rbac.yaml).
#
# What is narrowed: get, watch and patch on deployments name the configured
# Deployments (resourceNames); the adapter watches its Deployment with a
# metadata.name field selector, which the API server authorizes by name.
# What cannot be: list and watch of a collection (pods, replicasets) are
# authorized before any name is known, and the names of ReplicaSets, pods
# and down Jobs are generated (pod-template-hash, generateName), so those
# rules hold for the whole namespace; create cannot name its object.
`, serviceAccount)
	if !helm {
		b.WriteString("# Deployments that Helm releases own are rolled back through Helm: add --helm\n# for the Role on their releases' Secrets (rollbot-helm).\n")
	}
	prev := "\x00"
	for _, k := range keys {
		if len(clusters) > 1 && k.cluster != prev {
			fmt.Fprintf(&b, "\n# ==== cluster %s ====\n", strconv.Quote(k.cluster))
			prev = k.cluster
		}
		if names := deployments[k]; len(names) > 0 {
			writeRole(&b, RBACRole, k.ns, adapterRules(names),
				fmt.Sprintf("The Kubernetes adapter for Deployment(s) %s in %s.", strings.Join(names, ", "), k.ns))
			writeBinding(&b, RBACRole, k.ns, saNS, saName)
			if helm {
				writeRole(&b, kube.HelmRole, k.ns, helmRules(),
					"Helm releases in "+k.ns+" (rollbot rbac --helm): their revisions are Secrets here.\n"+
						"# Helm's rollback re-applies every object of the target revision: a chart\n"+
						"# with kinds other than the Deployment needs get and patch on them too.")
				writeBinding(&b, kube.HelmRole, k.ns, saNS, saName)
			}
		}
		if jobs[k] {
			writeRole(&b, migrations.JobRole, k.ns, jobRules(),
				"The database down migration as a Job (database.down.kind: kubernetes_job).\n"+
					"# Whoever may create Jobs here can run any image with any Secret of the\n"+
					"# namespace; bind it only where a service rolls its database back this way.")
			writeBinding(&b, migrations.JobRole, k.ns, saNS, saName)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
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
// Deployment rules name the Deployments.
func adapterRules(names []string) []rbacRule {
	var rules []rbacRule
	for _, p := range kube.RequiredPermissions {
		i := slices.IndexFunc(rules, func(r rbacRule) bool { return r.group == p.Group && r.resource == p.Resource })
		if i < 0 {
			r := rbacRule{group: p.Group, resource: p.Resource}
			switch p.Resource {
			case "deployments":
				r.resourceNames = slices.Sorted(slices.Values(names))
				r.comment = "Snapshot reads the Deployment, Stop/Rollback/SetArtifact/ScaleToZero patch it,\n# the rollout wait watches it (by name). Narrowed to these Deployments."
			case "replicasets":
				r.comment = "The rollout history; MarkDoNotDeploy annotates one. NOT narrowed: the\n# ReplicaSets' names are generated (pod-template-hash) and list is by label."
			case "pods":
				r.comment = "Readiness and restarts. NOT narrowed: a list by label selector."
			case "pods/log":
				r.comment = "The migration init container's log, and the bad pods' logs kept before a\n# rollback. NOT narrowed: pod names are generated."
			case "events":
				r.comment = "The bad pods' and the Deployment's events, kept before a rollback. NOT\n# narrowed: a list by field selector."
			}
			rules = append(rules, r)
			i = len(rules) - 1
		}
		rules[i].verbs = append(rules[i].verbs, p.Verb)
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

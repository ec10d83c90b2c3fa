package kube

// Unit tests: config validation, pure helpers, and the migration log
// reader on client-go's fake clientset (kwok serves the same log file for
// every container, so which pod and container are read, the tail length
// and the unreadable-log path are checked here; the real pods/log path is
// TestSnapshotMigrationLog). Everything that rolls pods is tested on the
// real control plane (kube_test.go).

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"rollbot/platforms"
	"rollbot/testkit/logtest"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings, each naming a field
	}{
		{"ok", Config{Namespace: "prod", Deployment: "myapp"}, nil},
		{"ok in cluster", Config{InCluster: true, Namespace: "prod", Deployment: "myapp", Container: "app"}, nil},
		{"empty", Config{}, []string{"namespace: required", "deployment: required"}},
		{"bad names", Config{Namespace: "Prod_1", Deployment: "my app", Container: "A"}, []string{"namespace:", "deployment:", "container:"}},
		{"in cluster and kubeconfig", Config{InCluster: true, Kubeconfig: "/k", Context: "c", Namespace: "p", Deployment: "d"},
			[]string{"in_cluster: cannot be combined with kubeconfig", "in_cluster: cannot be combined with context"}},
		{"negative", Config{Namespace: "p", Deployment: "d", MigrationLogLines: -1, RolloutTimeout: -time.Second},
			[]string{"migration_log_lines:", "rollout_timeout:"}},
		{"statefulset", Config{Namespace: "p", Kind: "StatefulSet", Name: "db"}, nil},
		{"deployment by name", Config{Namespace: "p", Name: "web"}, nil},
		{"bad kind", Config{Namespace: "p", Kind: "cronjob", Name: "x"}, []string{"kind: \"cronjob\" is not one of deployment, statefulset, daemonset"}},
		{"daemonset named by deployment", Config{Namespace: "p", Kind: "daemonset", Deployment: "x"}, []string{"deployment: this service is a daemonset: name it with `name:`"}},
		{"both names", Config{Namespace: "p", Name: "x", Deployment: "y"}, []string{"name: give either name or deployment, not both"}},
		{"daemonset without name", Config{Namespace: "p", Kind: "daemonset"}, []string{"name: required"}},
		{"impersonate without user", Config{Namespace: "p", Deployment: "d", Impersonate: map[string]Identity{"U0BOB": {Groups: []string{"oncall"}}}},
			[]string{"impersonate.U0BOB.user: required"}},
		{"impersonate by user and group ids", Config{Namespace: "p", Deployment: "d", Impersonate: map[string]Identity{
			"U0BOB": {User: "bob"}, "W0GRID": {User: "grid"}, "S0ONCALL": {User: "oncall-bot", Groups: []string{"oncall"}}}}, nil},
		{"impersonate keys that are not ids", Config{Namespace: "p", Deployment: "d", Impersonate: map[string]Identity{
			"@oncall": {User: "x"}, "bob": {User: "y"}, "u0bob": {User: "z"}, "C0INCIDENT": {User: "c"}}},
			[]string{`impersonate.@oncall: "@oncall" is neither a Slack user id (U… or W…) nor a Slack user-group id (S…)`,
				"impersonate.C0INCIDENT:", "impersonate.bob:", "impersonate.u0bob:"}},
		{"impersonate group without user", Config{Namespace: "p", Deployment: "d", Impersonate: map[string]Identity{"S0ONCALL": {Groups: []string{"oncall"}}}},
			[]string{"impersonate.S0ONCALL.user: required (the Kubernetes user the members of the Slack user group S0ONCALL act as)"}},
		{"bad argocd namespace", Config{Namespace: "p", Deployment: "d", ArgoCDNamespace: "Argo CD"}, []string{"argocd_namespace:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
			if got := len(strings.Split(err.Error(), "\n")); got != len(tt.want) {
				t.Errorf("Validate() gave %d errors (%q), want %d", got, err, len(tt.want))
			}
		})
	}
}

// identityFor: the user's own entry wins over a group's; among several
// groups of theirs the first in sorted id order wins, whatever order the
// groups come in; no entry, no user, or a failed group lookup where groups
// are mapped is refused with a user message; no map means rollbot itself.
func TestIdentityFor(t *testing.T) {
	cfg := Config{Namespace: "prod", Deployment: "shop", Impersonate: map[string]Identity{
		"U0BOB":    {User: "bob@example.com", Groups: []string{"sre"}},
		"S0ONCALL": {User: "oncall-bot", Groups: []string{"oncall"}},
		"S0DBA":    {User: "dba-bot", Groups: []string{"dba"}},
		"S0WEB":    {User: "web-bot"},
	}}
	lookupFailed := errors.New("usergroups.users.list: internal_error")
	tests := []struct {
		name      string
		user      string
		groups    []string
		groupsErr error
		want      string // the identity's user, "" for a refusal
		wantAs    string
		wantMsg   string // part of the refusal
	}{
		{name: "user entry", user: "U0BOB", want: "bob@example.com", wantAs: "bob@example.com (for <@U0BOB>)"},
		{name: "user entry wins over a group", user: "U0BOB", groups: []string{"S0ONCALL"}, want: "bob@example.com"},
		{name: "user entry needs no group lookup", user: "U0BOB", groupsErr: lookupFailed, want: "bob@example.com"},
		{name: "group entry", user: "U0ALICE", groups: []string{"S0ONCALL"}, want: "oncall-bot", wantAs: "oncall-bot (for <@U0ALICE> via <!subteam^S0ONCALL>)"},
		{name: "sorted groups", user: "U0ALICE", groups: []string{"S0WEB", "S0ONCALL", "S0DBA"}, want: "dba-bot"},
		{name: "sorted groups, other order", user: "U0ALICE", groups: []string{"S0ONCALL", "S0DBA", "S0WEB"}, want: "dba-bot"},
		{name: "unmapped groups are ignored", user: "U0ALICE", groups: []string{"S0OTHER", "S0WEB"}, want: "web-bot"},
		{name: "a group found beside a failed one", user: "U0ALICE", groups: []string{"S0WEB"}, groupsErr: lookupFailed,
			wantMsg: "the Slack user-group lookup for <@U0ALICE> failed"},
		{name: "unknown", user: "U0EVE", groups: []string{"S0OTHER"},
			wantMsg: "<@U0EVE> has no Kubernetes identity in rollbot's `impersonate:` for deployment prod/shop (neither by user id nor through a user group), so rollbot changed nothing"},
		{name: "no user", wantMsg: "this write has no Slack user in rollbot's `impersonate:`"},
		{name: "a group id as the actor", user: "S0ONCALL", wantMsg: "<@S0ONCALL> has no Kubernetes identity"},
		{name: "group lookup failed", user: "U0ALICE", groupsErr: lookupFailed,
			wantMsg: "the Slack user-group lookup for <@U0ALICE> failed, so rollbot changed nothing on deployment prod/shop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := platforms.WithActor(context.Background(), tt.user, tt.groups...)
			if tt.groupsErr != nil {
				ctx = platforms.WithActorGroupsError(ctx, tt.groupsErr)
			}
			act, err := cfg.identityFor(ctx, "deployment prod/shop")
			if tt.want == "" {
				msg, ok := platforms.UserMessage(err)
				if act != nil || !ok || !strings.Contains(msg, tt.wantMsg) {
					t.Fatalf("identityFor = %+v, %v; want a refusal with %q", act, err, tt.wantMsg)
				}
				if strings.Contains(msg, "lookup") != (tt.groupsErr != nil) {
					t.Errorf("refusal %q: the lookup is named iff it failed", msg)
				}
				return
			}
			if err != nil || act == nil || act.User != tt.want {
				t.Fatalf("identityFor = %+v, %v; want %s", act, err, tt.want)
			}
			if !slices.Equal(act.Groups, cfg.Impersonate[keyOf(cfg, tt.want)].Groups) {
				t.Errorf("groups %v, want the entry's", act.Groups)
			}
			if tt.wantAs != "" && act.as != tt.wantAs {
				t.Errorf("as = %q, want %q", act.as, tt.wantAs)
			}
		})
	}

	// Without impersonate: nil, the adapter writes as itself.
	if act, err := (Config{Namespace: "prod", Deployment: "shop"}).identityFor(context.Background(), "x"); act != nil || err != nil {
		t.Errorf("no impersonate: %+v, %v", act, err)
	}
	// Only user keys: the refusal does not mention groups, and a failed
	// lookup (there was nothing to look up) does not matter.
	users := Config{Impersonate: map[string]Identity{"U0BOB": {User: "bob"}}}
	ctx := platforms.WithActorGroupsError(platforms.WithActor(context.Background(), "U0EVE"), lookupFailed)
	_, err := users.identityFor(ctx, "deployment prod/shop")
	if msg, _ := platforms.UserMessage(err); !strings.HasPrefix(msg, "<@U0EVE> has no Kubernetes identity in rollbot's `impersonate:` for deployment prod/shop, so") {
		t.Errorf("user keys only: %q", msg)
	}
	if got := cfg.slackGroups(); !slices.Equal(got, []string{"S0DBA", "S0ONCALL", "S0WEB"}) {
		t.Errorf("slackGroups = %v", got)
	}
	// The impersonating client configuration: the identity, on a copy.
	rc := &rest.Config{Host: "https://k8s.example"}
	act, _ := cfg.identityFor(platforms.WithActor(context.Background(), "U0ALICE", "S0ONCALL"), "x")
	irc, err := act.restConfig(rc, "x")
	if err != nil || irc.Impersonate.UserName != "oncall-bot" || !slices.Equal(irc.Impersonate.Groups, []string{"oncall"}) || rc.Impersonate.UserName != "" {
		t.Errorf("restConfig = %+v, %v (original %+v)", irc.Impersonate, err, rc.Impersonate)
	}
	if _, err := act.restConfig(nil, "x"); err == nil {
		t.Error("an adapter without a rest.Config impersonated")
	}
}

func keyOf(c Config, user string) string {
	for k, id := range c.Impersonate {
		if id.User == user {
			return k
		}
	}
	return ""
}

func TestRestartsSince(t *testing.T) {
	now := time.Date(2026, 6, 26, 9, 0, 0, 0, time.UTC)
	since := now.Add(-RestartWindow)
	term := func(at time.Time) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(at)}}
	}
	tests := []struct {
		name  string
		cs    corev1.ContainerStatus
		start time.Time
		want  int
	}{
		{"no restarts", corev1.ContainerStatus{}, now.Add(-time.Minute), 0},
		{"young pod: all count", corev1.ContainerStatus{RestartCount: 5}, now.Add(-time.Minute), 5},
		{"old pod, recent crash", corev1.ContainerStatus{RestartCount: 40, LastTerminationState: term(now.Add(-time.Minute))}, now.Add(-time.Hour), 1},
		{"old pod, old crash", corev1.ContainerStatus{RestartCount: 40, LastTerminationState: term(now.Add(-time.Hour))}, now.Add(-2 * time.Hour), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := restartsSince(tt.cs, tt.start, since); got != tt.want {
				t.Fatalf("restartsSince = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRolloutMessage(t *testing.T) {
	three := int32(3)
	d := func(updated, replicas, available int32) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "myapp"}, Spec: appsv1.DeploymentSpec{Replicas: &three},
			Status: appsv1.DeploymentStatus{UpdatedReplicas: updated, Replicas: replicas, AvailableReplicas: available}}
	}
	tests := []struct {
		d    *appsv1.Deployment
		want string
		done bool
	}{
		{d(1, 4, 3), `Waiting for deployment "myapp" rollout to finish: 1 out of 3 new replicas have been updated...`, false},
		{d(3, 4, 3), `Waiting for deployment "myapp" rollout to finish: 1 old replicas are pending termination...`, false},
		{d(3, 3, 2), `Waiting for deployment "myapp" rollout to finish: 2 of 3 updated replicas are available...`, false},
		{d(3, 3, 3), `deployment "myapp" successfully rolled out`, true},
	}
	for _, tt := range tests {
		got, done := rolloutMessage(tt.d)
		if got != tt.want || done != tt.done {
			t.Errorf("rolloutMessage = %q,%v; want %q,%v", got, done, tt.want, tt.done)
		}
	}
}

// fakeDeployment builds a Deployment with an init-migrate container, its
// ReplicaSet (revision 2) and pods, as the API would hold them.
func fakeDeployment(podInit []corev1.ContainerStatus) []runtime.Object {
	three := int32(3)
	labels := map[string]string{"app": "myapp"}
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init-migrate", Image: "myapp-migrate:v2"}},
			Containers:     []corev1.Container{{Name: "app", Image: "myapp:v2"}},
		},
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "myapp", Namespace: "prod", UID: "d-uid", Generation: 2,
			Annotations: map[string]string{revisionAnnotation: "2"}},
		Spec:   appsv1.DeploymentSpec{Replicas: &three, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3, ReadyReplicas: 3},
	}
	isController := true
	rsTmpl := tmpl.DeepCopy()
	rsTmpl.Labels = map[string]string{"app": "myapp", appsv1.DefaultDeploymentUniqueLabelKey: "abc"}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "myapp-abc", Namespace: "prod", UID: "rs-uid", Labels: rsTmpl.Labels,
			Annotations:     map[string]string{revisionAnnotation: "2"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "myapp", UID: "d-uid", Controller: &isController}}},
		Spec: appsv1.ReplicaSetSpec{Template: *rsTmpl},
	}
	objs := []runtime.Object{d, rs}
	base := time.Now().Add(-time.Minute)
	for i, name := range []string{"myapp-abc-1", "myapp-abc-2", "myapp-abc-3"} {
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "prod", Labels: rsTmpl.Labels,
				CreationTimestamp: metav1.NewTime(base.Add(time.Duration(i) * time.Second)),
				OwnerReferences:   []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "myapp-abc", UID: types.UID("rs-uid"), Controller: &isController}}},
			Status: corev1.PodStatus{
				Conditions:            []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
				InitContainerStatuses: podInit,
			},
		})
	}
	return objs
}

func TestMigrationLog(t *testing.T) {
	done := []corev1.ContainerStatus{{Name: "init-migrate", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}}}
	var long strings.Builder
	for i := range 30 {
		long.WriteString("migration line " + string(rune('a'+i%26)) + "\n")
	}
	tests := []struct {
		name     string
		init     []corev1.ContainerStatus
		logs     string
		logErr   error
		want     string
		wantRead bool
		wantWarn bool
	}{
		{"reads the newest pod's init-migrate log", done, "V3__add_column.sql applied\nSuccessfully applied 1 migration\n",
			nil, "V3__add_column.sql applied\nSuccessfully applied 1 migration", true, false},
		{"keeps the last 20 lines", done, long.String(), nil, lastLines(long.String(), 20), true, false},
		{"init container never ran: no read", nil, "x", nil, "", false, false},
		{"unreadable log: empty, warned", done, "", errors.New("pods/log is forbidden"), "", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset(fakeDeployment(tt.init)...)
			var gotContainer string
			var gotLines int64
			cs.PrependReactor("get", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
				ga, ok := action.(k8stesting.GenericAction)
				if !ok || action.GetSubresource() != "log" {
					return false, nil, nil
				}
				opts := ga.GetValue().(*corev1.PodLogOptions)
				gotContainer, gotLines = opts.Container, *opts.TailLines
				if tt.logErr != nil {
					return true, nil, tt.logErr
				}
				return true, &runtime.Unknown{Raw: []byte(tt.logs)}, nil
			})
			var logBuf bytes.Buffer
			a := NewWithClient(cs, Config{Namespace: "prod", Deployment: "myapp"}, slog.New(slog.NewTextHandler(&logBuf, nil)))
			snap, err := a.Snapshot(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if snap.MigrationLog != tt.want {
				t.Errorf("MigrationLog = %q, want %q", snap.MigrationLog, tt.want)
			}
			if !tt.wantRead && gotContainer != "" {
				t.Errorf("read a log of %q although no init-migrate ran", gotContainer)
			}
			if tt.wantRead && (gotContainer != "init-migrate" || gotLines != 20) {
				t.Errorf("read container %q tail %d, want init-migrate tail 20", gotContainer, gotLines)
			}
			if strings.Contains(logBuf.String(), "read migration log") != tt.wantWarn {
				t.Errorf("warning logged = %v, want %v: %s", !tt.wantWarn, tt.wantWarn, logBuf.String())
			}
			if snap.Current.ID != "2" || snap.Current.Artifact != "myapp:v2" || snap.Health.Ready != 3 {
				t.Errorf("snapshot = %+v", snap)
			}
		})
	}
}

// Capture right after the assessment's Snapshot reuses its pod list (the
// biggest read on a large Deployment) while the Deployment is unchanged
// and the list is at most podReuseAge old; otherwise it lists again.
func TestCaptureReusesTheAssessmentPods(t *testing.T) {
	objs := fakeDeployment(nil)
	objs[0].(*appsv1.Deployment).ResourceVersion = "1"
	cs := fake.NewClientset(objs...)
	lists := func() int {
		n := 0
		for _, a := range cs.Actions() {
			if a.GetVerb() == "list" && a.GetResource().Resource == "pods" {
				n++
			}
		}
		return n
	}
	a := NewWithClient(cs, Config{Namespace: "prod", Deployment: "myapp"}, nil)
	now := time.Now()
	a.now = func() time.Time { return now }
	ctx := context.Background()
	capture := func() {
		t.Helper()
		ev, err := a.Capture(ctx, platforms.CaptureLimits{})
		if err != nil || len(ev.Sources) == 0 {
			t.Fatalf("capture: %v, %+v", err, ev)
		}
	}
	if _, err := a.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	capture()
	if n := lists(); n != 1 {
		t.Fatalf("pods listed %d times for a Snapshot and the Capture right after it, want 1", n)
	}

	now = now.Add(podReuseAge + time.Second)
	capture()
	if n := lists(); n != 2 {
		t.Fatalf("a list older than %s was reused (%d lists)", podReuseAge, n)
	}

	if _, err := a.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := cs.AppsV1().Deployments("prod").Get(ctx, "myapp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.ResourceVersion, d.Status.ReadyReplicas = "2", 2
	if _, err := cs.AppsV1().Deployments("prod").UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	capture()
	if n := lists(); n != 4 {
		t.Fatalf("the pods were not listed again after the Deployment changed (%d lists, want 4)", n)
	}
}

// A capture read that fails with an error rollbot has no words for is said
// in the evidence file with a reference into the log, never as the raw
// error (which names the API server); the log line with that reference
// holds the cause. A known failure is said by its reason.
func TestCaptureErrorTextHasAReference(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string // the text, when it has no reference
	}{
		{"unknown", errors.New("Get \"https://10.96.0.1:443/api/v1/namespaces/prod/events\": stream error: stream ID 7; INTERNAL_ERROR; token=s3cr3t"), ""},
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "", errors.New("no")), "forbidden: see " + RBACFile},
		{"out of time", context.DeadlineExceeded, "the capture ran out of time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset()
			cs.PrependReactor("list", "events", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tt.err })
			logs := &logtest.Buffer{}
			a := NewWithClient(cs, Config{Namespace: "prod", Deployment: "myapp"}, slog.New(slog.NewJSONHandler(logs, nil)))
			var ev platforms.Evidence
			a.captureEvents(context.Background(), &ev, platforms.CaptureLimits{}.WithDefaults(), "deployment prod/myapp", "Deployment", "myapp")
			if len(ev.Missing) != 1 {
				t.Fatalf("missing = %q", ev.Missing)
			}
			text := ev.Missing[0]
			if tt.want != "" {
				if text != "deployment prod/myapp: events not readable ("+tt.want+")" {
					t.Errorf("text = %q, want the reason %q", text, tt.want)
				}
				return
			}
			for _, raw := range []string{"10.96.0.1", "s3cr3t", "INTERNAL_ERROR"} {
				if strings.Contains(text, raw) {
					t.Errorf("the evidence shows the raw error (%q): %q", raw, text)
				}
			}
			line := logtest.RefLine(t, logs.String(), logtest.Ref(t, text))
			if !strings.Contains(line, `"msg":"capture events"`) || !strings.Contains(line, "INTERNAL_ERROR") {
				t.Errorf("the referenced log line does not hold the cause: %s", line)
			}
		})
	}
}

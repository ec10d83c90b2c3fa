package bot

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	k8sretry "k8s.io/client-go/util/retry"

	"rollbot/handlers"
	"rollbot/platforms"
	"rollbot/platforms/database"
	"rollbot/platforms/kube"
	"rollbot/platforms/migrations"
	"rollbot/testkit/dbtest"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/slackemu"

	"rollbot/testkit/logtest"
)

// TestDBDownJobThroughSlack is the runbook's "run the down migration as a
// Kubernetes Job with the *bad* release's image" end to end: /rollback in
// the local Slack server for a service built from YAML with platform
// kubernetes on a real control plane (kubetest) and its database on a
// real PostgreSQL whose schema Django manages. rollbot's credentials are a
// ServiceAccount bound to exactly the two Roles of
// deploy/kubernetes/rbac.yaml (the adapter's and rollbot-db-migrations).
//
// The Job, its pod, the Job controller's verdict and the log through the
// pods/log API are real; the container is not: kwok, the testbed's node,
// runs no process. So the test plays the container: when the down Job
// appears it runs the Job's own command (Django's `manage.py migrate shop
// $(ROLLBOT_TARGET_SHOP)`), expanded with the Job's environment the way
// the kubelet would (DATABASE_URL read from the Secret the Job refers to),
// on this host against the real PostgreSQL, hands its output to kwok as
// the container's log, and only then lets the pod onto the node, which
// completes it. Until then the node is cordoned, so the pod cannot finish
// before the schema change it stands for is made.
func TestDBDownJobThroughSlack(t *testing.T) {
	heavy(t)
	c := kubetest.Start(t)
	cs := c.AdminClient
	ns := kubetest.CreateNamespace(t, cs, "dbjob")

	// The last good release: Deployment on shop:v1, migrations 0001 and
	// 0002 applied two hours ago, with data.
	pg := dbtest.StartPostgres(t, dbtest.PostgresOptions{TimeZone: "Europe/Berlin"})
	s := &dbService{t: t, db: pg.CreateDatabase(t), dir: writeProject(t, reversibleMigration), buildLog: &logtest.Buffer{}}
	var err error
	if s.owner, err = sql.Open("pgx", s.db.DSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.owner.Close() })
	kubetest.CreateDeployment(t, cs, ns, "shop", "registry.local/shop:v1", 2)
	manage(t, s.dir, s.db.DSN, "migrate", "shop", "0002", "--no-input")
	s.exec(`INSERT INTO shop_product (name, legacy_code, price_cents) VALUES ('kettle', 'K-17', 2599), ('teapot', 'T-03', 1850)`)
	s.exec(`UPDATE django_migrations SET applied = applied - interval '2 hours' WHERE app = 'shop'`)
	// The bad release: shop:v2 rolls out, then its migration 0003 runs.
	kubetest.SetImage(t, cs, ns, "shop", "registry.local/shop:v2")
	kubetest.WaitRolledOut(t, cs, ns, "shop")
	manage(t, s.dir, s.db.DSN, "migrate", "shop", "--no-input")
	if !s.columnExists("shop_product", "sku") {
		t.Fatal("setup: the bad release's migration did not add shop_product.sku")
	}

	// The down Job's DSN lives in a Secret of the namespace; rollbot never
	// reads it (its Role has no access to Secrets).
	if _, err := cs.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-db"},
		StringData: map[string]string{"migrate_url": s.db.DSN},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfig := c.KubeconfigForRoles(t, ns, "../deploy/kubernetes/rbac.yaml", "rollbot", migrations.JobRole)
	roVar := setenvFor(t, "SHOP_JOB_E2E_DB_RO_DSN", s.db.DSN)
	yml := fmt.Sprintf(`
incident_channels: [%s]
services:
  shop:
    platform: kubernetes
    kubernetes:
      kubeconfig: %q
      namespace: %s
      deployment: shop
      rollout_timeout: 1m
    approvers:
      groups: [%s]
    database:
      driver: postgres
      dsn_env: %s
      tool: django
      migrations_dir: %q
      down:
        kind: kubernetes_job
        namespace: %s
        command: [python, manage.py, migrate, shop, $(ROLLBOT_TARGET_SHOP), --no-input]
        env:
          PYTHONUNBUFFERED: "1"
        secret_env:
          DATABASE_URL: {secret: shop-db, key: migrate_url}
        timeout: 2m
      approvers:
        users: [%s]
        groups: [%s]
`, slackemu.ChannelIncident, kubeconfig, ns, slackemu.GroupOnCall, roVar, s.dir, ns, slackemu.UserAlice, slackemu.GroupDBA)
	cfg, err := ParseConfig([]byte(yml))
	if err != nil {
		t.Fatalf("parse config: %v\n%s", err, yml)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config invalid: %v\n%s", err, yml)
	}
	services, err := BuildServices(context.Background(), cfg, nil, slog.New(slog.NewJSONHandler(s.buildLog, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("build services: %v", err)
	}
	svc := services[0]
	// The start-up permission check passes with the two shipped Roles.
	checker, ok := svc.Database.(platforms.AccessChecker)
	if !ok {
		t.Fatalf("the database (%T) has no CheckAccess", svc.Database)
	}
	if err := checker.CheckAccess(context.Background()); err != nil {
		t.Fatalf("CheckAccess with both Roles of rbac.yaml: %v", err)
	}
	// With the adapter's Role alone it names what is missing: the Job
	// verbs (pods list and pods/log get the adapter's Role grants too).
	adapterOnly, err := kube.Clientset(kube.Config{Kubeconfig: c.KubeconfigFor(t, ns, "../deploy/kubernetes/rbac.yaml"), Namespace: ns, Deployment: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	lacking := database.New(database.Parts{Jobs: migrations.NewJobRunner(adapterOnly, nil), Down: cfg.Services["shop"].Database.Down}, nil)
	msg, _ := platforms.UserMessage(lacking.CheckAccess(context.Background()))
	if want := "rollbot may not run the down Job in namespace " + ns + ": add `create` on jobs, `get` on jobs, `watch` on jobs, `delete` on jobs to the Role rollbot-db-migrations bound to rollbot there (deploy/kubernetes/rbac.yaml)"; msg != want {
		t.Errorf("CheckAccess with the adapter's Role only:\n%s\nwant\n%s", msg, want)
	}
	// Request metrics by image (v2 bad); Prometheus is proven in prom_e2e_test.go.
	svc.Metrics = imageMetrics{svc.Platform}
	eng := fastEngine()
	eng.VerifyTimeout = 30 * time.Second
	s.h = newHarness(t, services, eng)
	h := s.h

	h.slash(slackemu.UserAlice, `shop --reason "checkout 500s after v2"`)
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Decision gate: 1 migration(s) ran since the deploy", "shop.0003_product_sku",
		"Bad version:* 2 (registry.local/shop:v2)", "Last known good:* 1 (registry.local/shop:v1)")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	m := h.waitFor("DB approval request", inThread(a.TS, hasAction(handlers.ActDBApprove)))
	wantAll(t, "DB approval request", m.PlainText(), handlers.DowntimeWarning,
		"manage.py migrate shop $(ROLLBOT_TARGET_SHOP)", "as a Kubernetes Job in namespace "+ns+" with the bad release's image")

	// The pod of the coming Job must not finish before the test has made
	// the change it stands for.
	cordon(t, cs, true)
	t.Cleanup(func() { cordon(t, cs, false) })
	played := playDownJob(t, c, ns, jobPlay{dir: s.dir, deployment: "shop", bins: map[string]string{"python": djangoPython(t)}})

	if ack := h.approve(slackemu.UserDana, m, "shop"); len(ack.Errors) != 0 {
		t.Fatalf("Dana's approval refused: %+v", ack)
	}
	var run jobRun
	select {
	case run = <-played:
	case <-time.After(kubetest.WaitTimeout):
		t.Fatalf("no down Job was created in %s\n%s", ns, h.dump())
	}
	if run.err != nil {
		t.Fatalf("playing the down Job's container: %v", run.err)
	}
	done := h.waitFor("database step done", inThread(a.TS, textHas("Database rollback* done:")))
	t.Logf("database step in the thread:\n%s", done.PlainText())
	// No health URL and no smoke test: those two items are checks by hand.
	answerChecksByHand(t, h.emu, slackemu.UserBob, 2, time.Minute)
	h.waitFor("verified", inThread(a.TS, textHas("Rollback verified")))
	h.waitFor("post-rollback actions", textHas("Post-rollback actions"))

	// The Job ran the bad release's image with the configured command, and
	// while it ran the app was still on the bad release.
	if run.image != "registry.local/shop:v2" {
		t.Errorf("the down Job ran image %s, want the bad release's registry.local/shop:v2", run.image)
	}
	if !slices.Equal(run.command, []string{"python", "manage.py", "migrate", "shop", "$(ROLLBOT_TARGET_SHOP)", "--no-input"}) || run.argv[4] != "0002_product_price" {
		t.Errorf("the down Job's command %q (expanded %q)", run.command, run.argv)
	}
	if run.appImage != "registry.local/shop:v2" {
		t.Errorf("while the down Job ran the Deployment was on %s: the app was rolled back before the database", run.appImage)
	}
	j, err := cs.BatchV1().Jobs(ns).Get(context.Background(), run.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if j.Status.Succeeded != 1 || j.Labels[migrations.LabelManagedBy] != "rollbot" {
		t.Errorf("the Job on the cluster: status %+v labels %v", j.Status, j.Labels)
	}
	// Django's output, from the container log through the pods/log API,
	// streamed into the thread; then the migration table check.
	wantAll(t, "database step output", done.PlainText(),
		"job "+ns+"/"+run.name+" created with image registry.local/shop:v2",
		"Unapplying shop.0003_product_sku... OK",
		"is back at shop.0002_product_price (checked in django_migrations); the down Job "+ns+"/"+run.name+" ran registry.local/shop:v2")
	if !strings.Contains(run.output, "Unapplying shop.0003_product_sku... OK") {
		t.Errorf("manage.py's own output lacks the unapply line:\n%s", run.output)
	}
	if s.columnExists("shop_product", "sku") || !s.columnExists("shop_product", "price_cents") {
		t.Error("the schema is not back at 0002")
	}
	if got := strings.Join(s.shopMigrations(), ","); got != "0001_initial,0002_product_price" {
		t.Errorf("django_migrations for shop = %s", got)
	}
	// Only then the app: the timeline orders them, and the pods run v1.
	if got := s.timelineOrder(); got != "database,rollback" {
		t.Errorf("the app rollback did not wait for the database step: %s", got)
	}
	images, ready := kubetest.PodImages(t, cs, ns, "shop")
	if len(images) != 2 || ready != 2 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/shop:v1" }) {
		t.Errorf("after the rollback: images %v, %d ready; want 2 Ready pods on registry.local/shop:v1", images, ready)
	}
	s.noSecretLeaked()
}

// jobRun is what playDownJob saw and did.
type jobRun struct {
	name, image string
	command     []string // as in the Job
	argv        []string // expanded as the kubelet would
	output      string   // manage.py's output, served as the container log
	appImage    string   // the Deployment's image while the Job ran
	err         error
}

// jobPlay is how playDownJob plays a down Job's container.
type jobPlay struct {
	dir        string            // the command's working directory (the project)
	deployment string            // the app, whose image is noted as the container runs
	bins       map[string]string // the host's program for the command's first word
	// gate, when set, holds the container until it is closed: the Job
	// exists and its pod waits on the cordoned node, as long as the test
	// needs the down migration to be "running" (a kill of its owner).
	gate <-chan struct{}
}

// playDownJob waits for the down Job in ns and plays its container (see
// TestDBDownJobThroughSlack): once p.gate is open it runs the Job's
// command on this host in p.dir, its first word mapped by p.bins and the
// Job's environment resolved as the kubelet would, sets its output as the
// container log and uncordons the node. It reports once, on the channel.
func playDownJob(t *testing.T, c *kubetest.Cluster, ns string, p jobPlay) <-chan jobRun {
	t.Helper()
	cs := c.AdminClient
	ctx, cancel := context.WithTimeout(context.Background(), 2*kubetest.WaitTimeout)
	w, err := cs.BatchV1().Jobs(ns).Watch(ctx, metav1.ListOptions{LabelSelector: migrations.LabelOperation + "=db-down"})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	out := make(chan jobRun, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { cancel(); w.Stop(); wg.Wait() })
	go func() {
		defer wg.Done()
		var run jobRun
		defer func() { out <- run }()
		var job *batchv1.Job
		for ev := range w.ResultChan() {
			if j, ok := ev.Object.(*batchv1.Job); ok && ev.Type == watch.Added {
				job = j
				break
			}
		}
		if job == nil {
			run.err = fmt.Errorf("watch ended without a Job: %v", ctx.Err())
			return
		}
		ctr := job.Spec.Template.Spec.Containers[0]
		run.name, run.image, run.command = job.Name, ctr.Image, ctr.Command
		if p.gate != nil {
			select {
			case <-p.gate:
			case <-ctx.Done():
				run.err = fmt.Errorf("job %s: the test never let its container run: %v", job.Name, ctx.Err())
				return
			}
		}
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, p.deployment, metav1.GetOptions{})
		if err != nil {
			run.err = err
			return
		}
		run.appImage = d.Spec.Template.Spec.Containers[0].Image
		env, err := containerEnv(ctx, cs, ns, ctr)
		if err != nil {
			run.err = err
			return
		}
		for _, a := range ctr.Command {
			run.argv = append(run.argv, expandK8s(a, env))
		}
		argv := slices.Clone(run.argv)
		if bin, ok := p.bins[argv[0]]; ok {
			argv[0] = bin
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Dir = p.dir
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + p.dir, "LANG=C.UTF-8"}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		b, err := cmd.CombinedOutput()
		run.output = string(b)
		if err != nil {
			run.err = fmt.Errorf("%q: %v\n%s", run.argv, err, b)
			return
		}
		if err := c.SetContainerLog(strings.Split(strings.TrimRight(run.output, "\n"), "\n")...); err != nil {
			run.err = err
			return
		}
		run.err = setUnschedulable(ctx, cs, false)
	}()
	return out
}

// containerEnv resolves the container's variables as the kubelet does:
// plain values, and secretKeyRef from the Secret.
func containerEnv(ctx context.Context, cs kubernetes.Interface, ns string, c corev1.Container) (map[string]string, error) {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expandK8s(e.Value, env)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			sec, err := cs.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			env[e.Name] = string(sec.Data[ref.Key])
		default:
			return nil, fmt.Errorf("variable %s: unsupported source", e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		return nil, fmt.Errorf("envFrom not played")
	}
	return env, nil
}

var k8sRefRE = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandK8s is Kubernetes' $(NAME) expansion.
func expandK8s(s string, env map[string]string) string {
	return k8sRefRE.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

func cordon(t *testing.T, cs kubernetes.Interface, on bool) {
	t.Helper()
	if err := setUnschedulable(context.Background(), cs, on); err != nil {
		t.Fatalf("cordon %v: %v", on, err)
	}
}

func setUnschedulable(ctx context.Context, cs kubernetes.Interface, on bool) error {
	return k8sretry.RetryOnConflict(k8sretry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, kubetest.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Spec.Unschedulable = on
		_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

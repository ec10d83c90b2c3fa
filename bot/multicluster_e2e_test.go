package bot

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"rollbot/handlers"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/slackemu"
)

// TestTwoClustersOneBot: two control planes, one service on each, both in
// one kubeconfig file under their own contexts (each with its own
// ServiceAccount token and CA); one bot rolls both back through Slack.
// Each adapter's client talks only to its own cluster: the service on
// "west" is not found on "east" and the other way round.
func TestTwoClustersOneBot(t *testing.T) {
	heavy(t)
	east, west := kubetest.Start(t), kubetest.Start(t)
	merged := clientcmdapi.NewConfig()
	nss := map[string]string{}
	for _, cl := range []struct {
		name string
		c    *kubetest.Cluster
	}{{"east", east}, {"west", west}} {
		ns := kubetest.CreateNamespace(t, cl.c.AdminClient, cl.name)
		nss[cl.name] = ns
		kubetest.CreateDeployment(t, cl.c.AdminClient, ns, "shop-"+cl.name, "registry.local/shop:v1", 2)
		kubetest.WaitRolledOut(t, cl.c.AdminClient, ns, "shop-"+cl.name)
		kubetest.SetImage(t, cl.c.AdminClient, ns, "shop-"+cl.name, "registry.local/shop:v2")
		kubetest.WaitRolledOut(t, cl.c.AdminClient, ns, "shop-"+cl.name)
		cfg, err := clientcmd.LoadFromFile(cl.c.KubeconfigFor(t, ns, "../deploy/kubernetes/rbac.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		ctx := cfg.Contexts[cfg.CurrentContext]
		merged.Clusters[cl.name] = cfg.Clusters[ctx.Cluster]
		merged.AuthInfos[cl.name] = cfg.AuthInfos[ctx.AuthInfo]
		merged.Contexts[cl.name] = &clientcmdapi.Context{Cluster: cl.name, AuthInfo: cl.name}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*merged, path); err != nil {
		t.Fatal(err)
	}
	var services []*handlers.Service
	for _, name := range []string{"east", "west"} {
		p, err := kube.NewPlatform(kube.Config{Kubeconfig: path, Context: name, Namespace: nss[name], Deployment: "shop-" + name, RolloutTimeout: time.Minute}, nil)
		if err != nil {
			t.Fatal(err)
		}
		services = append(services, &handlers.Service{Name: "shop-" + name, Platform: p, Metrics: imageMetrics{p},
			Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
			Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}})
		// The other cluster has no such namespace: a client mixed up
		// between clusters would fail here.
		other := "west"
		if name == "west" {
			other = "east"
		}
		cross, err := kube.NewPlatform(kube.Config{Kubeconfig: path, Context: other, Namespace: nss[name], Deployment: "shop-" + name}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cross.Snapshot(t.Context()); err == nil {
			t.Fatalf("shop-%s found through context %s", name, other)
		}
	}
	h := newHarness(t, services, fastEngine())
	for _, svc := range services {
		h.slash(slackemu.UserAlice, svc.Name)
		a := h.waitFor(svc.Name+" assessment", func(m slackemu.Message) bool {
			return slicesHas(m.ActionIDs(), handlers.ActConfirm) && containsText(m, "Rollback of "+svc.Name)
		})
		wantAll(t, svc.Name, a.PlainText(), "(cluster "+svc.Name[len("shop-"):]+")")
		h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
		h.tickChecksByHand(slackemu.UserBob, a.TS)
		h.waitFor(svc.Name+" verified", func(m slackemu.Message) bool {
			return m.ThreadTS == a.TS && containsText(m, "Rollback verified")
		})
	}
	for name, c := range map[string]*kubetest.Cluster{"east": east, "west": west} {
		images, ready := kubetest.PodImages(t, c.AdminClient, nss[name], "shop-"+name)
		if len(images) != 2 || ready != 2 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/shop:v1" }) {
			t.Fatalf("%s after the rollback: %v, %d ready", name, images, ready)
		}
	}
}

func containsText(m slackemu.Message, s string) bool { return strings.Contains(m.PlainText(), s) }

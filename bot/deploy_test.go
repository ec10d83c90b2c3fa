package bot

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// decodeManifests decodes every YAML document of file with the Kubernetes
// API types, strictly: an unknown or misspelt field fails.
func decodeManifests(t *testing.T, file string) []runtime.Object {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var out []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if strings.TrimSpace(stripComments(string(doc))) == "" {
			continue
		}
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: document %d does not decode as a Kubernetes object: %v", file, i, err)
		}
		if gvk.Kind == "" {
			t.Fatalf("%s: document %d has no kind", file, i)
		}
		out = append(out, obj)
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestDeployManifestsDecode(t *testing.T) {
	light(t)
	files, err := filepath.Glob("../deploy/kubernetes/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("manifests: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if objs := decodeManifests(t, f); len(objs) == 0 {
				t.Errorf("%s holds no object", f)
			}
		})
	}
}

func TestDeployManifestReplicas(t *testing.T) {
	light(t)
	var dep *appsv1.Deployment
	var pdb *policyv1.PodDisruptionBudget
	for _, o := range decodeManifests(t, "../deploy/kubernetes/rollbot.yaml") {
		switch o := o.(type) {
		case *appsv1.Deployment:
			dep = o
		case *policyv1.PodDisruptionBudget:
			pdb = o
		}
	}
	if dep == nil || pdb == nil {
		t.Fatalf("rollbot.yaml: Deployment %v, PodDisruptionBudget %v", dep != nil, pdb != nil)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", dep.Spec.Replicas)
	}
	st := dep.Spec.Strategy
	if st.Type != appsv1.RollingUpdateDeploymentStrategyType || st.RollingUpdate == nil ||
		st.RollingUpdate.MaxUnavailable.String() != "1" || st.RollingUpdate.MaxSurge.String() != "1" {
		t.Errorf("strategy %+v, want RollingUpdate with maxUnavailable 1, maxSurge 1", st)
	}
	podLabels := labels.Set(dep.Spec.Template.Labels)
	if sel := dep.Spec.Selector; sel == nil || !labels.SelectorFromSet(sel.MatchLabels).Matches(podLabels) {
		t.Errorf("deployment selector %v does not match the pod labels %v", dep.Spec.Selector, podLabels)
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.String() != "2" {
		t.Errorf("PodDisruptionBudget minAvailable %v, want 2", pdb.Spec.MinAvailable)
	}
	if pdb.Spec.Selector == nil || !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(podLabels) || pdb.Namespace != dep.Namespace {
		t.Errorf("PodDisruptionBudget %s/%v does not select the rollbot pods %s/%v", pdb.Namespace, pdb.Spec.Selector, dep.Namespace, podLabels)
	}

	if len(dep.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("containers: %d", len(dep.Spec.Template.Spec.Containers))
	}
	c := dep.Spec.Template.Spec.Containers[0]
	// The ops listener's port: where ROLLBOT_OPS_ADDR says, the named
	// container port, the probes and the scrape annotation agree.
	var opsAddr string
	for _, e := range c.Env {
		if e.Name == OpsAddrVar {
			opsAddr = e.Value
		}
	}
	_, portStr, err := net.SplitHostPort(opsAddr)
	if err != nil {
		t.Fatalf("%s=%q: %v", OpsAddrVar, opsAddr, err)
	}
	port, _ := strconv.Atoi(portStr)
	var opsPort *corev1.ContainerPort
	for i := range c.Ports {
		if c.Ports[i].Name == "ops" {
			opsPort = &c.Ports[i]
		}
	}
	if opsPort == nil || int(opsPort.ContainerPort) != port {
		t.Errorf("container port ops %+v, want %d (%s)", opsPort, port, OpsAddrVar)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: %+v, want an HTTP GET", p.name, p.probe)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || (g.Port.String() != "ops" && g.Port.IntValue() != port) {
			t.Errorf("%s probe GET %s on %s, want %s on the ops port", p.name, g.Path, g.Port.String(), p.path)
		}
	}
	ann := dep.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != portStr || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v, want scrape true, port %s, path /metrics", ann, portStr)
	}
}

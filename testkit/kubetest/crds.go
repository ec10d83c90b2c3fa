package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

// GitOps tools' CRDs as their own Go modules ship them: the module,
// version and files (relative to the module's root). Some modules need a
// newer Go toolchain than the project's just to be downloaded (their
// go.mod says so); Toolchain names it (the download only: nothing is built).
type ModuleCRDs struct {
	Module, Version, Toolchain string
	Files                      []string
}

var (
	// ArgoCDCRDs is Argo CD's Application CRD.
	ArgoCDCRDs = ModuleCRDs{Module: "github.com/argoproj/argo-cd/v3", Version: "v3.4.5",
		Files: []string{"manifests/crds/application-crd.yaml"}}
	// FluxKustomizeCRDs is Flux's Kustomization CRD.
	FluxKustomizeCRDs = ModuleCRDs{Module: "github.com/fluxcd/kustomize-controller", Version: "v1.10.1", Toolchain: "go1.27.3",
		Files: []string{"config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml"}}
	// FluxSourceCRDs is Flux's GitRepository CRD.
	FluxSourceCRDs = ModuleCRDs{Module: "github.com/fluxcd/source-controller", Version: "v1.10.1", Toolchain: "go1.27.3",
		Files: []string{"config/crd/bases/source.toolkit.fluxcd.io_gitrepositories.yaml"}}
)

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// moduleDir returns the module's directory in the module cache,
// downloading it through the Go module proxy when it is not there yet.
func moduleDir(m ModuleCRDs) (string, error) {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMODCACHE: %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), escapeModule(m.Module)+"@"+m.Version)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	cmd := exec.Command("go", "mod", "download", "-json", m.Module+"@"+m.Version)
	cmd.Dir = os.TempDir() // outside any module: the project's go.mod is not involved
	cmd.Env = os.Environ()
	if m.Toolchain != "" {
		cmd.Env = append(cmd.Env, "GOTOOLCHAIN="+m.Toolchain)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w: %s", m.Module, m.Version, err, tail(stderr.String(), 2000))
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(b, &info); err != nil || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: no directory (%s%s)", m.Module, m.Version, info.Error, err)
	}
	return info.Dir, nil
}

// escapeModule is the module cache's case encoding: "!x" for "X".
func escapeModule(path string) string {
	var b strings.Builder
	for _, r := range path {
		if r >= 'A' && r <= 'Z' {
			b.WriteString("!" + string(r+'a'-'A'))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// InstallCRDs creates the CRDs of m on the cluster, read from the module
// (downloaded into the module cache if needed), and waits until each is
// established and its resource answers. It fails the test when the module
// cannot be had: the test needs the real CRDs.
func (c *Cluster) InstallCRDs(t testing.TB, m ModuleCRDs) {
	t.Helper()
	dir, err := moduleDir(m)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(c.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		docs, err := readYAMLDocs(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range docs {
			if obj.GetKind() != "CustomResourceDefinition" {
				continue
			}
			if err := c.installCRD(dyn, obj); err != nil {
				t.Fatalf("%s@%s %s: %v", m.Module, m.Version, f, err)
			}
		}
	}
}

func (c *Cluster) installCRD(dyn dynamic.Interface, obj *unstructured.Unstructured) error {
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	defer cancel()
	if _, err := dyn.Resource(crdResource).Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create CRD %s: %w", obj.GetName(), err)
	}
	group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
	versions, _, _ := unstructured.NestedSlice(obj.Object, "spec", "versions")
	return c.poll(ctx, "CRD "+obj.GetName()+" to be served", func() (bool, error) {
		got, err := dyn.Resource(crdResource).Get(ctx, obj.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		established := false
		for _, cnd := range conds {
			m, _ := cnd.(map[string]any)
			established = established || (m["type"] == "Established" && m["status"] == "True")
		}
		if !established {
			return false, nil
		}
		for _, v := range versions {
			vm, _ := v.(map[string]any)
			if served, _ := vm["served"].(bool); !served {
				continue
			}
			name, _ := vm["name"].(string)
			_, err := dyn.Resource(schema.GroupVersionResource{Group: group, Version: name, Resource: plural}).List(ctx, metav1.ListOptions{Limit: 1})
			if err != nil {
				return false, nil
			}
		}
		return true, nil
	})
}

// readYAMLDocs reads every object of a multi-document YAML file.
func readYAMLDocs(path string) ([]*unstructured.Unstructured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return DecodeYAML(b)
}

// DecodeYAML decodes every object of a multi-document YAML text.
func DecodeYAML(b []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var m map[string]any
		if err := utilyaml.Unmarshal(doc, &m); err != nil {
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

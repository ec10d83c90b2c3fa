package kube

import (
	"errors"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/storage/driver"

	"helm.sh/helm/v4/pkg/release/common"
	release "helm.sh/helm/v4/pkg/release/v1"
)

// Which Helm revisions deployed successfully: "deployed", or "superseded"
// without a failure recorded in the description (Helm supersedes a failed
// revision when a rollback from it fails to apply, and when an upgrade
// starts from it with nothing deployed).
func TestDeployedOK(t *testing.T) {
	tests := []struct {
		status common.Status
		desc   string
		ok     bool
		why    string
	}{
		{common.StatusDeployed, "Install complete", true, ""},
		{common.StatusSuperseded, "Upgrade complete", true, ""},
		{common.StatusSuperseded, "Rollback to 1", true, ""},
		{common.StatusSuperseded, "superseded by new release", true, ""},
		{common.StatusSuperseded, "release 7 of the quarter", true, ""}, // a --description of the user's
		{common.StatusSuperseded, `Upgrade "shop" failed: context deadline exceeded`, false, "never deployed successfully"},
		{common.StatusSuperseded, `Release "shop" failed: resource Deployment/prod/shop not ready`, false, "never deployed successfully"},
		{common.StatusSuperseded, `Rollback "shop" failed: conflict`, false, "never deployed successfully"},
		{common.StatusSuperseded, "failed to render resource: template: x", false, "never deployed successfully"},
		{common.StatusFailed, `Upgrade "shop" failed: timed out`, false, "Helm revision 4 failed"},
		{common.StatusPendingUpgrade, "Preparing upgrade", false, "is pending-upgrade"},
		{common.StatusPendingRollback, "Rollback to 1", false, "is pending-rollback"},
		{common.StatusUninstalled, "Uninstallation complete", false, "is uninstalled"},
	}
	for _, tt := range tests {
		t.Run(string(tt.status)+" "+tt.desc, func(t *testing.T) {
			rel := &release.Release{Name: "shop", Version: 4, Info: &release.Info{Status: tt.status, Description: tt.desc}}
			ok, why := deployedOK(rel)
			if ok != tt.ok || !strings.Contains(why, tt.why) {
				t.Fatalf("deployedOK = %v %q; want %v %q", ok, why, tt.ok, tt.why)
			}
		})
	}
	// Another release's failure in the description is not this one's.
	if failedDescription("shop", `Upgrade "cart" failed: x`) {
		t.Fatal("a description naming another release counted as this one's failure")
	}
}

// A Helm revision's image is read from the Deployment of its manifest,
// the configured container or the first.
func TestHelmRevisionImage(t *testing.T) {
	manifest := `---
# Source: rbdemo/templates/svc.yaml
apiVersion: v1
kind: Service
metadata:
  name: shop
---
# Source: rbdemo/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  template:
    spec:
      containers:
      - name: sidecar
        image: proxy:1
      - name: app
        image: registry.local/shop:v1
`
	rel := &release.Release{Name: "shop", Version: 1, Manifest: manifest, Info: &release.Info{Status: common.StatusDeployed}}
	a := &Adapter{cfg: Config{Namespace: "prod", Deployment: "shop"}.withDefaults()}
	if r := a.helmRevision(rel); r.ID != "1" || r.Artifact != "proxy:1" || r.Unusable != "" {
		t.Fatalf("first container: %+v", r)
	}
	a.cfg.Container = "app"
	if r := a.helmRevision(rel); r.Artifact != "registry.local/shop:v1" {
		t.Fatalf("container app: %+v", r)
	}
	a.cfg.Deployment = "cart"
	if r := a.helmRevision(rel); r.Artifact != "" || !strings.Contains(r.Unusable, "has no deployment cart") {
		t.Fatalf("another Deployment: %+v", r)
	}
}

// The rollback's compare-and-set: only the revision after the one read may
// be recorded, and never one that exists (Helm's drivers refuse it).
func TestCASDriver(t *testing.T) {
	rel := func(v int) *release.Release {
		return &release.Release{Name: "shop", Version: v, Info: &release.Info{Status: common.StatusPendingRollback}}
	}
	key := func(v int) string { return "sh.helm.release.v1.shop.v" + string(rune('0'+v)) }
	mem := driver.NewMemory()
	if err := mem.Create(key(3), rel(3)); err != nil {
		t.Fatal(err)
	}
	c := &casDriver{Driver: mem, next: 3}
	if err := c.Create(key(4), rel(4)); !errors.Is(err, errHelmMoved) {
		t.Fatalf("revision 4 when 3 is expected: %v", err)
	}
	if err := c.Create(key(3), rel(3)); !errors.Is(err, driver.ErrReleaseExists) {
		t.Fatalf("revision 3 exists: %v", err)
	}
	c.next = 4
	if err := c.Create(key(4), rel(4)); err != nil {
		t.Fatalf("revision 4 when 4 is expected: %v", err)
	}
	c.next = 0
	if err := c.Create(key(6), rel(6)); err != nil {
		t.Fatalf("no precondition: %v", err)
	}
}

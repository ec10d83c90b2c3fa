package dockertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"rollbot/testkit/wait"
)

// TestImageRunsAndReportsHealth builds two variants, runs each in a
// container with a loopback port, and checks the version it serves and
// the health the engine reports through the image's HEALTHCHECK binary.
func TestImageRunsAndReportsHealth(t *testing.T) {
	cli := Client(t)
	tests := []struct {
		v          Variant
		wantHealth container.HealthStatus
	}{
		{Variant{Tag: "dockertest-good", Version: "v1"}, container.Healthy},
		{Variant{Tag: "dockertest-badhealth", Version: "v2", FailHealth: true}, container.Unhealthy},
	}
	for _, tt := range tests {
		t.Run(tt.v.Tag, func(t *testing.T) {
			ctx := context.Background()
			ref := MustImage(t, cli, tt.v)
			// A second call finds the cached image (same content hash).
			before, err := cli.ImageInspect(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Image(ctx, cli, tt.v); err != nil {
				t.Fatal(err)
			}
			after, err := cli.ImageInspect(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if before.ID != after.ID {
				t.Errorf("second build of the same variant made a new image: %s -> %s", before.ID, after.ID)
			}

			port := network.MustParsePort("8080/tcp")
			c, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
				Name:   Name("dockertest-"),
				Config: &container.Config{Image: ref},
				HostConfig: &container.HostConfig{PortBindings: network.PortMap{
					port: {{HostIP: netip.MustParseAddr("127.0.0.1")}},
				}},
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cli.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true})
			})
			if _, err := cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
				t.Fatal(err)
			}
			var url string
			wait.Every(t, 200*time.Millisecond, 30*time.Second, "health "+string(tt.wantHealth), func() (bool, error) {
				in, err := cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
				if err != nil {
					return false, err
				}
				st := in.Container.State
				if st.Health == nil {
					return false, errors.New("no health state")
				}
				for _, b := range in.Container.NetworkSettings.Ports[port] {
					url = fmt.Sprintf("http://127.0.0.1:%s", b.HostPort)
				}
				return st.Health.Status == tt.wantHealth, fmt.Errorf("health %s", st.Health.Status)
			})
			resp, err := http.Get(url + "/version")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := strings.TrimSpace(string(body)); got != tt.v.Version {
				t.Errorf("/version = %q, want %q", got, tt.v.Version)
			}
		})
	}
}

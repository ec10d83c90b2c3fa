package compose

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// slowInspect answers the first inspect with a running container whose
// published port is url's, and then takes longer than any deadline (an
// engine under load).
type slowInspect struct {
	dockerAPI // nil: waitReady calls nothing else
	port      string
	calls     atomic.Int32
}

func (s *slowInspect) ContainerInspect(ctx context.Context, id string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	if s.calls.Add(1) > 1 {
		<-ctx.Done()
		return client.ContainerInspectResult{}, ctx.Err()
	}
	p := network.MustParsePort("8080/tcp")
	return client.ContainerInspectResult{Container: container.InspectResponse{
		ID:    id,
		State: &container.State{Running: true, Status: container.StateRunning},
		NetworkSettings: &container.NetworkSettings{Ports: network.PortMap{
			p: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: s.port}},
		}},
	}}, nil
}

// When the deadline passes while the engine is still answering an
// inspect, the message still says what the last look saw (CI: "not ready
// within 15s" without the 503 the container had answered).
func TestReadyTimeoutKeepsTheLastLook(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "v2 is broken", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	api := &slowInspect{port: srv.URL[strings.LastIndex(srv.URL, ":")+1:]}
	a := newAdapter(Config{Project: "p", Service: "web", HealthPath: "/health", Timeout: time.Second}, api, nil)
	a.poll = 50 * time.Millisecond
	err := a.waitReady(context.Background(), "c1", nil)
	if err == nil || !strings.Contains(err.Error(), "not ready within 1s") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("waitReady = %v; want the timeout with the last look's 503", err)
	}
	if api.calls.Load() < 2 {
		t.Fatalf("%d inspects: the deadline was not reached during one", api.calls.Load())
	}
}

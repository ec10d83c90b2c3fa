package awstest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// backend is a target process answering its name (and 500 on /fail).
func backend(t *testing.T, name string) (string, int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
		fmt.Fprint(w, name)
	}))
	t.Cleanup(srv.Close)
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	p, _ := strconv.Atoi(port)
	return host, p
}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func TestDataPlane(t *testing.T) {
	const (
		lst   = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/lb/50dc6c495c0c9188/f2f7dc8efc522ab2"
		blue  = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/app-blue/1111111111111111"
		green = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/app-green/2222222222222222"
	)
	s := New()
	defer s.Close()
	bh, b1 := backend(t, "blue1")
	_, b2 := backend(t, "blue2")
	_, g1 := backend(t, "green1")
	s.AddTargetGroup(TargetGroup{ARN: blue, Name: "app-blue", Port: b1, Targets: []Target{{ID: bh, State: "healthy"}, {ID: bh, Port: b2, State: "healthy"}}})
	s.AddTargetGroup(TargetGroup{ARN: green, Name: "app-green", Targets: []Target{{ID: bh, Port: g1, State: "healthy"}}})
	s.AddListener(Listener{ARN: lst, DefaultActions: []Action{{Type: "forward", Forward: []WeightedGroup{{ARN: blue, Weight: 100}, {ARN: green, Weight: 0}}}}})
	d := s.DataPlane(lst)
	defer d.Close()

	count := func(n int, path string) map[string]int {
		got := map[string]int{}
		for range n {
			_, body := get(t, d.URL+path)
			got[body]++
		}
		return got
	}
	// 100/0: every request to blue, round-robin over its two targets
	// (the first one on the group's port).
	if got := count(4, "/"); got["blue1"] != 2 || got["blue2"] != 2 {
		t.Errorf("100/0: %v, want blue1 and blue2 twice each", got)
	}
	// Weighted 1:3, deterministic.
	s.SetListenerActions(lst, []Action{{Type: "forward", Forward: []WeightedGroup{{ARN: blue, Weight: 1}, {ARN: green, Weight: 3}}}})
	if got := count(8, "/"); got["green1"] != 6 || got["blue1"]+got["blue2"] != 2 {
		t.Errorf("1:3: %v, want 6 green and 2 blue", got)
	}
	// An unhealthy target gets no traffic; when none is healthy, all do (fail open).
	s.SetListenerActions(lst, []Action{{Type: "forward", Forward: []WeightedGroup{{ARN: blue, Weight: 1}}}})
	s.AddTargetGroup(TargetGroup{ARN: blue, Name: "app-blue", Port: b1, Targets: []Target{{ID: bh, State: "healthy"}, {ID: bh, Port: b2, State: "unhealthy"}}})
	if got := count(3, "/"); got["blue1"] != 3 {
		t.Errorf("one unhealthy: %v, want blue1 only", got)
	}
	s.SetTargetState(blue, "unhealthy", "Target.FailedHealthChecks")
	if got := count(4, "/"); got["blue1"] != 2 || got["blue2"] != 2 {
		t.Errorf("none healthy: %v, want both (fail open)", got)
	}
	// A target that does not answer is a 502; a fixed response is served as is.
	s.AddTargetGroup(TargetGroup{ARN: green, Name: "app-green", Targets: []Target{{ID: "127.0.0.1", Port: 1, State: "healthy"}}})
	s.SetListenerActions(lst, []Action{{Type: "forward", Forward: []WeightedGroup{{ARN: green, Weight: 1}}}})
	if code, _ := get(t, d.URL+"/"); code != http.StatusBadGateway {
		t.Errorf("unreachable target: %d, want 502", code)
	}
	s.SetListenerActions(lst, []Action{{Type: "fixed-response", FixedStatusCode: "418", FixedMessageBody: "maintenance"}})
	if code, body := get(t, d.URL+"/"); code != 418 || body != "maintenance" {
		t.Errorf("fixed response: %d %q", code, body)
	}
	// Back to blue; a failing request is counted as a 5xx of the group.
	s.SetListenerActions(lst, []Action{{Type: "forward", Forward: []WeightedGroup{{ARN: blue, Weight: 1}}}})
	if code, _ := get(t, d.URL+"/fail"); code != 500 {
		t.Errorf("/fail through the data plane: %d", code)
	}

	if got := d.Served(); got["app-blue"] != 4+2+3+4+1 || got["app-green"] != 6+1 {
		t.Errorf("Served = %v", got)
	}
	_, metrics := get(t, d.MetricsURL+"/metrics")
	for _, want := range []string{
		`http_requests_total{code="200",target_group="app-blue"} 13`,
		`http_requests_total{code="500",target_group="app-blue"} 1`,
		`http_requests_total{code="200",target_group="app-green"} 6`,
		`http_requests_total{code="502",target_group="app-green"} 1`,
		`http_requests_total{code="418",target_group=""} 1`,
		`http_request_duration_seconds_bucket{target_group="app-blue",le="+Inf"} 14`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}
}

package promtest

import (
	"context"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	got := config([]Target{{Job: "a", Addr: "127.0.0.1:1"}, {Job: "b", Addr: "127.0.0.1:2"}, {Job: "a", Addr: "127.0.0.1:3"}})
	want := `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: "a"
    static_configs:
      - targets:
          - "127.0.0.1:1"
          - "127.0.0.1:3"
  - job_name: "b"
    static_configs:
      - targets:
          - "127.0.0.1:2"
`
	if got != want {
		t.Fatalf("config =\n%s\nwant\n%s", got, want)
	}
}

// TestStart runs the real thing: Prometheus scraping the sample service.
func TestStart(t *testing.T) {
	app := StartSampleApp(t, BuildSampleApp(t), "-self-load", "20")
	p := Start(t, Target{Job: "app", Addr: app.Addr})
	t0 := time.Now()
	at := p.WaitScrapedAfter(t, "app", t0, 30*time.Second)
	if !at.After(t0) {
		t.Fatalf("scrape at %s, not after %s", at, t0)
	}
	res, err := p.Query(context.Background(), `sampleapp_build_info{job="app"}`, at)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Metric["version"] != "v1" || res[0].Value != 1 {
		t.Fatalf("sampleapp_build_info = %+v", res)
	}
	p.Stop(t)
	if _, err := p.Query(context.Background(), "up", time.Time{}); err == nil {
		t.Fatal("query answered after Stop")
	}
}

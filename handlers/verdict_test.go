package handlers

import (
	"strings"
	"testing"
	"time"

	"rollbot/platforms"
)

// series is a Series of one point every step from `from`.
func series(from time.Time, step time.Duration, values ...float64) seriesRead {
	s := platforms.Series{Source: "prometheus prom:9090", Query: "q"}
	for i, v := range values {
		s.Points = append(s.Points, platforms.Point{At: from.Add(time.Duration(i) * step), Value: v})
	}
	return seriesRead{s: s, ok: true}
}

// verdictScene is an incident on t0's clock: the deploy at t0-10m, the
// assessment at t0, a range from t0-40m every minute; the error rate fails
// (limit 1%), the p95 passes.
type verdictScene struct {
	reads  *verdictReads
	checks []Check
	svc    *Service
}

func newVerdictScene() *verdictScene {
	from := t0.Add(-40 * time.Minute)
	return &verdictScene{
		reads: &verdictReads{from: from, to: t0, deployed: t0.Add(-10 * time.Minute), step: time.Minute, window: 2 * time.Minute},
		checks: []Check{
			{Name: "Error rate", Verdict: Fail, limit: 0.01},
			{Name: "Latency p95", Verdict: Pass, limit: 0.236},
			{Name: "Pod restarts", Verdict: Fail},
			{Name: "Failed readiness", Verdict: Pass},
		},
		svc: &Service{Name: "myapp", AssessWindow: 5 * time.Minute, Metrics: struct{ platforms.Metrics }{}},
	}
}

// errorsFrom is 41 points (t0-40m … t0): 0.1% before minute `start`, 7% from it.
func errorsFrom(start int) []float64 {
	out := make([]float64, 41)
	for i := range out {
		out[i] = 0.001
		if i >= start {
			out[i] = 0.07
		}
	}
	return out
}

func healthyNeighbour(r *verdictReads, name string) neighbourRead {
	errs := make([]float64, 41)
	p95 := make([]float64, 41)
	for i := range p95 {
		errs[i], p95[i] = 0.002, 0.1
	}
	return neighbourRead{n: Neighbour{Name: name}, errs: series(r.from, time.Minute, errs...), p95: series(r.from, time.Minute, p95...)}
}

func degradedNeighbour(r *verdictReads, name string, start int) neighbourRead {
	n := healthyNeighbour(r, name)
	n.errs = series(r.from, time.Minute, errorsFrom(start)...)
	return n
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		scene   func(s *verdictScene)
		want    Relation
		summary string
		detail  string // in the evidence
	}{
		{
			name: "errors start after the deploy, neighbours healthy",
			scene: func(s *verdictScene) {
				s.reads.errs = series(s.reads.from, time.Minute, errorsFrom(31)...) // t0-9m: 1 min after the deploy
				s.reads.neighbours = []neighbourRead{healthyNeighbour(s.reads, "payments"), healthyNeighbour(s.reads, "search")}
				s.reads.nodes = &platforms.NodeReport{Nodes: 3, Workload: 2}
			},
			want: Likely, summary: "Started 60 s after the deploy; other services healthy (2 of 2)",
			detail: "nodes: the 2 running myapp have no bad condition",
		},
		{
			name: "errors start before the deploy",
			scene: func(s *verdictScene) {
				s.reads.errs = series(s.reads.from, time.Minute, errorsFrom(18)...) // t0-22m: 12 min before
				s.reads.neighbours = []neighbourRead{healthyNeighbour(s.reads, "payments")}
			},
			want: Unlikely, summary: "Started 12 min before the deploy; other services healthy (1 of 1)",
		},
		{
			name: "over the threshold from the start of the range",
			scene: func(s *verdictScene) {
				s.reads.errs = series(s.reads.from, time.Minute, errorsFrom(0)...)
			},
			want: Unlikely, summary: "Over the threshold since at least 08:50:00 UTC, 30 min before the deploy",
		},
		{
			name: "most services degraded",
			scene: func(s *verdictScene) {
				s.reads.errs = series(s.reads.from, time.Minute, errorsFrom(31)...)
				s.reads.neighbours = []neighbourRead{
					degradedNeighbour(s.reads, "payments", 30), degradedNeighbour(s.reads, "search", 31), degradedNeighbour(s.reads, "cart", 31),
					degradedNeighbour(s.reads, "auth", 31), healthyNeighbour(s.reads, "mail"), healthyNeighbour(s.reads, "media"),
				}
			},
			want: Unlikely, summary: "Started 60 s after the deploy, but 5 of 7 services degraded",
			detail: "degraded: payments (error rate 7.00% since 09:20:00 UTC)",
		},
		{
			name: "one neighbour of several degraded",
			scene: func(s *verdictScene) {
				s.reads.errs = series(s.reads.from, time.Minute, errorsFrom(31)...)
				s.reads.neighbours = []neighbourRead{degradedNeighbour(s.reads, "payments", 31), healthyNeighbour(s.reads, "search"), healthyNeighbour(s.reads, "cart")}
			},
			want: Likely, summary: "Started 60 s after the deploy; 1 of 3 other services degraded too",
		},
		{
			name: "node under memory pressure",
			scene: func(s *verdictScene) {
				s.reads.errs = series(s.reads.from, time.Minute, errorsFrom(31)...)
				s.reads.nodes = &platforms.NodeReport{Nodes: 3, Workload: 1, Problems: []platforms.NodeProblem{
					{Node: "node-a", Condition: "MemoryPressure", Since: t0.Add(-9 * time.Minute), Workload: true},
					{Node: "node-c", Condition: "NotReady"},
				}}
			},
			want: Unlikely, summary: "Started 60 s after the deploy, but node node-a MemoryPressure since 09:21:00 UTC",
			detail: "other nodes (3 in the cluster): node-c NotReady",
		},
		{
			name: "no metrics source",
			scene: func(s *verdictScene) {
				s.svc.Metrics = nil
				s.checks[0].Verdict = Inconclusive
				s.checks[1].Verdict = Inconclusive
			},
			want: Unknown, summary: "no metrics source configured, so there is no onset to time",
		},
		{
			name: "scrape history starts after the deploy",
			scene: func(s *verdictScene) {
				s.reads.errs = series(t0.Add(-3*time.Minute), time.Minute, 0.07, 0.07, 0.07, 0.07)
			},
			want: Unknown, summary: "the data starts at 09:27:00 UTC, after the deploy, already over the threshold",
		},
		{
			name: "range query failed",
			scene: func(s *verdictScene) {
				s.reads.errs = seriesRead{err: "Prometheus at prom:9090 timed out evaluating the error ratio query"}
			},
			want: Unknown, summary: "error rate over time not measured: Prometheus at prom:9090 timed out evaluating the error ratio query",
		},
		{
			name: "recovered by the end of the range",
			scene: func(s *verdictScene) {
				v := errorsFrom(31)
				for i := 36; i < 41; i++ {
					v[i] = 0.001
				}
				s.reads.errs = series(s.reads.from, time.Minute, v...)
			},
			want: Unknown, summary: "the error rate over time is not over its threshold at the end of the range",
		},
		{
			name: "deploy time unknown",
			scene: func(s *verdictScene) {
				s.reads = &verdictReads{why: "the platform did not say when the deploy started"}
			},
			want: Unknown, summary: "the platform did not say when the deploy started",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newVerdictScene()
			tc.scene(s)
			r := judge(s.svc, s.reads, s.checks)
			t.Logf("%s | %s", r.Text(), strings.Join(r.Evidence, " | "))
			if r.Verdict != tc.want || !strings.HasPrefix(r.Summary, tc.summary) {
				t.Fatalf("verdict %s %q, want %s %q", r.Verdict, r.Summary, tc.want, tc.summary)
			}
			if tc.detail != "" && !strings.Contains(strings.Join(r.Evidence, "\n"), tc.detail) {
				t.Fatalf("evidence %q lacks %q", r.Evidence, tc.detail)
			}
		})
	}
}

func TestRecommendationFollowsVerdict(t *testing.T) {
	a := goldenAssessment()
	for _, tc := range []struct {
		r    *Relatedness
		want string
	}{
		{nil, "Proceed to rollback: Error rate, Latency p95, Pod restarts over threshold."},
		{&Relatedness{Verdict: Likely, Summary: "Started 40 s after the deploy; other services healthy (2 of 2)"},
			"Proceed to rollback: Error rate, Latency p95, Pod restarts over threshold; started 40 s after the deploy; other services healthy (2 of 2) → likely this deploy."},
		{&Relatedness{Verdict: Unlikely, Summary: "Started 12 min before the deploy"},
			"Likely not this deploy: started 12 min before the deploy. Check infrastructure first (runbook: do not roll back a non-deployment issue); rolling back stays possible (Error rate, Latency p95, Pod restarts over threshold)."},
		{&Relatedness{Verdict: Unknown, Summary: "no metrics source configured, so there is no onset to time"},
			"Proceed to rollback: Error rate, Latency p95, Pod restarts over threshold. Whether it is deployment-related is unknown (no metrics source configured, so there is no onset to time)."},
	} {
		a.Related = tc.r
		if got := a.Recommendation(); got != tc.want {
			t.Errorf("Recommendation() =\n%s\nwant\n%s", got, tc.want)
		}
	}
	// Nothing over its threshold, but the nodes are unwell.
	for i := range a.Checks {
		a.Checks[i].Verdict = Pass
	}
	a.Related = &Relatedness{Verdict: Unlikely, Summary: "Node n1 MemoryPressure since 09:21:00 UTC"}
	if got, want := a.Recommendation(), "Likely not this deploy: node n1 MemoryPressure since 09:21:00 UTC. Check infrastructure first (runbook: do not roll back a non-deployment issue); rolling back stays possible."; got != want {
		t.Errorf("Recommendation() =\n%s\nwant\n%s", got, want)
	}
}

// goldenVerdicts are the "Deployment-related?" rows of the golden
// messages, judged from series as Prometheus would answer them.
func goldenVerdicts() map[string]*Relatedness {
	out := map[string]*Relatedness{}
	s := newVerdictScene()
	s.reads.errs = series(s.reads.from, time.Minute, errorsFrom(31)...)
	s.reads.neighbours = []neighbourRead{healthyNeighbour(s.reads, "payments"), healthyNeighbour(s.reads, "search")}
	s.reads.nodes = &platforms.NodeReport{Nodes: 3, Workload: 2}
	out["likely"] = judge(s.svc, s.reads, s.checks)

	s = newVerdictScene()
	s.reads.errs = series(s.reads.from, time.Minute, errorsFrom(18)...)
	s.reads.neighbours = []neighbourRead{degradedNeighbour(s.reads, "payments", 17), healthyNeighbour(s.reads, "search")}
	s.reads.nodesErr = "rollbot may not list the cluster's nodes: bind the ClusterRole rollbot-nodes of deploy/kubernetes/rbac.yaml"
	out["unlikely"] = judge(s.svc, s.reads, s.checks)

	s = newVerdictScene()
	s.reads.errs = seriesRead{err: "a direct scrape has no history for the window ending 09:20:00"}
	out["unknown"] = judge(s.svc, s.reads, s.checks)
	return out
}

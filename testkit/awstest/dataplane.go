package awstest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DataPlane stands in for a load balancer's data plane (TEST
// INFRASTRUCTURE, like the rest of the package): an HTTP server that sends
// every request to a target of the target group chosen by one listener's
// forward action, as stored in the fake at the moment of the request. So
// when a client switches the listener through the API (ModifyListener),
// the traffic sent to URL really moves to the other group's processes.
//
// What it models: the listener's default actions only (no rules, no
// authenticate actions); the first action by Order that is a forward or a
// fixed-response; weighted target groups, chosen by smooth weighted
// round-robin (deterministic: weights 1 and 3 give exactly 1 request in 4
// to the first group); targets of the IP target type (Target.ID is an IP
// address, Target.Port or else the group's Port the port), round-robin
// among the healthy ones, and to every registered target when none is
// healthy (ALB's fail-open). Target health is the state stored in the fake
// (AddTargetGroup, SetTargetState): the data plane does not run health
// checks itself. A target that cannot be reached answers 502, no forward
// target 503, as an ALB does.
//
// It counts requests the way the load balancer's CloudWatch metrics do,
// exposed in the Prometheus text format at MetricsURL/metrics:
// http_requests_total{code,target_group} (target_group is the group's
// name, "" for answers the load balancer made itself) and the
// http_request_duration_seconds{target_group} histogram. These are the
// default metric names of rollbot's direct scrape source.
type DataPlane struct {
	// URL is where clients send traffic, e.g. http://127.0.0.1:port.
	URL string
	// MetricsURL serves /metrics (the load balancer's own request metrics).
	MetricsURL string

	fake     *Server
	listener string
	srv      *httptest.Server
	metrics  *httptest.Server
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	mu     sync.Mutex
	credit map[string]int // smooth weighted round-robin state per group ARN
	next   map[string]int // round-robin position among a group's targets
	served map[string]int // requests forwarded, by group name
}

// DataPlane starts a data plane for listenerARN on a random loopback port.
// Close it when done.
func (s *Server) DataPlane(listenerARN string) *DataPlane {
	reg := prometheus.NewRegistry()
	d := &DataPlane{
		fake: s, listener: listenerARN,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total", Help: "Requests through the load balancer by status code and target group.",
		}, []string{"code", "target_group"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "http_request_duration_seconds", Help: "Request latency through the load balancer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"target_group"}),
		credit: map[string]int{}, next: map[string]int{}, served: map[string]int{},
	}
	reg.MustRegister(d.requests, d.duration)
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	d.URL = d.srv.URL
	d.metrics = httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	d.MetricsURL = d.metrics.URL
	return d
}

// Close stops both servers.
func (d *DataPlane) Close() {
	d.srv.Close()
	d.metrics.Close()
}

// Served returns how many requests were forwarded to each target group,
// by group name.
func (d *DataPlane) Served() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.served))
	for k, v := range d.served {
		out[k] = v
	}
	return out
}

// route is the decision for one request.
type route struct {
	group  string // group name ("" when the load balancer answers itself)
	addr   string // host:port of the chosen target
	status int    // when the load balancer answers itself
	body   string
	ctype  string
}

func (d *DataPlane) pick() route {
	s := d.fake
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.listeners[d.listener]
	if l == nil {
		return route{status: http.StatusServiceUnavailable, body: "listener not found"}
	}
	actions := slices.Clone(l.DefaultActions)
	slices.SortStableFunc(actions, func(a, b Action) int { return a.Order - b.Order })
	for _, a := range actions {
		switch a.Type {
		case "fixed-response":
			code, err := strconv.Atoi(a.FixedStatusCode)
			if err != nil {
				code = http.StatusOK
			}
			return route{status: code, body: a.FixedMessageBody, ctype: a.FixedContentType}
		case "forward":
			return d.forward(a)
		}
	}
	return route{status: http.StatusServiceUnavailable, body: "no forward action"}
}

// forward chooses a group by smooth weighted round-robin, then a target.
// The caller holds the fake's lock.
func (d *DataPlane) forward(a Action) route {
	d.mu.Lock()
	defer d.mu.Unlock()
	total, best := 0, -1
	for i, g := range a.Forward {
		if g.Weight <= 0 {
			continue
		}
		total += g.Weight
		d.credit[g.ARN] += g.Weight
		if best < 0 || d.credit[g.ARN] > d.credit[a.Forward[best].ARN] {
			best = i
		}
	}
	if best < 0 {
		return route{status: http.StatusServiceUnavailable, body: "no target group has a positive weight"}
	}
	arn := a.Forward[best].ARN
	d.credit[arn] -= total
	g := d.fake.groups[arn]
	if g == nil || len(g.Targets) == 0 {
		return route{group: tgName(g, arn), status: http.StatusServiceUnavailable, body: "no registered targets"}
	}
	var pool []Target
	for _, t := range g.Targets {
		if t.State == "healthy" {
			pool = append(pool, t)
		}
	}
	if len(pool) == 0 {
		pool = g.Targets // fail open, as ALB does when no target is healthy
	}
	t := pool[d.next[arn]%len(pool)]
	d.next[arn]++
	port := t.Port
	if port == 0 {
		port = g.Port
	}
	if net.ParseIP(t.ID) == nil {
		return route{group: g.Name, status: http.StatusBadGateway, body: fmt.Sprintf("target %s is not an IP target", t.ID)}
	}
	d.served[g.Name]++
	return route{group: g.Name, addr: net.JoinHostPort(t.ID, strconv.Itoa(port))}
}

func tgName(g *TargetGroup, arn string) string {
	if g != nil {
		return g.Name
	}
	return arn
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (d *DataPlane) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	rt := d.pick()
	if rt.addr == "" {
		if rt.ctype != "" {
			sw.Header().Set("Content-Type", rt.ctype)
		}
		sw.WriteHeader(rt.status)
		fmt.Fprintln(sw, rt.body)
	} else {
		target := &url.URL{Scheme: "http", Host: rt.addr}
		p := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.SetXForwarded()
			},
			ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
				w.WriteHeader(http.StatusBadGateway)
				fmt.Fprintf(w, "502 Bad Gateway: target %s: %v\n", rt.addr, err)
			},
		}
		p.ServeHTTP(sw, r)
	}
	if sw.code == 0 {
		sw.code = http.StatusOK
	}
	d.requests.WithLabelValues(strconv.Itoa(sw.code), rt.group).Inc()
	d.duration.WithLabelValues(rt.group).Observe(time.Since(start).Seconds())
}

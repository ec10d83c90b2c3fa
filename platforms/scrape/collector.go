package scrape

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"rollbot/platforms"
	"rollbot/state"
)

// Shared is where the replicas share scrape leases and samples; state.Store
// implements it.
type Shared interface {
	ClaimScrapes(ctx context.Context, owner string, services []string, lease time.Duration) ([]string, error)
	PushScrapes(ctx context.Context, owner string, lease time.Duration, pushes []state.ScrapePush) (lost []string, err error)
	ScrapeHistory(ctx context.Context, service string) (state.ScrapeHistory, error)
	ReleaseScrape(ctx context.Context, owner, service string) error
}

// Collector scrapes services in the background at their interval, from
// start-up, and keeps each one's samples (the last History, default one
// hour) so an assessment answers its windows from history.
//
// With Shared (several replicas on one Redis), one replica at a time
// scrapes a service: the one holding its scrape lease, which it renews
// with every push of samples (once per flush, all services in one round
// trip). Its samples go to a capped list in Redis that the other
// replicas read; when the owner stops, another replica claims the lease
// within about the lease and starts from the list, so the history
// survives (with a gap of about the lease: its first scrape has no
// earlier one to compare with). Without Shared every service is scraped
// here and the history is local.
type Collector struct {
	shared Shared
	owner  string
	lease  time.Duration
	flush  time.Duration
	log    *slog.Logger
	now    func() time.Time

	mu   sync.Mutex
	svcs map[string]*tracked
}

// CollectorOptions configure a Collector.
type CollectorOptions struct {
	// Shared and Owner (this replica's id) share the history; nil Shared:
	// local history only.
	Shared Shared
	Owner  string
	// Lease is how long a replica's scrape lease lasts without renewal
	// (default 15s); leases are renewed and claimed every Lease/3, at most
	// every 2s.
	Lease time.Duration
}

// tracked is one service the collector scrapes (when it owns it).
type tracked struct {
	name string
	a    *Adapter
	ring *ring
	max  int

	mu       sync.Mutex
	owned    bool
	loaded   bool // the ring holds the shared history (always, without Shared)
	gen      int  // bumped on every change of ownership
	prev     *snapshot
	pending  [][]byte
	layouts  map[uint32][]float64 // layouts not pushed yet
	pushed   map[uint32]bool
	failing  bool // the last scrape failed (logged once)
	lastSeen time.Time
}

// NewCollector returns a Collector; Add services, then Run it.
func NewCollector(o CollectorOptions, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Lease <= 0 {
		o.Lease = 15 * time.Second
	}
	flush := min(o.Lease/3, 2*time.Second)
	return &Collector{shared: o.Shared, owner: o.Owner, lease: o.Lease, flush: max(flush, 100*time.Millisecond),
		log: log.With("platform", "scrape", "op", "collect"), now: time.Now, svcs: map[string]*tracked{}}
}

// Add makes the collector scrape a's service in the background; a's
// measurements then come from the history.
func (c *Collector) Add(service string, a *Adapter) {
	keep := a.cfg.History
	n := int(keep/a.cfg.Interval) + 2
	t := &tracked{name: service, a: a, ring: newRing(keep, n), max: n, layouts: map[uint32][]float64{}, pushed: map[uint32]bool{}}
	if c.shared == nil {
		t.owned, t.loaded = true, true
	}
	c.mu.Lock()
	c.svcs[service] = t
	c.mu.Unlock()
	a.bg = &background{c: c, t: t}
}

// Services are the services added, sorted.
func (c *Collector) Services() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.svcs))
}

// Run scrapes until ctx ends; on the way out it gives its leases up.
func (c *Collector) Run(ctx context.Context) {
	c.mu.Lock()
	all := slices.Collect(maps.Values(c.svcs))
	c.mu.Unlock()
	if len(all) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, t := range all {
		wg.Go(func() { c.scrapeLoop(ctx, t) })
	}
	if c.shared != nil {
		c.sync(ctx, all)
		tk := time.NewTicker(c.flush)
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-tk.C:
				c.sync(ctx, all)
			}
		}
		tk.Stop()
		// Push what is pending and hand the leases over.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		c.push(fctx, all)
		for _, t := range all {
			t.mu.Lock()
			owned := t.owned
			t.mu.Unlock()
			if owned {
				if err := c.shared.ReleaseScrape(fctx, c.owner, t.name); err != nil {
					c.log.Warn("release scrape lease", "service", t.name, "err", err)
				}
			}
		}
		cancel()
	}
	wg.Wait()
}

// scrapeLoop scrapes one service every interval while this replica owns it.
func (c *Collector) scrapeLoop(ctx context.Context, t *tracked) {
	tk := time.NewTicker(t.a.cfg.Interval)
	defer tk.Stop()
	for {
		t.mu.Lock()
		ready, gen := t.owned && t.loaded, t.gen
		t.mu.Unlock()
		if ready {
			c.scrapeOnce(ctx, t, gen)
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

func (c *Collector) scrapeOnce(ctx context.Context, t *tracked, gen int) {
	snap, err := t.a.scrape(ctx, "background")
	t.mu.Lock()
	defer t.mu.Unlock()
	if ctx.Err() != nil || gen != t.gen {
		return // stopping, or the lease changed hands meanwhile
	}
	if err != nil {
		if !t.failing {
			msg, _ := platforms.UserMessage(err)
			c.log.Warn("background scrape failed; the history has a gap until it works again", "service", t.name, "problem", msg, "err", err)
		}
		t.failing = true
		return
	}
	if t.failing {
		c.log.Info("background scrape works again", "service", t.name)
		t.failing = false
	}
	s, bounds := makeSample(t.prev, snap)
	t.prev = snap
	if bounds != nil {
		t.ring.addLayout(s.layout, bounds)
		if !t.pushed[s.layout] {
			t.layouts[s.layout] = bounds
		}
	}
	enc := s.encode(nil)
	t.ring.add(enc, snap.at)
	if c.shared != nil {
		t.pending = append(t.pending, enc)
		if len(t.pending) > t.max {
			t.pending = t.pending[len(t.pending)-t.max:]
		}
	}
	t.lastSeen = snap.at
}

// sync pushes pending samples (renewing the leases held), then claims the
// leases nobody holds and loads their history.
func (c *Collector) sync(ctx context.Context, all []*tracked) {
	ctx, cancel := context.WithTimeout(ctx, max(c.flush, time.Second))
	defer cancel()
	c.push(ctx, all)
	var free []string
	byName := map[string]*tracked{}
	for _, t := range all {
		t.mu.Lock()
		if !t.owned {
			free = append(free, t.name)
			byName[t.name] = t
		}
		t.mu.Unlock()
	}
	claimed, err := c.shared.ClaimScrapes(ctx, c.owner, free, c.lease)
	if err != nil {
		if !stopping(ctx) {
			c.log.Warn("claim scrape leases", "err", err)
		}
		return
	}
	for _, name := range claimed {
		t := byName[name]
		t.mu.Lock()
		t.owned, t.loaded, t.prev, t.gen = true, false, nil, t.gen+1
		t.pending, t.pushed, t.layouts = nil, map[uint32]bool{}, map[uint32][]float64{}
		t.mu.Unlock()
		c.log.Info("scraping in the background (took the scrape lease)", "service", name)
	}
	// Load the shared history of every service owned but not loaded yet
	// (a load that failed is tried again next time).
	for _, t := range all {
		t.mu.Lock()
		need := t.owned && !t.loaded
		gen := t.gen
		t.mu.Unlock()
		if !need {
			continue
		}
		h, err := c.shared.ScrapeHistory(ctx, t.name)
		if err != nil {
			c.log.Warn("load the shared scrape history", "service", t.name, "err", err)
			continue
		}
		layouts := decodeLayouts(h.Layouts)
		t.mu.Lock()
		if t.gen == gen && t.owned {
			t.ring.reset(h.Samples, layouts, c.now())
			t.loaded = true
		}
		t.mu.Unlock()
	}
}

// push sends every owned service's pending samples in one round trip,
// renewing the leases; a lease lost stops the scraping of that service.
func (c *Collector) push(ctx context.Context, all []*tracked) {
	var pushes []state.ScrapePush
	gens := map[string]int{}
	for _, t := range all {
		t.mu.Lock()
		if t.owned {
			p := state.ScrapePush{Service: t.name, Samples: t.pending, Max: t.max, Keep: t.a.cfg.History}
			if len(t.layouts) > 0 {
				p.Layouts = map[string][]byte{}
				for id, b := range t.layouts {
					p.Layouts[state.LayoutID(id)] = encodeLayout(b)
				}
			}
			pushes = append(pushes, p)
			gens[t.name] = t.gen
		}
		t.mu.Unlock()
	}
	if len(pushes) == 0 {
		return
	}
	lost, err := c.shared.PushScrapes(ctx, c.owner, c.lease, pushes)
	if err != nil {
		// Keep the samples for the next push; the lease may run out
		// meanwhile, then the push says so.
		if !stopping(ctx) {
			c.log.Warn("push scrape samples", "err", err)
		}
		return
	}
	for _, p := range pushes {
		t := c.svcs[p.Service]
		t.mu.Lock()
		if t.gen == gens[p.Service] {
			t.pending = t.pending[min(len(p.Samples), len(t.pending)):]
			for id := range p.Layouts {
				n, _ := strconv.ParseUint(id, 10, 32)
				t.pushed[uint32(n)] = true
				delete(t.layouts, uint32(n))
			}
			if slices.Contains(lost, p.Service) {
				t.owned, t.loaded, t.prev, t.pending, t.gen = false, false, nil, nil, t.gen+1
				t.ring.reset(nil, nil, c.now()) // the shared list is the history now
				c.log.Info("another replica scrapes it now (lost the scrape lease)", "service", p.Service)
			}
		}
		t.mu.Unlock()
	}
}

// stopping reports whether ctx ended because the collector stops; a
// round trip that ran out of its own time (a slow Redis) is logged, since
// a lease that keeps missing its renewal loses the history.
func stopping(ctx context.Context) bool { return errors.Is(context.Cause(ctx), context.Canceled) }

func decodeLayouts(m map[string][]byte) map[uint32][]float64 {
	out := make(map[uint32][]float64, len(m))
	for k, v := range m {
		id, err := strconv.ParseUint(k, 10, 32)
		if err != nil {
			continue
		}
		if b, ok := decodeLayout(v); ok {
			out[uint32(id)] = b
		}
	}
	return out
}

// background is an Adapter's link to its collector.
type background struct {
	c *Collector
	t *tracked
}

// history returns the service's samples: the local ring while this
// replica scrapes it (and has its history), else the shared list.
func (b *background) history(ctx context.Context) (history, error) {
	t := b.t
	t.mu.Lock()
	local := t.owned && t.loaded
	t.mu.Unlock()
	if local || b.c.shared == nil {
		return t.ring.copyOut()
	}
	h, err := b.c.shared.ScrapeHistory(ctx, t.name)
	if err != nil {
		return history{}, err
	}
	out := history{samples: h.Samples, layouts: decodeLayouts(h.Layouts)}
	slices.SortStableFunc(out.samples, bySampleTime)
	return out, nil
}

func bySampleTime(a, b []byte) int { return cmp.Compare(sampleAt(a), sampleAt(b)) }

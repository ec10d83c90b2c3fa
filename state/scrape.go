package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scrape history shared by the replicas (platforms/scrape): one
// replica at a time scrapes a service (it holds the service's scrape
// lease), and pushes its samples to a capped list that every replica reads
// and that a replica taking the lease over starts from. Samples and bucket
// layouts are opaque bytes here.
//
//	{p}:scrape:<service>          list of samples, oldest first, capped
//	{p}:scrape:<service>:layouts  hash layout id -> bucket bounds
//	{p}:scrape:<service>:owner    the scraping replica's id, with expiry (the lease)

// ScrapePush is what the owner of a service's scrape lease sends in one
// flush: the samples taken since the last one, and the bucket layouts
// they use.
type ScrapePush struct {
	Service string
	Samples [][]byte
	// Max is how many samples the list keeps; Keep how long the keys
	// live without pushes (the history horizon).
	Max  int
	Keep time.Duration
	// Layouts are bucket layouts by id, written with the samples.
	Layouts map[string][]byte
}

// ScrapeHistory is a service's shared scrape history.
type ScrapeHistory struct {
	Owner   string // the replica holding the lease, "" if none
	Samples [][]byte
	Layouts map[string][]byte
}

// pushScript appends samples only while the caller holds the lease, and
// renews the lease in the same step. It returns 0 when the lease is
// someone else's (or gone): the caller stops scraping the service.
var pushScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) ~= ARGV[1] then return 0 end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
local nl = tonumber(ARGV[5])
local i = 6
for _ = 1, nl do
  redis.call("HSET", KEYS[3], ARGV[i], ARGV[i+1])
  i = i + 2
end
if i <= #ARGV then
  redis.call("RPUSH", KEYS[2], unpack(ARGV, i))
  redis.call("LTRIM", KEYS[2], -tonumber(ARGV[3]), -1)
end
redis.call("PEXPIRE", KEYS[2], ARGV[4])
redis.call("PEXPIRE", KEYS[3], ARGV[4])
return 1`)

func (s *Store) scrapeKeys(service string) (owner, list, layouts string) {
	return s.key("scrape", service, "owner"), s.key("scrape", service), s.key("scrape", service, "layouts")
}

// ClaimScrapes takes the scrape lease of every service in services that
// nobody holds, for owner, in one round trip. It returns the services
// claimed.
func (s *Store) ClaimScrapes(ctx context.Context, owner string, services []string, lease time.Duration) ([]string, error) {
	if len(services) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.BoolCmd, len(services))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, svc := range services {
			k, _, _ := s.scrapeKeys(svc)
			cmds[i] = p.SetNX(ctx, k, owner, lease)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("claim scrape leases: %w", err)
	}
	var out []string
	for i, c := range cmds {
		if c.Val() {
			out = append(out, services[i])
		}
	}
	return out, nil
}

// PushScrapes appends each push's samples and renews owner's lease of
// its service, all in one round trip (a push without samples only renews
// the lease). It returns the services whose lease owner no longer holds.
func (s *Store) PushScrapes(ctx context.Context, owner string, lease time.Duration, pushes []ScrapePush) (lost []string, err error) {
	if len(pushes) == 0 {
		return nil, nil
	}
	// The pipeline sends the script's hash only; the first push after a
	// Redis restart or failover loads the script and tries again. The
	// samples are not decisions, so unlike the incident writes they do
	// not wait for a replica (a failover may lose the last few).
	cmds, err := s.pushScrapes(ctx, owner, lease, pushes)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err := pushScript.Load(ctx, s.rdb).Err(); err != nil {
			return nil, fmt.Errorf("push scrape samples: %w", err)
		}
		cmds, err = s.pushScrapes(ctx, owner, lease, pushes)
	}
	if err != nil {
		return nil, fmt.Errorf("push scrape samples: %w", err)
	}
	for i, c := range cmds {
		if n, _ := c.Int(); n == 0 {
			lost = append(lost, pushes[i].Service)
		}
	}
	return lost, nil
}

func (s *Store) pushScrapes(ctx context.Context, owner string, lease time.Duration, pushes []ScrapePush) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(pushes))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, ps := range pushes {
			ko, kl, kh := s.scrapeKeys(ps.Service)
			args := []any{owner, lease.Milliseconds(), max(ps.Max, 1), max(ps.Keep.Milliseconds(), 1), len(ps.Layouts)}
			for id, b := range ps.Layouts {
				args = append(args, id, b)
			}
			for _, smp := range ps.Samples {
				args = append(args, smp)
			}
			cmds[i] = pushScript.EvalSha(ctx, p, []string{ko, kl, kh}, args...)
		}
		return nil
	})
	return cmds, err
}

// ScrapeHistory reads a service's shared scrape history in one round trip.
func (s *Store) ScrapeHistory(ctx context.Context, service string) (ScrapeHistory, error) {
	ko, kl, kh := s.scrapeKeys(service)
	var (
		owner   *redis.StringCmd
		samples *redis.StringSliceCmd
		layouts *redis.MapStringStringCmd
	)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		owner = p.Get(ctx, ko)
		samples = p.LRange(ctx, kl, 0, -1)
		layouts = p.HGetAll(ctx, kh)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return ScrapeHistory{}, fmt.Errorf("read scrape history of %s: %w", service, err)
	}
	h := ScrapeHistory{Owner: owner.Val(), Layouts: map[string][]byte{}}
	for _, v := range samples.Val() {
		h.Samples = append(h.Samples, []byte(v))
	}
	for k, v := range layouts.Val() {
		h.Layouts[k] = []byte(v)
	}
	return h, nil
}

// ReleaseScrape gives owner's scrape lease of service up (on shutdown), so
// another replica takes it at its next claim instead of after the lease.
func (s *Store) ReleaseScrape(ctx context.Context, owner, service string) error {
	ko, _, _ := s.scrapeKeys(service)
	if err := releaseScrapeScript.Run(ctx, s.rdb, []string{ko}, owner).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("release scrape lease of %s: %w", service, err)
	}
	return nil
}

var releaseScrapeScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0`)

// LayoutID renders a layout id the way the shared history stores it.
func LayoutID(id uint32) string { return strconv.FormatUint(uint64(id), 10) }

package slackemu

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Slack's published Web API rate-limit tiers, per method and workspace
// (https://api.slack.com/apis/rate-limits): Tier 1 allows about 1 call a
// minute, Tier 2 20, Tier 3 50, Tier 4 100, each with short bursts.
// chat.postMessage is special: about one message per second per channel,
// with short bursts. Options.SlackRateLimits turns them on; the bursts
// are the emulator's reading of "short bursts", documented here so a
// client can be tested against them.
const (
	tier1 = 1
	tier2 = 20
	tier3 = 50
	tier4 = 100
)

// methodTiers maps a method to its calls per minute. Methods not listed
// are not limited.
var methodTiers = map[string]int{
	"apps.connections.open":       tier1,
	"auth.test":                   tier4,
	"chat.postEphemeral":          tier4,
	"chat.update":                 tier3,
	"chat.delete":                 tier3,
	"chat.scheduleMessage":        tier3,
	"chat.deleteScheduledMessage": tier3,
	"chat.getPermalink":           tier4,
	"conversations.info":          tier3,
	"conversations.history":       tier3,
	"conversations.replies":       tier3,
	"conversations.members":       tier4,
	"users.info":                  tier4,
	"users.list":                  tier2,
	"usergroups.list":             tier2,
	"usergroups.users.list":       tier2,
	"reactions.add":               tier3,
	"views.open":                  tier4,
	"views.update":                tier4,
	"views.push":                  tier4,
}

// Bursts: a Tier n method may make a fifth of its minute at once;
// chat.postMessage five messages in a channel at once, then one a second.
const (
	postPerSecond = 1
	postBurst     = 5
)

type rateLimits struct {
	mu      sync.Mutex
	methods map[string]*rate.Limiter
	posts   map[string]*rate.Limiter // per channel
	limited map[string]int           // 429s answered, by method
}

// allow reports whether a call of method (in channel, for
// chat.postMessage) is within its tier now; if not, how long to wait.
func (r *rateLimits) allow(method, channel string, now time.Time) (bool, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var l *rate.Limiter
	if method == "chat.postMessage" {
		if r.posts == nil {
			r.posts = map[string]*rate.Limiter{}
		}
		if l = r.posts[channel]; l == nil {
			l = rate.NewLimiter(postPerSecond, postBurst)
			r.posts[channel] = l
		}
	} else {
		perMin, ok := methodTiers[method]
		if !ok {
			return true, 0
		}
		if r.methods == nil {
			r.methods = map[string]*rate.Limiter{}
		}
		if l = r.methods[method]; l == nil {
			l = rate.NewLimiter(rate.Limit(float64(perMin)/60), max(1, perMin/5))
			r.methods[method] = l
		}
	}
	res := l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		if r.limited == nil {
			r.limited = map[string]int{}
		}
		r.limited[method]++
		return false, time.Duration(math.Ceil(d.Seconds())) * time.Second
	}
	return true, 0
}

// RateLimited returns how many calls the emulator answered with 429
// because of Slack's tiers (Options.SlackRateLimits), by method.
func (s *Server) RateLimited() map[string]int {
	s.rl.mu.Lock()
	defer s.rl.mu.Unlock()
	out := make(map[string]int, len(s.rl.limited))
	for k, v := range s.rl.limited {
		out[k] = v
	}
	return out
}

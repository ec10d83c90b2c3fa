package bot

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"golang.org/x/time/rate"

	"rollbot/handlers"
)

// slackChat is handlers.Chat over the Slack Web API. Rate-limited calls
// (HTTP 429) are retried after Slack's Retry-After, a few times. Every
// try is counted in metrics by method (calls, errors, 429s).
type slackChat struct {
	api     *slack.Client
	metrics *Metrics
	log     *slog.Logger // nil: no log
	pace    pacer
}

// call runs one Web API method through retry, counting each try. Each try
// first waits for the method's turn under Slack's rate-limit tier (see
// pacer), so many incidents at once queue here instead of drawing 429s.
func (c *slackChat) call(ctx context.Context, method, channel string, f func() error) error {
	return retry(ctx, func() error {
		start := time.Now()
		err := c.pace.wait(ctx, method, channel)
		c.paced(ctx, method, channel, time.Since(start), err)
		if err != nil {
			return err
		}
		err = f()
		c.metrics.slackCall(method, err)
		return err
	})
}

// paced records a wait for a method's turn: its length by method in the
// metrics, and in the debug log with the channel and the outcome (a wait
// cut short by its context names the context's cause), so a message
// that is late can be told apart from one that queued behind others.
func (c *slackChat) paced(ctx context.Context, method, channel string, d time.Duration, err error) {
	if errors.Is(err, handlers.ErrPaced) {
		return // a live update refused at once; it did not wait
	}
	c.metrics.slackPace(method, d)
	if c.log == nil || (d < time.Second && err == nil) {
		return
	}
	args := []any{"op", method, "channel", channel, "waited", d.Round(time.Millisecond)}
	if err != nil {
		args = append(args, "err", err, "cause", context.Cause(ctx))
	}
	c.log.Debug("slack call paced", args...)
}

// Slack's published rate-limit tiers, calls per minute per workspace, for
// the methods rollbot calls often; chat.postMessage is about one message
// per second per channel with short bursts. views.open is not paced (its
// trigger_id lapses in 3 s), nor chat.postEphemeral (Tier 4: a burst of
// refusals waits out a 429's Retry-After instead of queueing every
// incident's messages behind it).
var paceTiers = map[string]int{
	"chat.update":           50, // Tier 3
	"chat.scheduleMessage":  50, // Tier 3
	"usergroups.users.list": 20, // Tier 2
}

// postBurst is how many messages rollbot posts in one channel at once
// before pacing to one a second: Slack allows "short bursts"; an incident's
// first messages (assessment, progress, checklist) go out without delay.
const postBurst = 4

// pacer keeps rollbot a little under Slack's tiers: 90 % of each rate and
// one call less than a fifth of the minute at once (Slack allows "short
// bursts"; a request that arrives earlier than it was sent relative to the
// previous one must still fit). The zero value is ready to use.
type pacer struct {
	mu      sync.Mutex
	methods map[string]*rate.Limiter
	posts   map[string]*rate.Limiter // chat.postMessage, per channel
}

func (p *pacer) limiter(method, channel string) *rate.Limiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	if method == "chat.postMessage" {
		if p.posts == nil {
			p.posts = map[string]*rate.Limiter{}
		}
		l := p.posts[channel]
		if l == nil {
			l = rate.NewLimiter(0.9, postBurst)
			p.posts[channel] = l
		}
		return l
	}
	perMin, ok := paceTiers[method]
	if !ok {
		return nil
	}
	if p.methods == nil {
		p.methods = map[string]*rate.Limiter{}
	}
	l := p.methods[method]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(0.9*float64(perMin)/60), max(1, perMin/5-1))
		p.methods[method] = l
	}
	return l
}

// wait blocks until method may be called, or ctx ends. An intermediate
// live update (handlers.IsLiveUpdate) does not queue: without room now it
// is refused with handlers.ErrPaced, so that queued live progress never
// holds up a message that changes what people can do.
func (p *pacer) wait(ctx context.Context, method, channel string) error {
	l := p.limiter(method, channel)
	if l == nil {
		return nil
	}
	if handlers.IsLiveUpdate(ctx) {
		if !l.Allow() {
			return handlers.ErrPaced
		}
		return nil
	}
	return l.Wait(ctx)
}

func msgOptions(m handlers.Msg) []slack.MsgOption {
	opts := []slack.MsgOption{slack.MsgOptionText(m.Text, false)}
	if len(m.Blocks) > 0 {
		opts = append(opts, slack.MsgOptionBlocks(m.Blocks...))
	}
	return opts
}

// retry runs f, waiting out Slack rate limits (at most 3 tries).
func retry(ctx context.Context, f func() error) error {
	var err error
	for range 3 {
		err = f()
		var rl *slack.RateLimitedError
		if !errors.As(err, &rl) {
			return err
		}
		t := time.NewTimer(rl.RetryAfter)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return err
}

func (c *slackChat) Post(ctx context.Context, channel, thread string, m handlers.Msg) (string, error) {
	opts := msgOptions(m)
	if thread != "" {
		opts = append(opts, slack.MsgOptionTS(thread))
	}
	var ts string
	err := c.call(ctx, "chat.postMessage", channel, func() error {
		var err error
		_, ts, err = c.api.PostMessageContext(ctx, channel, opts...)
		return err
	})
	return ts, err
}

func (c *slackChat) Update(ctx context.Context, channel, ts string, m handlers.Msg) error {
	return c.call(ctx, "chat.update", channel, func() error {
		_, _, _, err := c.api.UpdateMessageContext(ctx, channel, ts, msgOptions(m)...)
		return err
	})
}

func (c *slackChat) Ephemeral(ctx context.Context, channel, user string, m handlers.Msg) error {
	return c.call(ctx, "chat.postEphemeral", channel, func() error {
		_, err := c.api.PostEphemeralContext(ctx, channel, user, msgOptions(m)...)
		return err
	})
}

func (c *slackChat) Schedule(ctx context.Context, channel string, at time.Time, m handlers.Msg) error {
	return c.call(ctx, "chat.scheduleMessage", channel, func() error {
		_, _, err := c.api.ScheduleMessageContext(ctx, channel, strconv.FormatInt(at.Unix(), 10), msgOptions(m)...)
		return err
	})
}

func (c *slackChat) OpenModal(ctx context.Context, triggerID string, v slack.ModalViewRequest) error {
	return c.call(ctx, "views.open", "", func() error {
		_, err := c.api.OpenViewContext(ctx, triggerID, v)
		return err
	})
}

func (c *slackChat) GroupMembers(ctx context.Context, group string) ([]string, error) {
	var out []string
	err := c.call(ctx, "usergroups.users.list", "", func() error {
		var err error
		out, err = c.api.GetUserGroupMembersContext(ctx, group)
		return err
	})
	return out, err
}

// Upload shares a file into a thread with Slack's upload flow:
// files.getUploadURLExternal, the POST of the content to the URL it
// returns, files.completeUploadExternal with the channel and thread.
func (c *slackChat) Upload(ctx context.Context, channel, thread string, f handlers.File) error {
	return c.call(ctx, "files.upload", channel, func() error {
		_, err := c.api.UploadFileContext(ctx, slack.UploadFileParameters{
			Reader: bytes.NewReader(f.Content), FileSize: len(f.Content), Filename: f.Name, Title: f.Title,
			InitialComment: f.Comment, Channel: channel, ThreadTimestamp: thread,
		})
		return err
	})
}

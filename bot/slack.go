package bot

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/slack-go/slack"

	"rollbot/handlers"
)

// slackChat is handlers.Chat over the Slack Web API. Rate-limited calls
// (HTTP 429) are retried after Slack's Retry-After, a few times. Every
// try is counted in metrics by method (calls, errors, 429s).
type slackChat struct {
	api     *slack.Client
	metrics *Metrics
}

// call runs one Web API method through retry, counting each try.
func (c *slackChat) call(ctx context.Context, method string, f func() error) error {
	return retry(ctx, func() error {
		err := f()
		c.metrics.slackCall(method, err)
		return err
	})
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
	err := c.call(ctx, "chat.postMessage", func() error {
		var err error
		_, ts, err = c.api.PostMessageContext(ctx, channel, opts...)
		return err
	})
	return ts, err
}

func (c *slackChat) Update(ctx context.Context, channel, ts string, m handlers.Msg) error {
	return c.call(ctx, "chat.update", func() error {
		_, _, _, err := c.api.UpdateMessageContext(ctx, channel, ts, msgOptions(m)...)
		return err
	})
}

func (c *slackChat) Ephemeral(ctx context.Context, channel, user string, m handlers.Msg) error {
	return c.call(ctx, "chat.postEphemeral", func() error {
		_, err := c.api.PostEphemeralContext(ctx, channel, user, msgOptions(m)...)
		return err
	})
}

func (c *slackChat) Schedule(ctx context.Context, channel string, at time.Time, m handlers.Msg) error {
	return c.call(ctx, "chat.scheduleMessage", func() error {
		_, _, err := c.api.ScheduleMessageContext(ctx, channel, strconv.FormatInt(at.Unix(), 10), msgOptions(m)...)
		return err
	})
}

func (c *slackChat) OpenModal(ctx context.Context, triggerID string, v slack.ModalViewRequest) error {
	return c.call(ctx, "views.open", func() error {
		_, err := c.api.OpenViewContext(ctx, triggerID, v)
		return err
	})
}

func (c *slackChat) GroupMembers(ctx context.Context, group string) ([]string, error) {
	var out []string
	err := c.call(ctx, "usergroups.users.list", func() error {
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
	return c.call(ctx, "files.upload", func() error {
		_, err := c.api.UploadFileContext(ctx, slack.UploadFileParameters{
			Reader: bytes.NewReader(f.Content), FileSize: len(f.Content), Filename: f.Name, Title: f.Title,
			InitialComment: f.Comment, Channel: channel, ThreadTimestamp: thread,
		})
		return err
	})
}

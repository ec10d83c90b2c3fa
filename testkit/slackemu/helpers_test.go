package slackemu

import (
	"context"
	"io"
	"log"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// newServer starts an emulator for one test.
func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close emulator: %v", err)
		}
	})
	return s
}

// apiClient is a real slack-go Web API client pointed at s.
func apiClient(s *Server, token string, opts ...slack.Option) *slack.Client {
	opts = append([]slack.Option{slack.OptionAPIURL(s.APIURL()), slack.OptionAppLevelToken(AppToken)}, opts...)
	return slack.New(token, opts...)
}

// testBot runs a real slack-go socketmode client against s and hands every
// Slack request (slash command, interaction, event) to handle, in order.
type testBot struct {
	api *slack.Client
	sm  *socketmode.Client
}

func startBot(t *testing.T, s *Server, handle func(b *testBot, evt socketmode.Event)) *testBot {
	t.Helper()
	api := apiClient(s, BotToken)
	sm := socketmode.New(api, socketmode.OptionLog(log.New(io.Discard, "", 0)))
	b := &testBot{api: api, sm: sm}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = sm.RunContext(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case evt := <-sm.Events:
				switch evt.Type {
				case socketmode.EventTypeSlashCommand, socketmode.EventTypeInteractive, socketmode.EventTypeEventsAPI:
					handle(b, evt)
				}
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return b
}

// ctxFor returns a context that ends with the test or after d.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// txt is a plain_text object with emoji on (Slack shows :codes: literally
// in plain_text with "emoji": false).
func txt(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, s, true, false)
}
func md(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
}

package handlers

import (
	"context"
	"sync"
	"time"
)

// liveMessage keeps one Slack message up to date with the latest content,
// sending at most one chat.update per interval (Slack allows about one
// update per second per message) and always the last content on Close.
type liveMessage struct {
	chat     Chat
	channel  string
	ts       string
	interval time.Duration

	mu      sync.Mutex
	pending *Msg
	wake    chan struct{}
	done    chan struct{}
	onErr   func(error)
}

func newLiveMessage(ctx context.Context, chat Chat, channel, ts string, interval time.Duration, onErr func(error)) *liveMessage {
	l := &liveMessage{chat: chat, channel: channel, ts: ts, interval: interval,
		wake: make(chan struct{}, 1), done: make(chan struct{}), onErr: onErr}
	go l.loop(ctx)
	return l
}

// Set replaces the content to show; it never blocks on Slack.
func (l *liveMessage) Set(m Msg) {
	l.mu.Lock()
	l.pending = &m
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *liveMessage) take() *Msg {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.pending
	l.pending = nil
	return m
}

func (l *liveMessage) send(ctx context.Context, m *Msg) {
	if m == nil || l.ts == "" {
		return
	}
	if err := l.chat.Update(ctx, l.channel, l.ts, *m); err != nil && l.onErr != nil {
		l.onErr(err)
	}
}

func (l *liveMessage) loop(ctx context.Context) {
	defer close(l.done)
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-l.wake:
			if !ok {
				l.send(context.WithoutCancel(ctx), l.take())
				return
			}
			if wait := l.interval - time.Since(last); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
			}
			l.send(ctx, l.take())
			last = time.Now()
		}
	}
}

// Close sends the final content (if any is pending) and stops.
func (l *liveMessage) Close(final Msg) {
	l.Set(final)
	close(l.wake)
	<-l.done
}

package handlers

import (
	"context"
	"errors"
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

	// finalBudget bounds the final update: it outlives the step's
	// context (the outcome must be shown after the step ends), but never
	// waits forever for a Slack that does not answer.
	finalBudget time.Duration

	mu      sync.Mutex
	pending *Msg
	wake    chan struct{}
	done    chan struct{}
	onErr   func(error)
}

// finalUpdateBudget is long enough for a chat.update that waits its turn
// under Slack's tier with many incidents at once (seconds), short enough
// that a hung Slack cannot hold a step's end.
const finalUpdateBudget = time.Minute

func newLiveMessage(ctx context.Context, chat Chat, channel, ts string, interval time.Duration, onErr func(error)) *liveMessage {
	l := &liveMessage{chat: chat, channel: channel, ts: ts, interval: interval, finalBudget: finalUpdateBudget,
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

// send shows m. An intermediate update (final false) is marked as such
// (LiveUpdate): when Slack's rate limit leaves no room right now, the Chat
// may refuse it with ErrPaced instead of queueing it, so that live
// progress never holds up a message that changes what people can do (a
// decision, a button). send then keeps m to retry.
func (l *liveMessage) send(ctx context.Context, m *Msg, final bool) (paced bool) {
	if m == nil || l.ts == "" {
		return false
	}
	if !final {
		ctx = LiveUpdate(ctx)
	}
	err := l.chat.Update(ctx, l.channel, l.ts, *m)
	if errors.Is(err, ErrPaced) {
		l.mu.Lock()
		if l.pending == nil {
			l.pending = m
		}
		l.mu.Unlock()
		return true
	}
	if err != nil && l.onErr != nil {
		l.onErr(err)
	}
	return false
}

func (l *liveMessage) loop(ctx context.Context) {
	defer close(l.done)
	var last time.Time
	paced := false
	for {
		if !paced {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-l.wake:
				if !ok {
					l.sendFinal(ctx)
					return
				}
			}
		}
		// At most one update per interval; a paced one is tried again
		// after the interval. Close (wake closed) sends the final content
		// at once.
		if wait := l.interval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
		waiting:
			for {
				select {
				case <-t.C:
					break waiting
				case _, ok := <-l.wake:
					if !ok {
						t.Stop()
						l.sendFinal(ctx)
						return
					}
				case <-ctx.Done():
					t.Stop()
					return
				}
			}
		}
		paced = l.send(ctx, l.take(), false)
		last = time.Now()
	}
}

// sendFinal sends the final content on a context of its own, bounded by
// finalBudget.
func (l *liveMessage) sendFinal(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.finalBudget)
	defer cancel()
	l.send(fctx, l.take(), true)
}

// liveKey marks the context of an intermediate live update.
type liveKey struct{}

// LiveUpdate marks ctx as carrying an intermediate update of a live
// message: a Chat may refuse it with ErrPaced rather than wait for room
// under Slack's rate limits (the next update replaces it anyway).
func LiveUpdate(ctx context.Context) context.Context { return context.WithValue(ctx, liveKey{}, true) }

// IsLiveUpdate reports whether ctx carries an intermediate live update.
func IsLiveUpdate(ctx context.Context) bool { v, _ := ctx.Value(liveKey{}).(bool); return v }

// ErrPaced is a live update a Chat did not send, to stay under Slack's
// rate limits; the live message sends its latest content later.
var ErrPaced = errors.New("live update deferred under Slack's rate limit")

// Close sends the final content (if any is pending) and stops.
func (l *liveMessage) Close(final Msg) {
	l.Set(final)
	close(l.wake)
	<-l.done
}

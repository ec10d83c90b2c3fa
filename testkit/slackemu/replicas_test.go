package slackemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"

	"rollbot/testkit/wait"
)

// replica is one real slack-go Socket Mode client of the app, as one
// replica of a bot runs it: it records the requests it got and every
// connection-level event.
type replica struct {
	sm   *socketmode.Client
	rec  *recorder
	stop func()

	mu        sync.Mutex
	connErrs  []error
	connected int
}

func (r *replica) connectionErrors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.connErrs...)
}

func (r *replica) connects() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.connected
}

// startReplica runs a client; ack says whether to ack a request.
func startReplica(t *testing.T, s *Server, ack func(req socketmode.Request) bool) *replica {
	t.Helper()
	sm := socketmode.New(apiClient(s, BotToken), socketmode.OptionLog(log.New(io.Discard, "", 0)))
	r := &replica{sm: sm, rec: &recorder{}}
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
					r.rec.add(evt)
					if ack(*evt.Request) {
						_ = sm.Ack(*evt.Request)
					}
				case socketmode.EventTypeConnectionError:
					if ce, ok := evt.Data.(*slack.ConnectionErrorEvent); ok {
						r.mu.Lock()
						r.connErrs = append(r.connErrs, ce.ErrorObj)
						r.mu.Unlock()
					}
				case socketmode.EventTypeConnected:
					r.mu.Lock()
					r.connected++
					r.mu.Unlock()
				}
			}
		}
	})
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
	t.Cleanup(r.stop)
	return r
}

func always(socketmode.Request) bool { return true }

// startReplicas starts n acking clients and waits until all are connected.
func startReplicas(t *testing.T, s *Server, n int, ack func(socketmode.Request) bool) []*replica {
	t.Helper()
	rs := make([]*replica, n)
	for i := range rs {
		rs[i] = startReplica(t, s, ack)
	}
	if err := s.WaitConnected(ctxFor(t, 20*time.Second), n); err != nil {
		t.Fatal(err)
	}
	return rs
}

// who returns the index of the replica whose recorder holds envelope id,
// or -1.
func who(rs []*replica, envelopeID string) int {
	for i, r := range rs {
		for _, e := range r.rec.events() {
			if e.Request.EnvelopeID == envelopeID {
				return i
			}
		}
	}
	return -1
}

func TestReplicasOneOfDelivery(t *testing.T) {
	s := newServer(t, Options{})
	rs := startReplicas(t, s, 3, always)
	ctx := ctxFor(t, 30*time.Second)
	for range 9 {
		if err := s.SlashCommand(ctx, UserBob, ChannelIncident, "/rollback", "svc"); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	for i, r := range rs {
		if n := r.rec.len(); n != 3 {
			t.Errorf("replica %d got %d envelopes, want 3", i, n)
		}
		for _, e := range r.rec.events() {
			seen[e.Data.(slack.SlashCommand).TriggerID]++
		}
	}
	if len(seen) != 9 {
		t.Errorf("distinct commands received = %d, want 9", len(seen))
	}
	for trig, n := range seen {
		if n != 1 {
			t.Errorf("command %s delivered %d times, want once", trig, n)
		}
	}
	ds := s.Deliveries()
	if len(ds) != 9 {
		t.Fatalf("deliveries = %d, want 9: %+v", len(ds), ds)
	}
	for _, d := range ds {
		if !d.Acked || d.Lost || d.RetryAttempt != 0 {
			t.Errorf("delivery %+v", d)
		}
	}
}

func TestReplicasRedeliveryToAnotherConnection(t *testing.T) {
	s := newServer(t, Options{AckTimeout: 300 * time.Millisecond})
	// Only redeliveries are acked: the first copy times out.
	rs := startReplicas(t, s, 2, func(req socketmode.Request) bool { return req.RetryAttempt >= 1 })
	ctx := ctxFor(t, 30*time.Second)
	for round := range 4 {
		before := len(s.Deliveries())
		if err := s.SendEvent(ctx, map[string]any{"type": "app_mention", "user": UserBob, "text": "<@U0ROLLBOT> status", "channel": ChannelIncident}); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		ds := s.Deliveries()[before:]
		if len(ds) != 2 {
			t.Fatalf("round %d: deliveries %+v, want 2", round, ds)
		}
		first, retry := ds[0], ds[1]
		if first.Acked || first.RetryAttempt != 0 || !retry.Acked || retry.RetryAttempt != 1 || retry.RetryReason != "timeout" {
			t.Errorf("round %d: first %+v, redelivery %+v", round, first, retry)
		}
		if first.Conn == retry.Conn || first.EnvelopeID == retry.EnvelopeID {
			t.Errorf("round %d: redelivered on the same connection or envelope: %+v / %+v", round, first, retry)
		}
		a, b := who(rs, first.EnvelopeID), who(rs, retry.EnvelopeID)
		if a < 0 || b < 0 || a == b {
			t.Fatalf("round %d: first copy at replica %d, redelivery at replica %d", round, a, b)
		}
		// The client saw the retry fields and the same event.
		var ids []string
		for _, r := range rs {
			for _, e := range r.rec.events() {
				if e.Request.EnvelopeID == retry.EnvelopeID && (e.Request.RetryAttempt != 1 || e.Request.RetryReason != "timeout") {
					t.Errorf("round %d: client read retry fields %d %q", round, e.Request.RetryAttempt, e.Request.RetryReason)
				}
				if e.Request.EnvelopeID == first.EnvelopeID || e.Request.EnvelopeID == retry.EnvelopeID {
					ids = append(ids, e.Data.(slackevents.EventsAPIEvent).Data.(*slackevents.EventsAPICallbackEvent).EventID)
				}
			}
		}
		if len(ids) != 2 || ids[0] != ids[1] || ids[0] == "" {
			t.Errorf("round %d: event ids %v, want the same event twice", round, ids)
		}
	}

	// Never acked by anyone: each attempt goes to another connection than
	// the one before, retry_attempt 1, 2, 3, then ErrNotAcked.
	s2 := newServer(t, Options{AckTimeout: 150 * time.Millisecond})
	startReplicas(t, s2, 3, func(socketmode.Request) bool { return false })
	if err := s2.SendEvent(ctx, map[string]any{"type": "app_mention", "user": UserBob, "text": "<@U0ROLLBOT>", "channel": ChannelGeneral}); !errors.Is(err, ErrNotAcked) {
		t.Fatalf("unacked event: %v", err)
	}
	ds := s2.Deliveries()
	if len(ds) != 4 {
		t.Fatalf("deliveries %+v, want 4", ds)
	}
	for i, d := range ds {
		if d.RetryAttempt != i || d.Acked {
			t.Errorf("attempt %d: %+v", i, d)
		}
		if i > 0 && d.Conn == ds[i-1].Conn {
			t.Errorf("attempt %d on connection %d again", i, d.Conn)
		}
	}
}

func TestReplicasDropMidFlow(t *testing.T) {
	s := newServer(t, Options{})
	rs := startReplicas(t, s, 2, always)
	ctx := ctxFor(t, 30*time.Second)
	kinds := []struct {
		name string
		send func() error
	}{
		{"slash command", func() error { return s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "checkout") }},
		{"event", func() error {
			return s.SendEvent(ctx, map[string]any{"type": "app_mention", "user": UserBob, "text": "<@U0ROLLBOT> status", "channel": ChannelIncident})
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			if err := s.WaitConnected(ctx, 2); err != nil {
				t.Fatal(err)
			}
			ids := s.ConnectionIDs()
			if len(ids) != 2 {
				t.Fatalf("connections %v", ids)
			}
			victim := ids[1]
			before := len(s.Deliveries())
			s.DropAfterNextEnvelope(victim)
			if err := k.send(); err != nil {
				t.Fatalf("%s with its connection dropped mid-flow: %v", k.name, err)
			}
			ds := s.Deliveries()[before:]
			if len(ds) != 2 {
				t.Fatalf("deliveries %+v, want 2", ds)
			}
			lost, again := ds[0], ds[1]
			// (slack-go queues the ack and may send it late, on its new
			// connection: Acked may be true, Lost must be.)
			if lost.Conn != victim || !lost.Lost {
				t.Errorf("first copy %+v, want lost on connection %d", lost, victim)
			}
			// The redelivery goes to a live connection: the other replica's,
			// or the dropped client's new one if it reconnected first (CI
			// saw that): never the lost connection.
			if again.Conn == victim || !again.Acked || again.Lost || again.RetryAttempt != 1 || again.EnvelopeID == lost.EnvelopeID {
				t.Errorf("redelivery %+v, want acked on a connection other than %d with retry_attempt 1", again, victim)
			}
			if r := who(rs, again.EnvelopeID); r < 0 {
				t.Errorf("no client read the redelivery %s", again.EnvelopeID)
			}
			if slices.Contains(s.ConnectionIDs(), victim) {
				t.Errorf("connection %d still open", victim)
			}
		})
	}
	// The dropped clients reconnect with new connection IDs.
	if err := s.WaitConnected(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if n := s.ConnectionsAccepted(); n != 4 {
		t.Errorf("connections accepted = %d, want 4 (two initial, two reconnects)", n)
	}
}

func TestReplicasDuplicateToTwoConnections(t *testing.T) {
	s := newServer(t, Options{})
	rs := startReplicas(t, s, 3, always)
	ctx := ctxFor(t, 30*time.Second)
	s.DuplicateEnvelopes(true)
	for range 4 {
		if err := s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "checkout"); err != nil {
			t.Fatal(err)
		}
	}
	// Both copies are on the wire before the sender returns; wait until
	// the clients have read them.
	wait.For(t, 10*time.Second, "the clients to read 8 copies", func() (bool, error) {
		n := rs[0].rec.len() + rs[1].rec.len() + rs[2].rec.len()
		return n >= 8, fmt.Errorf("clients read %d copies", n)
	})
	ds := s.Deliveries()
	if len(ds) != 8 {
		t.Fatalf("deliveries %d, want 8", len(ds))
	}
	byTrigger := map[string][]int{} // trigger_id → replicas that got it
	for i, r := range rs {
		for _, e := range r.rec.events() {
			trig := e.Data.(slack.SlashCommand).TriggerID
			byTrigger[trig] = append(byTrigger[trig], i)
		}
	}
	if len(byTrigger) != 4 {
		t.Errorf("distinct commands %d, want 4", len(byTrigger))
	}
	for trig, got := range byTrigger {
		if len(got) != 2 || got[0] == got[1] {
			t.Errorf("command %s reached replicas %v, want two different ones", trig, got)
		}
	}
	s.DuplicateEnvelopes(false)
	before := len(s.Deliveries())
	if err := s.SlashCommand(ctx, UserAlice, ChannelIncident, "/rollback", "once"); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Deliveries()) - before; n != 1 {
		t.Errorf("after DuplicateEnvelopes(false): %d copies, want 1", n)
	}
}

func TestReplicasEleventhConnectionRefused(t *testing.T) {
	s := newServer(t, Options{})
	rs := startReplicas(t, s, 10, always)
	extra := startReplica(t, s, always)
	wait.For(t, 10*time.Second, "a connection error on the 11th client", func() (bool, error) {
		return len(extra.connectionErrors()) > 0, nil
	})
	var se slack.SlackErrorResponse
	if err := extra.connectionErrors()[0]; !errors.As(err, &se) || se.Err != "too_many_websockets" {
		t.Errorf("11th connection: %v, want too_many_websockets", err)
	}
	if n := s.Connections(); n != 10 || extra.connects() != 0 {
		t.Errorf("open connections %d (11th connected %d times), want 10", n, extra.connects())
	}
	refused := 0
	for _, c := range s.CallsTo("apps.connections.open") {
		if c.Error == "too_many_websockets" {
			refused++
		}
	}
	if refused == 0 {
		t.Error("no apps.connections.open call answered too_many_websockets")
	}
	// A slot frees up: the 11th client gets in on its next try.
	rs[0].stop()
	wait.For(t, 20*time.Second, "the 11th client to connect after a slot freed up", func() (bool, error) {
		return extra.connects() > 0, fmt.Errorf("errors %v", extra.connectionErrors())
	})
	// The other nine stay; one of them may be reconnecting (a ping
	// missed under load) at the moment the 11th gets in.
	wait.For(t, 10*time.Second, "10 open connections", func() (bool, error) {
		n := s.Connections()
		return n == 10, fmt.Errorf("open connections %d, want 10", n)
	})
}

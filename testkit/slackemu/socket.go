package slackemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const maxConnections = 10

// ErrNotAcked is returned when the app did not acknowledge an envelope in
// time (Slack shows the user an error then).
var ErrNotAcked = errors.New("envelope not acknowledged in time")

// hub is the Socket Mode side: it hands out websocket URLs, keeps up to
// ten connections, delivers each envelope to one of them and tracks acks.
type hub struct {
	s        *Server
	upgrader websocket.Upgrader

	mu       sync.Mutex
	conns    []*sconn
	next     int                  // round-robin cursor
	tickets  map[string]time.Time // one-use websocket tickets
	pending  map[string]chan json.RawMessage
	accepted int
	dupNext  bool
	envSeq   int
	changed  chan struct{} // closed and replaced when conns change
	closed   bool
	wg       sync.WaitGroup // connection goroutines
}

type sconn struct {
	id   int
	ws   *websocket.Conn
	wmu  sync.Mutex
	done chan struct{}
	once sync.Once
}

func newHub(s *Server) *hub {
	return &hub{
		s: s,
		upgrader: websocket.Upgrader{
			// slack-go sends Origin: https://api.slack.com; accept any origin.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		tickets: map[string]time.Time{},
		pending: map[string]chan json.RawMessage{},
		changed: make(chan struct{}),
	}
}

func (h *hub) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// openTicket answers apps.connections.open: a one-use websocket URL.
// It refuses when ten connections are open (never accept and close: that
// resets slack-go's backoff and makes it spin).
func (h *hub) openTicket() (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.conns) >= maxConnections {
		return "", errCode("too_many_websockets")
	}
	for t, at := range h.tickets {
		if time.Since(at) > time.Minute {
			delete(h.tickets, t)
		}
	}
	t := randomToken(32)
	h.tickets[t] = time.Now()
	u := strings.Replace(h.s.base, "http://", "ws://", 1)
	return u + "/link/?ticket=" + t + "&app_id=" + AppID, nil
}

// handleLink upgrades a websocket that presents a valid ticket.
func (h *hub) handleLink(w http.ResponseWriter, r *http.Request) {
	t := r.URL.Query().Get("ticket")
	h.mu.Lock()
	_, ok := h.tickets[t]
	delete(h.tickets, t)
	full := len(h.conns) >= maxConnections
	h.mu.Unlock()
	switch {
	case !ok:
		http.Error(w, "invalid or used ticket", http.StatusUnauthorized)
		return
	case full:
		http.Error(w, "too many websockets", http.StatusServiceUnavailable)
		return
	case h.s.closed():
		http.Error(w, "closed", http.StatusServiceUnavailable)
		return
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		h.s.log.Warn("websocket upgrade", "err", err)
		return
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		_ = ws.Close()
		return
	}
	h.wg.Add(1)
	defer h.wg.Done()
	h.accepted++
	c := &sconn{id: h.accepted, ws: ws, done: make(chan struct{})}
	h.conns = append(h.conns, c)
	n := len(h.conns)
	h.notifyLocked()
	h.mu.Unlock()
	h.s.touch()
	h.s.log.Info("socket connected", "conn", c.id, "open", n)

	hello := map[string]any{
		"type": "hello", "num_connections": n,
		"debug_info":      map[string]any{"host": "slackemu-1", "build_number": 1, "approximate_connection_time": 18060},
		"connection_info": map[string]any{"app_id": AppID},
	}
	if err := c.write(hello); err != nil {
		h.drop(c)
		return
	}
	h.wg.Go(func() { h.pinger(c) })
	h.reader(c)
}

func (c *sconn) write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("marshal frame: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("write frame to connection %d: %w", c.id, err)
	}
	return nil
}

// pinger sends websocket PINGs; slack-go needs them to keep a connection.
func (h *hub) pinger(c *sconn) {
	t := time.NewTicker(h.s.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.wmu.Lock()
			err := c.ws.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(5*time.Second))
			c.wmu.Unlock()
			if err != nil {
				h.drop(c)
				return
			}
		}
	}
}

// reader reads acks until the connection fails.
func (h *hub) reader(c *sconn) {
	defer h.drop(c)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			h.s.log.Info("socket closed", "conn", c.id, "err", err)
			return
		}
		var ack struct {
			EnvelopeID string          `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(data, &ack); err != nil || ack.EnvelopeID == "" {
			h.s.log.Warn("unreadable frame from app", "conn", c.id)
			continue
		}
		h.mu.Lock()
		ch, ok := h.pending[ack.EnvelopeID]
		h.mu.Unlock()
		if !ok {
			h.s.log.Info("ack for unknown or late envelope", "envelope_id", ack.EnvelopeID)
			continue
		}
		p := ack.Payload
		if p == nil {
			p = json.RawMessage("{}")
		}
		select {
		case ch <- p:
		default: // already acked (the other copy of a duplicate)
		}
	}
}

// drop forgets a connection and closes it abruptly.
func (h *hub) drop(c *sconn) {
	c.once.Do(func() {
		close(c.done)
		_ = c.ws.Close()
		h.mu.Lock()
		for i, x := range h.conns {
			if x == c {
				h.conns = append(h.conns[:i], h.conns[i+1:]...)
				break
			}
		}
		h.notifyLocked()
		h.mu.Unlock()
		h.s.touch()
	})
}

// dropAll drops every open connection.
func (h *hub) dropAll() {
	h.mu.Lock()
	conns := append([]*sconn(nil), h.conns...)
	h.mu.Unlock()
	for _, c := range conns {
		h.drop(c)
	}
}

// shutdown refuses new connections, drops the open ones and waits for
// their goroutines.
func (h *hub) shutdown() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.dropAll()
	h.wg.Wait()
}

// DropConnections closes every open websocket abruptly (no close frame,
// no disconnect message). slack-go notices and reconnects through
// apps.connections.open. When it returns, Connections() is 0.
func (s *Server) DropConnections() { s.hub.dropAll() }

// RefreshConnections sends {"type":"disconnect","reason":"refresh_requested"}
// on every open websocket, as Slack does before it rotates a connection;
// slack-go closes the socket and reconnects.
func (s *Server) RefreshConnections() {
	s.hub.mu.Lock()
	conns := append([]*sconn(nil), s.hub.conns...)
	s.hub.mu.Unlock()
	for _, c := range conns {
		_ = c.write(map[string]any{"type": "disconnect", "reason": "refresh_requested",
			"debug_info": map[string]any{"host": "slackemu-1"}})
	}
}

// Connections is the number of open Socket Mode connections.
func (s *Server) Connections() int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return len(s.hub.conns)
}

// ConnectionsAccepted counts every websocket accepted since New; it grows
// by one on each reconnect.
func (s *Server) ConnectionsAccepted() int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.hub.accepted
}

// WaitConnected waits until at least n Socket Mode connections are open.
func (s *Server) WaitConnected(ctx context.Context, n int) error {
	for {
		s.hub.mu.Lock()
		ok := len(s.hub.conns) >= n
		ch := s.hub.changed
		s.hub.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d socket connections: %w", n, context.Cause(ctx))
		case <-s.close:
			return fmt.Errorf("wait for socket connections: %w", errClosed)
		case <-ch:
		}
	}
}

// envelope is one Socket Mode request to the app.
type envelope struct {
	Type                   string          `json:"type"`
	EnvelopeID             string          `json:"envelope_id"`
	Payload                json.RawMessage `json:"payload"`
	AcceptsResponsePayload bool            `json:"accepts_response_payload"`
	RetryAttempt           int             `json:"retry_attempt"`
	RetryReason            string          `json:"retry_reason"`
}

// pick returns the next open connection, waiting for one until ctx ends.
func (h *hub) pick(ctx context.Context) (*sconn, error) {
	for {
		h.mu.Lock()
		if len(h.conns) > 0 {
			c := h.conns[h.next%len(h.conns)]
			h.next++
			h.mu.Unlock()
			return c, nil
		}
		ch := h.changed
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no app connected over Socket Mode: %w", context.Cause(ctx))
		case <-h.s.close:
			return nil, errClosed
		case <-ch:
		}
	}
}

// send writes env on a connection with a fresh envelope ID whose ack goes
// to ackCh; on a write failure it drops that connection and tries another.
func (h *hub) send(ctx context.Context, env envelope, ackCh chan json.RawMessage) (string, error) {
	for {
		c, err := h.pick(ctx)
		if err != nil {
			return "", err
		}
		h.mu.Lock()
		h.envSeq++
		env.EnvelopeID = fmt.Sprintf("%08x-%04x-4e00-8000-%012x", time.Now().Unix(), h.envSeq&0xffff, h.envSeq)
		h.pending[env.EnvelopeID] = ackCh
		h.mu.Unlock()
		if err := c.write(env); err != nil {
			h.forget(env.EnvelopeID)
			h.drop(c)
			continue
		}
		h.s.log.Debug("envelope sent", "type", env.Type, "envelope_id", env.EnvelopeID, "conn", c.id, "retry_attempt", env.RetryAttempt)
		return env.EnvelopeID, nil
	}
}

func (h *hub) forget(ids ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		delete(h.pending, id)
	}
}

// deliver sends env to one connection and waits for its ack, which it
// returns (the ack's payload, "{}" without one). It waits for a connection
// while ctx allows. Without an ack within AckTimeout it fails with
// ErrNotAcked, except events_api envelopes, which are redelivered with
// retry_attempt/retry_reason up to MaxRedeliveries times first.
func (h *hub) deliver(ctx context.Context, env envelope) (json.RawMessage, error) {
	for attempt := 0; ; attempt++ {
		ackCh := make(chan json.RawMessage, 2)
		id, err := h.send(ctx, env, ackCh)
		if err != nil {
			return nil, err
		}
		ids := []string{id}
		h.mu.Lock()
		dup := h.dupNext
		h.dupNext = false
		h.mu.Unlock()
		if dup {
			id2, err := h.send(ctx, env, ackCh)
			if err == nil {
				ids = append(ids, id2)
			}
		}
		t := time.NewTimer(h.s.opts.AckTimeout)
		select {
		case p := <-ackCh:
			t.Stop()
			h.forget(ids...)
			return p, nil
		case <-ctx.Done():
			t.Stop()
			h.forget(ids...)
			return nil, fmt.Errorf("wait for ack of %s: %w", env.Type, context.Cause(ctx))
		case <-h.s.close:
			t.Stop()
			h.forget(ids...)
			return nil, errClosed
		case <-t.C:
			h.forget(ids...)
		}
		if env.Type != "events_api" || attempt >= h.s.opts.MaxRedeliveries {
			return nil, fmt.Errorf("%s envelope %s: %w", env.Type, id, ErrNotAcked)
		}
		env.RetryAttempt = attempt + 1
		env.RetryReason = "timeout"
	}
}

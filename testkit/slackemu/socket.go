package slackemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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
	dupNext  bool      // DuplicateNextEnvelope
	dupAll   bool      // DuplicateEnvelopes
	dropNext *dropPlan // DropAfterNextEnvelope
	envSeq   int

	deliveries []delivery
	delivIdx   map[string]int // envelope_id → index in deliveries
	changed    chan struct{}  // closed and replaced when conns change
	closed     bool
	wg         sync.WaitGroup // connection goroutines
}

type sconn struct {
	id   int
	ws   *websocket.Conn
	wmu  sync.Mutex
	done chan struct{}
	once sync.Once
	// deaf: acks read from now on are ignored (the connection is being
	// dropped mid-flow, so they never reached Slack).
	deaf atomic.Bool
}

func newHub(s *Server) *hub {
	return &hub{
		s: s,
		upgrader: websocket.Upgrader{
			// slack-go sends Origin: https://api.slack.com; accept any origin.
			CheckOrigin: func(*http.Request) bool { return true },
		},
		tickets:  map[string]time.Time{},
		pending:  map[string]chan json.RawMessage{},
		delivIdx: map[string]int{},
		changed:  make(chan struct{}),
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
	// A ticket handed out in the last seconds is a connection on its way:
	// it counts, so clients racing for the last slot cannot exceed ten.
	reserved := 0
	for t, at := range h.tickets {
		switch age := time.Since(at); {
		case age > time.Minute:
			delete(h.tickets, t)
		case age < 10*time.Second:
			reserved++
		}
	}
	if len(h.conns)+reserved >= maxConnections {
		return "", errCode("too_many_websockets")
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
		if c.deaf.Load() {
			continue
		}
		h.markAcked(ack.EnvelopeID)
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

// ConnectionIDs lists the IDs of the open Socket Mode connections in the
// order they were accepted. An ID is never reused: a client that
// reconnects gets a new one.
func (s *Server) ConnectionIDs() []int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	ids := make([]int, 0, len(s.hub.conns))
	for _, c := range s.hub.conns {
		ids = append(ids, c.id)
	}
	return ids
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

// Delivery is one copy of an envelope written to one connection.
type Delivery struct {
	EnvelopeID   string
	Type         string // slash_commands, interactive or events_api
	Conn         int    // the connection's ID, as in ConnectionIDs
	RetryAttempt int
	RetryReason  string
	Acked        bool // the app acked this envelope_id (even too late)
	Lost         bool // its connection closed before an ack of the envelope
}

// Deliveries lists every envelope copy written to a connection since New,
// in order.
func (s *Server) Deliveries() []Delivery {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	out := make([]Delivery, 0, len(s.hub.deliveries))
	for _, d := range s.hub.deliveries {
		if !d.failed {
			out = append(out, d.Delivery)
		}
	}
	return out
}

type delivery struct {
	Delivery
	failed bool // the write failed: the app never saw it
}

// inFlight is one copy of an envelope waiting for its ack.
type inFlight struct {
	id string
	c  *sconn
}

// pick returns an open connection, waiting for one until ctx ends:
// connection want if it is open (want > 0), else the next one in
// round-robin order that is not in avoid, else the next one.
func (h *hub) pick(ctx context.Context, want int, avoid map[*sconn]bool) (*sconn, error) {
	for {
		h.mu.Lock()
		if c := h.pickLocked(want, avoid); c != nil {
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

func (h *hub) pickLocked(want int, avoid map[*sconn]bool) *sconn {
	n := len(h.conns)
	if n == 0 {
		return nil
	}
	if want > 0 {
		for _, c := range h.conns {
			if c.id == want {
				return c
			}
		}
	}
	for i := range n {
		if c := h.conns[(h.next+i)%n]; !avoid[c] {
			h.next += i + 1
			return c
		}
	}
	c := h.conns[h.next%n]
	h.next++
	return c
}

// send writes env to one connection (see pick) with a fresh envelope ID
// whose ack goes to ackCh; on a write failure it drops that connection
// and tries another.
//
// With drop set, the connection stops hearing acks before the write and
// is closed right after it: the envelope is lost mid-flow.
func (h *hub) send(ctx context.Context, env envelope, ackCh chan json.RawMessage, want int, avoid map[*sconn]bool, drop bool) (inFlight, error) {
	for {
		c, err := h.pick(ctx, want, avoid)
		if err != nil {
			return inFlight{}, err
		}
		h.mu.Lock()
		h.envSeq++
		env.EnvelopeID = fmt.Sprintf("%08x-%04x-4e00-8000-%012x", time.Now().Unix(), h.envSeq&0xffff, h.envSeq)
		h.pending[env.EnvelopeID] = ackCh
		h.delivIdx[env.EnvelopeID] = len(h.deliveries)
		h.deliveries = append(h.deliveries, delivery{Delivery: Delivery{EnvelopeID: env.EnvelopeID, Type: env.Type, Conn: c.id,
			RetryAttempt: env.RetryAttempt, RetryReason: env.RetryReason}})
		h.mu.Unlock()
		if drop {
			c.deaf.Store(true)
		}
		if err := c.write(env); err != nil {
			h.mu.Lock()
			h.deliveries[h.delivIdx[env.EnvelopeID]].failed = true
			h.mu.Unlock()
			h.forget(env.EnvelopeID)
			h.drop(c)
			continue
		}
		h.s.log.Debug("envelope sent", "type", env.Type, "envelope_id", env.EnvelopeID, "conn", c.id, "retry_attempt", env.RetryAttempt)
		if drop {
			h.s.log.Info("dropping a connection right after an envelope (fault)", "conn", c.id, "envelope_id", env.EnvelopeID)
			h.drop(c)
		}
		return inFlight{id: env.EnvelopeID, c: c}, nil
	}
}

func (h *hub) forget(ids ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		delete(h.pending, id)
	}
}

// markAcked records that the app acked envelope id.
func (h *hub) markAcked(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i, ok := h.delivIdx[id]; ok {
		h.deliveries[i].Acked = true
	}
}

type waitResult int

const (
	gotAck waitResult = iota
	ackTimeout
	connLost
)

// await waits for an ack of any copy until deadline, or until the
// connection of every copy has closed.
func (h *hub) await(ctx context.Context, ackCh chan json.RawMessage, copies []inFlight, deadline time.Time) (json.RawMessage, waitResult, error) {
	stop := make(chan struct{})
	defer close(stop)
	lost := make(chan string, len(copies))
	for _, cp := range copies {
		go func() {
			select {
			case <-cp.c.done:
				lost <- cp.id
			case <-stop:
			}
		}()
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	live := len(copies)
	for {
		select {
		case p := <-ackCh:
			return p, gotAck, nil
		case id := <-lost:
			h.mu.Lock()
			h.deliveries[h.delivIdx[id]].Lost = true
			h.mu.Unlock()
			if live--; live > 0 {
				continue
			}
			// The reader hands over an ack before its connection is
			// dropped: prefer an ack that raced with the close.
			select {
			case p := <-ackCh:
				return p, gotAck, nil
			default:
			}
			return nil, connLost, nil
		case <-t.C:
			return nil, ackTimeout, nil
		case <-ctx.Done():
			return nil, 0, context.Cause(ctx)
		case <-h.s.close:
			return nil, 0, errClosed
		}
	}
}

// deliver sends env to one connection and waits for its ack, which it
// returns (the ack's payload, "{}" without one). It waits for a
// connection while ctx allows.
//
// Without an ack within AckTimeout an events_api envelope is redelivered,
// up to MaxRedeliveries times, and a slash command or interaction fails
// with ErrNotAcked (Slack shows the user an error). When the connection
// closes after the envelope was written and before its ack, the envelope
// is redelivered at once: an events_api envelope counts that as one of its
// redeliveries; a slash command or interaction is redelivered only within
// its AckTimeout window, counted from the first copy (the user is still
// waiting), and fails with ErrNotAcked when the window ends first. Every
// redelivery has a new envelope_id, the same payload, retry_attempt 1, 2, …
// and retry_reason "timeout", and goes to another connection than the
// previous attempt whenever another one is open.
func (h *hub) deliver(ctx context.Context, env envelope) (json.RawMessage, error) {
	events := env.Type == "events_api"
	var window time.Time // slash commands and interactions: the user's ack window
	var previous map[*sconn]bool
	for {
		h.mu.Lock()
		dup := h.dupNext || h.dupAll
		h.dupNext = false
		plan := h.dropNext
		h.dropNext = nil
		h.mu.Unlock()

		sctx, cancel := ctx, context.CancelFunc(func() {})
		if !window.IsZero() {
			sctx, cancel = context.WithDeadline(ctx, window)
		}
		ackCh := make(chan json.RawMessage, 4)
		want := 0
		if plan != nil {
			want = plan.conn
		}
		first, err := h.send(sctx, env, ackCh, want, previous, plan != nil)
		if err != nil {
			cancel()
			if ctx.Err() == nil && !window.IsZero() && !time.Now().Before(window) {
				return nil, fmt.Errorf("%s envelope: no connection to redeliver to in time: %w", env.Type, ErrNotAcked)
			}
			return nil, err
		}
		copies := []inFlight{first}
		if dup {
			avoid := map[*sconn]bool{first.c: true}
			if second, err := h.send(sctx, env, ackCh, 0, avoid, false); err == nil {
				copies = append(copies, second)
			}
		}
		cancel()
		deadline := time.Now().Add(h.s.opts.AckTimeout)
		if !events {
			if window.IsZero() {
				window = deadline
			}
			deadline = window
		}
		p, res, err := h.await(ctx, ackCh, copies, deadline)
		previous = map[*sconn]bool{}
		ids := make([]string, 0, len(copies))
		for _, cp := range copies {
			ids = append(ids, cp.id)
			previous[cp.c] = true
		}
		h.forget(ids...)
		switch {
		case err != nil:
			return nil, fmt.Errorf("wait for ack of %s: %w", env.Type, err)
		case res == gotAck:
			return p, nil
		case res == ackTimeout && !events:
			return nil, fmt.Errorf("%s envelope %s: %w", env.Type, first.id, ErrNotAcked)
		case events && env.RetryAttempt >= h.s.opts.MaxRedeliveries:
			return nil, fmt.Errorf("%s envelope %s after %d redeliveries: %w", env.Type, first.id, env.RetryAttempt, ErrNotAcked)
		}
		if res == connLost {
			h.s.log.Info("connection lost before the ack; redelivering", "type", env.Type, "envelope_id", first.id)
		}
		env.RetryAttempt++
		env.RetryReason = "timeout"
	}
}

package slackemu

import (
	"errors"
	"time"
)

var errClosed = errors.New("slack emulator closed")

// faults are injected answers for Web API methods. "*" matches every
// method.
type faults struct {
	fail  map[string]*failFault
	limit map[string]*limitFault
	delay map[string]time.Duration
}

type failFault struct {
	code  string
	times int // < 0: every call
}

type limitFault struct {
	retryAfter time.Duration
	times      int
}

// FailMethod makes the next `times` calls of method (after the token
// check) answer {"ok":false,"error":slackError}. times < 0 fails every call
// until FailMethod(method, "", 0) clears it. method "*" matches all.
func (s *Server) FailMethod(method, slackError string, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flt.fail == nil {
		s.flt.fail = map[string]*failFault{}
	}
	if times == 0 {
		delete(s.flt.fail, method)
		return
	}
	s.flt.fail[method] = &failFault{code: slackError, times: times}
}

// RateLimit makes the next `times` calls of method answer HTTP 429 with
// Retry-After (whole seconds, rounded up, at least 1) and
// {"ok":false,"error":"ratelimited"}. times < 0 limits every call until
// RateLimit(method, 0, 0) clears it.
func (s *Server) RateLimit(method string, retryAfter time.Duration, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flt.limit == nil {
		s.flt.limit = map[string]*limitFault{}
	}
	if times == 0 {
		delete(s.flt.limit, method)
		return
	}
	s.flt.limit[method] = &limitFault{retryAfter: retryAfter, times: times}
}

// DelayMethod delays every call of method by d before it is answered;
// d <= 0 clears the delay.
func (s *Server) DelayMethod(method string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flt.delay == nil {
		s.flt.delay = map[string]time.Duration{}
	}
	if d <= 0 {
		delete(s.flt.delay, method)
		return
	}
	s.flt.delay[method] = d
}

// DuplicateNextEnvelope makes the hub deliver the next envelope twice.
//
// Both copies carry the same payload (same trigger_id, action_ts, event_id)
// under different envelope_ids, on two different connections when two are
// open, as Slack's at-least-once delivery can do; an ack of either copy
// satisfies the sender. Timeout redeliveries of events_api envelopes are
// separate: they get a new envelope_id and retry_attempt 1, 2, 3 with
// retry_reason "timeout".
func (s *Server) DuplicateNextEnvelope() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.dupNext = true
}

// DuplicateEnvelopes makes the hub deliver every envelope twice, as
// DuplicateNextEnvelope does for one, until DuplicateEnvelopes(false):
// an app with several replicas must act once on each.
func (s *Server) DuplicateEnvelopes(on bool) {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.dupAll = on
}

type dropPlan struct {
	conn int // 0: whichever connection gets the envelope
}

// DropAfterNextEnvelope makes the hub deliver the next envelope to
// connection conn (an ID from ConnectionIDs; 0: whichever connection is
// next in turn) and close that connection abruptly right after writing
// the envelope, before the app can ack it: a connection lost mid-flow.
// The app may or may not have read the envelope; the hub redelivers it
// to another connection (see Server.SlashCommand and SendEvent). If conn
// is no longer open when the envelope is sent, the connection that gets
// it is dropped instead.
func (s *Server) DropAfterNextEnvelope(conn int) {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.dropNext = &dropPlan{conn: conn}
}

// takeDelay returns the delay for method.
func (s *Server) takeDelay(method string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.flt.delay[method]; ok {
		return d
	}
	return s.flt.delay["*"]
}

// takeFault consumes one injected fault for method, if any: a rate limit
// first, then a failure.
func (s *Server) takeFault(method string) (limited time.Duration, failCode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, key := range []string{method, "*"} {
		if l, ok := s.flt.limit[key]; ok {
			if l.times > 0 {
				l.times--
				if l.times == 0 {
					delete(s.flt.limit, key)
				}
			}
			ra := l.retryAfter
			if ra < time.Second {
				ra = time.Second
			}
			return ra, ""
		}
	}
	for _, key := range []string{method, "*"} {
		if f, ok := s.flt.fail[key]; ok {
			if f.times > 0 {
				f.times--
				if f.times == 0 {
					delete(s.flt.fail, key)
				}
			}
			return 0, f.code
		}
	}
	return 0, ""
}

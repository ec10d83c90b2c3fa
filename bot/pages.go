package bot

import (
	"sync"
	"time"
)

// pageTrim decides when rollbot's executable pages are trimmed again. The
// first trim is at start-up (Bot.releaseStartupPages); an envelope or a
// handler makes the process busy, and a busy process gets read-ahead back
// for its tables (a burst of commands would otherwise fault their pages
// in one at a time, behind the acks); once nothing has happened for
// idleTrim and no handler runs, the pages are trimmed again, so the
// memory an incident brought in is returned after it.
type pageTrim struct {
	mu       sync.Mutex
	trimmed  bool
	last     time.Time // last envelope or handler end
	running  int       // handlers running
	unmapped time.Time // last trim or unmapIdlePages
}

// idleTrim is how long rollbot stays quiet before its pages are trimmed
// again; idleUnmap is how often a trimmed, quiet process unmaps the
// executable pages its periodic work mapped back (unmapIdlePages).
const (
	idleTrim  = 2 * time.Minute
	idleUnmap = 30 * time.Second
)

// busy records an envelope. It reports whether the pages were trimmed, in
// which case the caller restores read-ahead.
func (p *pageTrim) busy(now time.Time) (wasTrimmed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = now
	wasTrimmed = p.trimmed
	p.trimmed = false
	return wasTrimmed
}

// trimmedAt records a trim done outside due (the first, at start-up).
func (p *pageTrim) trimmedAt(now time.Time) {
	p.mu.Lock()
	p.trimmed = true
	p.last = now
	p.unmapped = now
	p.mu.Unlock()
}

// unmapDue reports whether a trimmed process that has stayed quiet should
// unmap its executable pages again now, and if so records it.
func (p *pageTrim) unmapDue(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.trimmed || p.running > 0 || now.Sub(p.last) < idleUnmap || now.Sub(p.unmapped) < idleUnmap {
		return false
	}
	p.unmapped = now
	return true
}

// quiet reports whether no envelope has come for d and no handler runs.
func (p *pageTrim) quiet(now time.Time, d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running == 0 && now.Sub(p.last) >= d
}

// begin and end bracket a handler.
func (p *pageTrim) begin() {
	p.mu.Lock()
	p.running++
	p.mu.Unlock()
}

func (p *pageTrim) end(now time.Time) {
	p.mu.Lock()
	p.running--
	p.last = now
	p.mu.Unlock()
}

// due reports whether the pages should be trimmed now, and if so counts
// them as trimmed.
func (p *pageTrim) due(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.trimmed || p.running > 0 || now.Sub(p.last) < idleTrim {
		return false
	}
	p.trimmed = true
	p.unmapped = now
	return true
}

// startSlots paces the start of handlers under a burst: a handler holds
// one of the slots while it starts, for slotHold at most, then runs on
// without it. Two hundred commands at once then begin their work a few at
// a time after their acks, instead of all at once beside the socket's
// reader, whose acks would wait for CPU behind them. A slow handler (a
// platform that takes its whole budget) delays the next one by slotHold
// at most.
//
// Before taking a slot a handler also waits, for quietMax at most, until
// no envelope has arrived for quietFor: while envelopes stream in, their
// acks have the CPU, and the work starts when the stream pauses. A lone
// command waits quietFor (a few milliseconds). The waiting handlers share
// one gate, opened by one timer: a burst of two hundred wakes the
// scheduler once per quietFor while it lasts, not two hundred times.
type startSlots struct {
	slots chan struct{}
	hold  time.Duration

	quietFor, quietMax time.Duration
	mu                 sync.Mutex
	quiet              chan struct{} // closed once no envelope came for quietFor
	burst              quietTimer
}

func newStartSlots(n int, hold time.Duration) *startSlots {
	quiet := make(chan struct{})
	close(quiet)
	s := &startSlots{slots: make(chan struct{}, n), hold: hold, quietFor: burstQuiet, quietMax: burstQuietMax, quiet: quiet}
	s.burst.start = func() {
		s.mu.Lock()
		s.quiet = make(chan struct{})
		s.mu.Unlock()
	}
	s.burst.end = func() {
		s.mu.Lock()
		close(s.quiet)
		s.mu.Unlock()
	}
	return s
}

// envelope records an envelope's arrival: the gate closes until the
// socket has been quiet for quietFor.
func (s *startSlots) envelope(now time.Time) { s.burst.mark(now, s.quietFor) }

// quietTimer follows runs of events: start runs at the first event of a
// run, end once no event has come for the given quiet time, from one
// timer that is re-armed while events come (not one per event). startSlots
// and gcHold keep their state changes in start and end.
type quietTimer struct {
	start, end func()

	mu    sync.Mutex
	last  time.Time // the last event
	quiet time.Duration
	timer *time.Timer // set while a run lasts
}

// mark records an event at now.
func (q *quietTimer) mark(now time.Time, quiet time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.last, q.quiet = now, quiet
	if q.timer == nil {
		q.start()
		q.timer = time.AfterFunc(quiet, q.check)
	}
}

// check ends the run if no event has come for the quiet time, and
// otherwise looks again when none will have.
func (q *quietTimer) check() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if left := q.quiet - time.Since(q.last); left > 0 {
		q.timer.Reset(left)
		return
	}
	q.end()
	q.timer = nil
}

// running reports whether a run of events lasts.
func (q *quietTimer) running() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.timer != nil
}

// take waits for a quiet socket and a slot; release is safe to call more
// than once.
func (s *startSlots) take() (release func()) {
	s.mu.Lock()
	quiet := s.quiet
	s.mu.Unlock()
	select {
	case <-quiet:
	default:
		give := time.NewTimer(s.quietMax)
		select {
		case <-quiet:
		case <-give.C:
		}
		give.Stop()
	}
	s.slots <- struct{}{}
	var once sync.Once
	release = func() { once.Do(func() { <-s.slots }) }
	time.AfterFunc(s.hold, release)
	return release
}

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
	mu      sync.Mutex
	trimmed bool
	last    time.Time // last envelope or handler end
	running int       // handlers running
}

// idleTrim is how long rollbot stays quiet before its pages are trimmed
// again.
const idleTrim = 2 * time.Minute

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
	p.mu.Unlock()
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
	return true
}

// startSlots paces the start of handlers under a burst: a handler holds
// one of the slots while it starts, for slotHold at most, then runs on
// without it. Two hundred commands at once then begin their work a few at
// a time after their acks, instead of all at once beside the socket's
// reader, whose acks would wait for CPU behind them. A slow handler (a
// platform that takes its whole budget) delays the next one by slotHold
// at most.
type startSlots struct {
	slots chan struct{}
	hold  time.Duration
}

func newStartSlots(n int, hold time.Duration) *startSlots {
	return &startSlots{slots: make(chan struct{}, n), hold: hold}
}

// take waits for a slot; release is safe to call more than once.
func (s *startSlots) take() (release func()) {
	s.slots <- struct{}{}
	var once sync.Once
	release = func() { once.Do(func() { <-s.slots }) }
	time.AfterFunc(s.hold, release)
	return release
}

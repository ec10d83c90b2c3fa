package bot

import (
	"context"
	"testing"
	"time"

	"rollbot/testkit/wait"
)

func TestPageTrimTrimsOnlyWhenQuiet(t *testing.T) {
	light(t)
	var p pageTrim
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	p.trimmedAt(t0)
	if p.due(t0.Add(time.Hour)) {
		t.Fatal("due again while still trimmed")
	}
	if !p.busy(t0.Add(time.Second)) {
		t.Fatal("the first envelope after a trim did not report the trim (read-ahead would stay off)")
	}
	if p.busy(t0.Add(2 * time.Second)) {
		t.Fatal("a second envelope reported a trim again")
	}
	p.begin()
	if p.due(t0.Add(time.Hour)) {
		t.Fatal("due while a handler runs")
	}
	end := t0.Add(time.Minute)
	p.end(end)
	if p.due(end.Add(idleTrim - time.Second)) {
		t.Fatal("due before idleTrim has passed since the last handler ended")
	}
	if !p.due(end.Add(idleTrim)) {
		t.Fatal("not due after idleTrim of quiet")
	}
	if p.due(end.Add(2 * idleTrim)) {
		t.Fatal("due twice without activity between")
	}
	if !p.busy(end.Add(3 * idleTrim)) {
		t.Fatal("the envelope after the second trim did not report it")
	}
}

// A trimmed process unmaps its executable pages again every idleUnmap
// while it stays quiet, never while busy or right after an envelope.
func TestPageTrimUnmapsWhileIdle(t *testing.T) {
	light(t)
	var p pageTrim
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	if p.unmapDue(t0.Add(time.Hour)) {
		t.Fatal("unmap due before the first trim")
	}
	p.trimmedAt(t0)
	if p.unmapDue(t0.Add(idleUnmap - time.Second)) {
		t.Fatal("unmap due before idleUnmap has passed since the trim")
	}
	if !p.unmapDue(t0.Add(idleUnmap)) {
		t.Fatal("unmap not due after idleUnmap of quiet")
	}
	if p.unmapDue(t0.Add(idleUnmap + time.Second)) {
		t.Fatal("unmap due again right after one")
	}
	if !p.unmapDue(t0.Add(2 * idleUnmap)) {
		t.Fatal("unmap not due idleUnmap after the last one")
	}
	p.begin()
	if p.unmapDue(t0.Add(10 * idleUnmap)) {
		t.Fatal("unmap due while a handler runs")
	}
	p.end(t0.Add(10 * idleUnmap))
	if p.unmapDue(t0.Add(10*idleUnmap + time.Second)) {
		t.Fatal("unmap due right after a handler ended")
	}
	// An envelope makes the process busy: no unmapping until it is
	// trimmed again.
	p.busy(t0.Add(11 * idleUnmap))
	if p.unmapDue(t0.Add(20 * idleUnmap)) {
		t.Fatal("unmap due while not trimmed")
	}
}

func TestStartSlotsPaceABurst(t *testing.T) {
	light(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Held slots: the third waits until one is released.
	s := newStartSlots(2, time.Hour)
	r1, r2 := s.take(), s.take()
	third := make(chan func(), 1)
	go func() { third <- s.take() }()
	select {
	case <-third:
		t.Fatal("a third handler started while two held both slots")
	case <-time.After(100 * time.Millisecond):
	}
	r1()
	r1() // twice is harmless
	select {
	case r3 := <-third:
		r3()
	case <-ctx.Done():
		t.Fatal("the third handler did not start after a slot was released")
	}
	r2()
	if n := len(s.slots); n != 0 {
		t.Fatalf("%d slots held after every handler released its own", n)
	}

	// Handlers that never end do not stop the ones behind them: each
	// slot comes back after its hold.
	s = newStartSlots(2, 10*time.Millisecond)
	started := make(chan struct{}, 10)
	for range 10 {
		go func() {
			s.take() // never released by the handler
			started <- struct{}{}
		}()
	}
	n := 0
	if err := wait.Until(ctx, 20*time.Second, "ten blocked handlers to start", func() (bool, error) {
		for len(started) > 0 {
			<-started
			n++
		}
		return n == 10, nil
	}); err != nil {
		t.Fatalf("%v (%d started)", err, n)
	}
}

// Handlers wait for a pause in the envelopes before they start, and for
// quietMax at most while envelopes keep coming.
func TestStartSlotsWaitForAQuietSocket(t *testing.T) {
	light(t)
	s := newStartSlots(4, time.Hour)
	// quietFor is far above the stream's 5 ms pace: on a loaded machine
	// the streaming goroutine itself was once not scheduled for 50 ms,
	// a real pause in which a handler rightly started.
	s.quietFor, s.quietMax = time.Second, 20*time.Second

	// A stream of envelopes every 5 ms for 2 s: no handler starts
	// during it, and one starts soon after it ends.
	stop := make(chan struct{})
	streamEnded := make(chan time.Time, 1)
	go func() {
		defer func() { streamEnded <- time.Now() }()
		end := time.Now().Add(2 * time.Second)
		for time.Now().Before(end) {
			s.envelope(time.Now())
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	s.take()()
	started := time.Now()
	close(stop)
	if ended := <-streamEnded; started.Before(ended) {
		t.Errorf("a handler started at %s, before the envelopes stopped at %s", started.Format(time.StampMicro), ended.Format(time.StampMicro))
	}

	// Envelopes that never stop: the handler starts after quietMax.
	s.quietMax = 200 * time.Millisecond
	stop = make(chan struct{})
	defer close(stop)
	go func() {
		for {
			s.envelope(time.Now())
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	done := make(chan struct{})
	go func() { s.take()(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a handler waited past quietMax for a socket that never went quiet")
	}
}

// One quiet spell opens the gate for every handler waiting on it, and the
// next envelope closes it again.
func TestStartSlotsQuietReleasesEveryWaitingHandler(t *testing.T) {
	light(t)
	s := newStartSlots(64, time.Hour)
	s.quietFor, s.quietMax = 300*time.Millisecond, time.Hour
	for round := range 2 {
		last := time.Now()
		s.envelope(last)
		started := make(chan time.Time, 50)
		for range 50 {
			go func() {
				s.take()()
				started <- time.Now()
			}()
		}
		for i := range 50 {
			select {
			case at := <-started:
				if at.Sub(last) < s.quietFor {
					t.Fatalf("round %d: handler %d started %s after the last envelope, before quietFor (%s)", round, i, at.Sub(last), s.quietFor)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("round %d: %d of 50 waiting handlers started after the socket went quiet", round, i)
			}
		}
	}
}

// quiet: no envelope for the span asked and no handler running.
func TestPageTrimQuiet(t *testing.T) {
	var p pageTrim
	t0 := time.Now()
	if !p.quiet(t0, time.Second) {
		t.Fatal("a bot that never had an envelope is not quiet")
	}
	p.busy(t0)
	if p.quiet(t0.Add(999*time.Millisecond), time.Second) {
		t.Fatal("quiet 999 ms after an envelope")
	}
	if !p.quiet(t0.Add(time.Second), time.Second) {
		t.Fatal("not quiet a second after the last envelope")
	}
	p.begin()
	if p.quiet(t0.Add(time.Hour), time.Second) {
		t.Fatal("quiet while a handler runs")
	}
	p.end(t0.Add(time.Hour))
	if !p.quiet(t0.Add(time.Hour+time.Second), time.Second) {
		t.Fatal("not quiet a second after the last handler ended")
	}
}

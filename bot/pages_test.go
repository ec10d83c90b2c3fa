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

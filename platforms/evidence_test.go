package platforms

import (
	"fmt"
	"strings"
	"testing"
)

func TestClip(t *testing.T) {
	tests := []struct {
		in         string
		lines, max int
		want       string
		cut        bool
	}{
		{"a\nb\nc\n", 2, 0, "b\nc", true},
		{"a\nb\nc", 3, 0, "a\nb\nc", false},
		{"a\nb\nc", 5, 0, "a\nb\nc", false},
		{"aaaa\nbbbb\ncccc", 0, 7, "cccc", true},
		{"aaaa\nbbbb\ncccc", 10, 100, "aaaa\nbbbb\ncccc", false},
		{"xxxxxxxxxx", 0, 4, "xxxx", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q/%d/%d", tt.in, tt.lines, tt.max), func(t *testing.T) {
			got, cut := Clip(tt.in, tt.lines, tt.max)
			if got != tt.want || cut != tt.cut {
				t.Errorf("Clip = %q, %v; want %q, %v", got, cut, tt.want, tt.cut)
			}
		})
	}
}

func TestTailBufferKeepsTheLastBytes(t *testing.T) {
	tb := &TailBuffer{Max: 10}
	for i := range 1000 {
		fmt.Fprintf(tb, "%d,", i)
	}
	if got := tb.String(); got != "7,998,999," || !tb.Dropped() {
		t.Errorf("tail = %q dropped %v", got, tb.Dropped())
	}
	small := &TailBuffer{Max: 10}
	small.Write([]byte("abc"))
	if small.String() != "abc" || small.Dropped() {
		t.Errorf("small = %q dropped %v", small.String(), small.Dropped())
	}
	big := &TailBuffer{Max: 4}
	big.Write([]byte("abcdefgh"))
	if big.String() != "efgh" || !big.Dropped() {
		t.Errorf("big = %q dropped %v", big.String(), big.Dropped())
	}
}

func TestEvidenceCap(t *testing.T) {
	var ev Evidence
	lim := CaptureLimits{Lines: 1000, SourceBytes: 2000}
	for i := range 5 {
		ev.Add(lim, fmt.Sprintf("src%d", i), "log", strings.Repeat("line\n", 300), false)
	}
	ev.Cap(3000)
	if ev.Size() > 3000 {
		t.Errorf("size %d > 3000", ev.Size())
	}
	if len(ev.Sources) != 2 || !ev.Sources[1].Truncated || len(ev.Missing) != 3 {
		t.Errorf("kept %d sources, missing %q", len(ev.Sources), ev.Missing)
	}
	if !strings.Contains(ev.Text("h"), "===== not captured =====\n- src2: left out") {
		t.Errorf("text:\n%s", ev.Text("h"))
	}
}

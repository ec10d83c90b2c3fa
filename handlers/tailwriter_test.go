package handlers

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// maxKeptLine is one kept line at most, its cut marker included.
const maxKeptLine = tailLineMax + 64

// A progress bar without newlines: megabytes written, a bounded line kept.
func TestTailWriterCapsALineWithoutNewline(t *testing.T) {
	tw := &tailWriter{max: 30}
	chunk := bytes.Repeat([]byte("#"), 32<<10)
	for range 512 { // 16 MiB
		tw.Write(chunk)
	}
	tail := tw.Tail()
	if len(tail) > maxKeptLine || !strings.Contains(tail, "line cut") {
		t.Fatalf("Tail is %d bytes (cap %d), ends %q", len(tail), maxKeptLine, tail[max(0, len(tail)-60):])
	}
	if cap(tw.partial) > 2*tailLineMax {
		t.Fatalf("the line being written holds %d bytes", cap(tw.partial))
	}
	tw.Write([]byte("\ndone\n"))
	if lines := strings.Split(tw.Tail(), "\n"); len(lines) != 2 || len(lines[0]) > maxKeptLine || lines[1] != "done" {
		t.Fatalf("after the newline: %d lines, first %d bytes, last %q", len(lines), len(lines[0]), lines[len(lines)-1])
	}
}

// Many long lines: at most max lines of bounded size are kept in total.
func TestTailWriterBoundsWhatItKeeps(t *testing.T) {
	var seen string
	tw := &tailWriter{max: 30, onLine: func(tail string) { seen = tail }}
	line := append(bytes.Repeat([]byte("é"), 1<<19), '\n') // 1 MiB a line
	for range 40 {
		tw.Write(line)
	}
	tail := tw.Tail()
	if len(tw.lines) != 30 || len(tail) > 30*(maxKeptLine+1) || !utf8.ValidString(tail) || seen != tail {
		t.Fatalf("kept %d lines, %d bytes (cap %d), valid UTF-8 %v", len(tw.lines), len(tail), 30*(maxKeptLine+1), utf8.ValidString(tail))
	}
	if cap(tw.lines) > 64 {
		t.Fatalf("the line slice grew to %d", cap(tw.lines))
	}
}

// Short output is kept as written.
func TestTailWriterShortLines(t *testing.T) {
	tw := &tailWriter{max: 2}
	tw.Write([]byte("a\nb"))
	tw.Write([]byte("c\nd\npart"))
	if got := tw.Tail(); got != "bc\nd\npart" {
		t.Fatalf("Tail = %q", got)
	}
}

package migrations

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// sizeWriter records the size of each write and keeps nothing else.
type sizeWriter struct {
	writes  int
	largest int
	last    string
}

func (w *sizeWriter) Write(p []byte) (int, error) {
	w.writes++
	w.largest = max(w.largest, len(p))
	w.last = string(p)
	return len(p), nil
}

// endless is n bytes of c with no newline, then tail, generated as read
// so the test itself holds no megabytes.
type endless struct {
	n    int
	c    byte
	tail *strings.Reader
}

func (e *endless) Read(p []byte) (int, error) {
	if e.n == 0 {
		return e.tail.Read(p)
	}
	k := min(len(p), e.n)
	for i := range p[:k] {
		p[i] = e.c
	}
	e.n -= k
	return k, nil
}

const progressBytes = 16 << 20 // a progress bar that never ends its line

// maxWritten is the most one line may be once cut, marker and newline included.
const maxWritten = maxLineBytes + 64

// readCappedLine keeps at most maxLineBytes of a line however long it is.
func TestReadCappedLine(t *testing.T) {
	br := bufio.NewReaderSize(&endless{n: progressBytes, c: '#', tail: strings.NewReader("\nnext\n")}, 64<<10)
	line, cut, err := readCappedLine(br)
	if err != nil || len(line) != maxLineBytes+1 || !strings.HasSuffix(line, "#\n") || cut != progressBytes-maxLineBytes {
		t.Fatalf("readCappedLine = %d bytes, cut %d, %v", len(line), cut, err)
	}
	if line, cut, err = readCappedLine(br); line != "next\n" || cut != 0 || err != nil {
		t.Fatalf("next line = %q, %d, %v", line, cut, err)
	}
	// A cut never splits a rune.
	br = bufio.NewReader(strings.NewReader("a" + strings.Repeat("é", maxLineBytes)))
	line, cut, err = readCappedLine(br)
	if !utf8.ValidString(line) || len(line) > maxLineBytes || cut == 0 || err != io.EOF {
		t.Fatalf("utf-8 line: valid %v, %d bytes, cut %d, %v", utf8.ValidString(line), len(line), cut, err)
	}
}

// The down command's output: megabytes without a newline reach the writer
// as one line of bounded size, marked as cut, and the next line follows.
func TestCopyLinesCapsLines(t *testing.T) {
	var w sizeWriter
	err := copyLines(&w, &endless{n: progressBytes, c: '#', tail: strings.NewReader("\ndone\n")}, nil)
	if err != nil || w.writes != 2 || w.largest > maxWritten || w.last != "done\n" {
		t.Fatalf("copyLines = %v: %d writes, largest %d bytes (cap %d), last %q", err, w.writes, w.largest, maxWritten, w.last)
	}
}

// A line cut in the middle of a secret shows none of it.
func TestCopyLinesCutDoesNotShowPartOfASecret(t *testing.T) {
	const secret = "Pa55-w0rd-very-secret"
	in := strings.Repeat("x", maxLineBytes-5) + secret + strings.Repeat("y", 100) + "\n"
	var out lines
	if err := copyLines(&out, strings.NewReader(in), []string{secret}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.Contains(got, secret[:5]) || !strings.Contains(got, "line cut") {
		t.Fatalf("cut line ends %q", got[max(0, len(got)-80):])
	}
}

// The Job's log stream: same cap.
func TestCopyNewLinesCapsLines(t *testing.T) {
	var w sizeWriter
	n, ended, err := copyNewLines(&w, &endless{n: progressBytes, c: '=', tail: strings.NewReader("\n100%\n")}, 0)
	if err != nil || !ended || n != 2 || w.writes != 2 || w.largest > maxWritten || w.last != "100%\n" {
		t.Fatalf("copyNewLines = %d %v %v: %d writes, largest %d bytes (cap %d), last %q", n, ended, err, w.writes, w.largest, maxWritten, w.last)
	}
}

// A real command printing 16 MiB without a newline: RunDown passes on a
// bounded line.
func TestRunDownCapsLongLines(t *testing.T) {
	var w sizeWriter
	cfg := DownConfig{Kind: DownCommand, Timeout: time.Minute, Command: []string{"sh", "-c",
		`head -c 16777216 /dev/zero | tr '\0' '#'; echo; echo done`}}
	if err := RunDown(context.Background(), cfg, "RB-1", nil, &w); err != nil {
		t.Fatalf("RunDown: %v", err)
	}
	if w.writes != 2 || w.largest > maxWritten || w.last != "done\n" {
		t.Fatalf("%d writes, largest %d bytes (cap %d), last %q", w.writes, w.largest, maxWritten, w.last)
	}
}

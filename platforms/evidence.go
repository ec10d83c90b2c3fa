package platforms

import (
	"fmt"
	"strings"
)

// WithDefaults fills the zero limits with the defaults.
func (l CaptureLimits) WithDefaults() CaptureLimits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.Units, 3)
	def(&l.Lines, 200)
	def(&l.SourceBytes, 64<<10)
	def(&l.TotalBytes, 512<<10)
	return l
}

// Validate checks the limits; errors name the field.
func (l CaptureLimits) Validate() error {
	switch {
	case l.Units < 0 || l.Units > 50:
		return fmt.Errorf("units: %d is not between 1 and 50", l.Units)
	case l.Lines < 0 || l.Lines > 10000:
		return fmt.Errorf("lines: %d is not between 1 and 10000", l.Lines)
	case l.SourceBytes < 0 || l.SourceBytes > 1<<20:
		return fmt.Errorf("source_bytes: %d is not between 1 and 1 MiB", l.SourceBytes)
	case l.TotalBytes < 0 || l.TotalBytes > 4<<20:
		return fmt.Errorf("total_bytes: %d is not between 1 and 4 MiB", l.TotalBytes)
	}
	return nil
}

// TailBuffer is an io.Writer that keeps only the last Max bytes written:
// a log of any size streams through it in bounded memory.
type TailBuffer struct {
	Max     int
	b       []byte
	dropped bool
}

// Write keeps the tail; it never fails.
func (t *TailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if t.Max <= 0 {
		t.dropped = t.dropped || n > 0
		return n, nil
	}
	if len(p) >= t.Max {
		t.dropped = t.dropped || len(p) > t.Max || len(t.b) > 0
		t.b = append(t.b[:0], p[len(p)-t.Max:]...)
		return n, nil
	}
	if over := len(t.b) + len(p) - t.Max; over > 0 {
		t.dropped = true
		t.b = append(t.b[:0], t.b[over:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

// String is the kept tail.
func (t *TailBuffer) String() string { return string(t.b) }

// Dropped reports whether older bytes were cut.
func (t *TailBuffer) Dropped() bool { return t.dropped }

// Clip keeps the last lines lines and the last max bytes of s, starting at
// a line boundary when bytes were cut; truncated says whether anything was.
func Clip(s string, lines, max int) (out string, truncated bool) {
	s = strings.TrimRight(s, "\n")
	if lines > 0 {
		cut := len(s)
		for n := 0; n < lines && cut > 0; n++ {
			i := strings.LastIndexByte(s[:cut], '\n')
			if i < 0 {
				cut = -1
				break
			}
			cut = i
		}
		if cut >= 0 && cut < len(s) {
			s, truncated = s[cut+1:], true
		}
	}
	if max > 0 && len(s) > max {
		s, truncated = s[len(s)-max:], true
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
	}
	return s, truncated
}

// Add appends a source clipped to the limits.
func (e *Evidence) Add(lim CaptureLimits, name, kind, text string, truncated bool) {
	t, cut := Clip(text, lim.Lines, lim.SourceBytes)
	e.Sources = append(e.Sources, EvidenceSource{Name: name, Kind: kind, Text: t, Truncated: truncated || cut})
}

// Missed records what could not be captured.
func (e *Evidence) Missed(format string, args ...any) {
	e.Missing = append(e.Missing, fmt.Sprintf(format, args...))
}

// Size is the bytes of text kept.
func (e Evidence) Size() int {
	n := 0
	for _, s := range e.Sources {
		n += len(s.Name) + len(s.Text)
	}
	return n
}

// Cap keeps the evidence within total bytes: sources are kept in order
// until the budget runs out; the rest is cut to what fits, or dropped and
// named in Missing.
func (e *Evidence) Cap(total int) {
	if total <= 0 || e.Size() <= total {
		return
	}
	left := total
	var kept []EvidenceSource
	for _, s := range e.Sources {
		need := len(s.Name) + len(s.Text)
		switch {
		case need <= left:
			kept = append(kept, s)
			left -= need
		case left-len(s.Name) >= 256:
			s.Text, _ = Clip(s.Text, 0, left-len(s.Name))
			s.Truncated = true
			kept = append(kept, s)
			left = 0
		default:
			e.Missed("%s: left out, the capture reached its total size limit (%d bytes)", s.Name, total)
		}
	}
	e.Sources = kept
}

// Text renders the evidence as one plain-text file.
func (e Evidence) Text(header string) string {
	var b strings.Builder
	if header != "" {
		b.WriteString(header)
		b.WriteString("\n\n")
	}
	for _, s := range e.Sources {
		fmt.Fprintf(&b, "===== %s (%s", s.Name, s.Kind)
		if s.Truncated {
			b.WriteString(", older lines cut")
		}
		b.WriteString(") =====\n")
		if s.Text == "" {
			b.WriteString("(empty)\n")
		} else {
			b.WriteString(s.Text)
			if !strings.HasSuffix(s.Text, "\n") {
				b.WriteByte('\n')
			}
		}
		b.WriteByte('\n')
	}
	if len(e.Missing) > 0 {
		b.WriteString("===== not captured =====\n")
		for _, m := range e.Missing {
			b.WriteString("- " + m + "\n")
		}
	}
	return b.String()
}

// AtLineLimit reports whether a log tail read with a line limit has as
// many lines as the limit: older lines were probably left out.
func AtLineLimit(text string, lines int) bool {
	return lines > 0 && strings.Count(strings.TrimRight(text, "\n"), "\n")+1 >= lines
}

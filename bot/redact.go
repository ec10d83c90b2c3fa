package bot

import (
	"context"
	"log/slog"
	"strings"
)

// RedactHandler replaces every occurrence of the given secrets in log
// messages and string attributes with "[REDACTED]": a last line of
// defence, so a token that slips into an error never reaches the log.
type RedactHandler struct {
	next    slog.Handler
	secrets []string
}

// NewRedactHandler wraps next; empty and very short secrets are ignored.
func NewRedactHandler(next slog.Handler, secrets ...string) *RedactHandler {
	var s []string
	for _, v := range secrets {
		if len(v) >= 6 {
			s = append(s, v)
		}
	}
	return &RedactHandler{next: next, secrets: s}
}

func (h *RedactHandler) redact(v string) string {
	for _, s := range h.secrets {
		v = strings.ReplaceAll(v, s, "[REDACTED]")
	}
	return v
}

func (h *RedactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.redact(v.String()))
	case slog.KindGroup:
		g := v.Group()
		out := make([]any, len(g))
		for i, x := range g {
			out[i] = h.attr(x)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, h.redact(err.Error()))
		}
		return slog.String(a.Key, h.redact(v.String()))
	}
	return a
}

func (h *RedactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *RedactHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, h.redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, nr)
}

func (h *RedactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = h.attr(a)
	}
	return &RedactHandler{next: h.next.WithAttrs(out), secrets: h.secrets}
}

func (h *RedactHandler) WithGroup(name string) slog.Handler {
	return &RedactHandler{next: h.next.WithGroup(name), secrets: h.secrets}
}

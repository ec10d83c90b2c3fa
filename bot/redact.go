package bot

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"rollbot/handlers"
)

// redactedMark replaces a secret.
const redactedMark = "[REDACTED]"

// minSecretLen: shorter values are not redacted (they would blank out
// ordinary words).
const minSecretLen = 6

// Redactor replaces known secret values in text, also in the forms they
// take inside URLs (percent-encoded) and JSON (escaped).
type Redactor struct {
	secrets []string // longest first, so a secret containing another goes whole
}

// NewRedactor knows secrets and their encoded forms; empty and very short
// values are ignored.
func NewRedactor(secrets ...string) *Redactor {
	var out []string
	add := func(s string) {
		if len(s) >= minSecretLen && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, s := range secrets {
		if len(s) < minSecretLen {
			continue
		}
		add(s)
		add(url.QueryEscape(s))
		add(url.PathEscape(s))
		add(strings.TrimPrefix(url.UserPassword("", s).String(), ":")) // userinfo escaping
		if b, err := json.Marshal(s); err == nil {
			add(string(b[1 : len(b)-1]))
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return &Redactor{secrets: out}
}

// String returns s with every known secret replaced by [REDACTED].
func (r *Redactor) String(s string) string {
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, redactedMark)
		}
	}
	return s
}

// Secrets collects every secret value rollbot can know, for the log and
// Slack redactors: the environment's (Env.Secrets), REDIS_URL and its
// password as written (percent-encoded), and the values of the variables
// the config names — metrics token_env, database dsn_env and the down
// command's secret_env — with the passwords inside them, plus the AWS
// secret variables the SDK reads. getenv is os.Getenv.
//
// What rollbot never reads it cannot redact: a kubernetes_job down
// migration gets its secrets from a Kubernetes Secret inside the cluster,
// so the Job's output is posted as the Job writes it.
func Secrets(c *Config, e Env, getenv func(string) string) []string {
	out := slices.Clone(e.Secrets())
	if pw := urlPasswords(e.RedisURL); len(pw) > 0 {
		out = append(out, e.RedisURL)
		out = append(out, pw...)
	}
	var names []string
	if c != nil {
		for _, name := range sortedServiceNames(c) {
			s := c.Services[name]
			if p := s.Metrics.Prometheus; p != nil && p.TokenEnv != "" {
				names = append(names, p.TokenEnv)
			}
			if sc := s.Metrics.Scrape; sc != nil && sc.TokenEnv != "" {
				names = append(names, sc.TokenEnv)
			}
			if r := s.Registry; r != nil && r.PasswordEnv != "" {
				names = append(names, r.PasswordEnv)
			}
			if d := s.Database; d != nil {
				if d.DSNEnv != "" {
					names = append(names, d.DSNEnv)
				}
				for _, ref := range d.Down.SecretEnv {
					if ref.Env != "" {
						names = append(names, ref.Env)
					}
				}
			}
		}
	}
	if c != nil && c.Alertmanager != nil {
		names = append(names, c.Alertmanager.tokenEnv())
	}
	names = append(names, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", GateTokenVar)
	for _, n := range names {
		v := getenv(n)
		if v == "" {
			continue
		}
		out = append(out, v)
		out = append(out, urlPasswords(v)...)
		out = append(out, keyValuePasswords(v)...)
	}
	return out
}

// urlPasswords returns the password of a URL with credentials, decoded
// and as written in the URL (percent-encoded).
func urlPasswords(s string) []string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return nil
	}
	p, ok := u.User.Password()
	if !ok {
		return nil
	}
	out := []string{p}
	// As written: between the first ':' of the userinfo and its '@'.
	if _, rest, ok := strings.Cut(s, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at > 0 {
			if _, raw, ok := strings.Cut(rest[:at], ":"); ok && raw != p {
				out = append(out, raw)
			}
		}
	}
	return out
}

// keyValuePasswords finds password=... in a key=value DSN
// ("host=db user=app password=s3cret").
func keyValuePasswords(s string) []string {
	var out []string
	for _, f := range strings.Fields(s) {
		if v, ok := strings.CutPrefix(f, "password="); ok && v != "" {
			out = append(out, strings.Trim(v, `'"`))
		}
	}
	return out
}

// RedactHandler replaces every occurrence of the given secrets in log
// messages and string attributes with "[REDACTED]": a last line of
// defence, so a token that slips into an error never reaches the log.
type RedactHandler struct {
	next slog.Handler
	r    *Redactor
}

// NewRedactHandler wraps next; empty and very short secrets are ignored.
func NewRedactHandler(next slog.Handler, secrets ...string) *RedactHandler {
	return &RedactHandler{next: next, r: NewRedactor(secrets...)}
}

func (h *RedactHandler) redact(v string) string { return h.r.String(v) }

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
	return &RedactHandler{next: h.next.WithAttrs(out), r: h.r}
}

func (h *RedactHandler) WithGroup(name string) slog.Handler {
	return &RedactHandler{next: h.next.WithGroup(name), r: h.r}
}

// redactChat is the same last line of defence for Slack: every message
// rollbot posts, updates, schedules or shows ephemerally has the known
// secrets replaced, whatever step produced it (an adapter's error text, a
// command's output, a smoke test's).
type redactChat struct {
	handlers.Chat
	r *Redactor
}

func newRedactChat(next handlers.Chat, r *Redactor) handlers.Chat {
	return &redactChat{Chat: next, r: r}
}

// msg redacts the text and the blocks. Blocks are redacted in their JSON
// form and decoded again only when a secret was found, so messages without
// one pass unchanged.
func (c *redactChat) msg(m handlers.Msg) handlers.Msg {
	m.Text = c.r.String(m.Text)
	if len(m.Blocks) == 0 {
		return m
	}
	b, err := json.Marshal(slack.Blocks{BlockSet: m.Blocks})
	if err != nil {
		return handlers.Msg{Text: m.Text}
	}
	red := c.r.String(string(b))
	if red == string(b) {
		return m
	}
	var bs slack.Blocks
	if err := json.Unmarshal([]byte(red), &bs); err != nil {
		// Never post the secret: fall back to the (redacted) text alone.
		return handlers.Msg{Text: m.Text}
	}
	m.Blocks = bs.BlockSet
	return m
}

func (c *redactChat) Post(ctx context.Context, channel, threadTS string, m handlers.Msg) (string, error) {
	return c.Chat.Post(ctx, channel, threadTS, c.msg(m))
}

func (c *redactChat) Update(ctx context.Context, channel, ts string, m handlers.Msg) error {
	return c.Chat.Update(ctx, channel, ts, c.msg(m))
}

func (c *redactChat) Ephemeral(ctx context.Context, channel, user string, m handlers.Msg) error {
	return c.Chat.Ephemeral(ctx, channel, user, c.msg(m))
}

func (c *redactChat) Schedule(ctx context.Context, channel string, at time.Time, m handlers.Msg) error {
	return c.Chat.Schedule(ctx, channel, at, c.msg(m))
}

// Upload redacts the file's name, title, comment and content.
func (c *redactChat) Upload(ctx context.Context, channel, threadTS string, f handlers.File) error {
	f.Name, f.Title, f.Comment = c.r.String(f.Name), c.r.String(f.Title), c.r.String(f.Comment)
	f.Content = []byte(c.r.String(string(f.Content)))
	return c.Chat.Upload(ctx, channel, threadTS, f)
}

package slackemu

import (
	"fmt"
	"html"
	"net/url"
	"strconv"
	"strings"
	"time"
)

func escape(s string) string { return html.EscapeString(s) }

// unslack undoes the three escapes Slack text carries (&amp; &lt; &gt;).
func unslack(s string) string {
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(s)
}

// mrkdwnRenderer turns Slack mrkdwn into HTML for one viewer.
type mrkdwnRenderer struct {
	viewer string
	loc    *time.Location
}

// holder keeps finished HTML fragments out of the way of later passes.
type holder struct{ parts []string }

func (h *holder) put(html string) string {
	h.parts = append(h.parts, html)
	return "\x00" + strconv.Itoa(len(h.parts)-1) + "\x00"
}

func (h *holder) restore(s string) string {
	for i := len(h.parts) - 1; i >= 0; i-- {
		s = strings.ReplaceAll(s, "\x00"+strconv.Itoa(i)+"\x00", h.parts[i])
	}
	return s
}

// render converts mrkdwn: ```pre```, `code`, *bold*, _italic_, ~strike~,
// > quotes, <links|text>, <@U…>, <#C…>, <!subteam^S…>, <!here>, <!date…>,
// :emoji: and line breaks.
func (r mrkdwnRenderer) render(s string) string {
	h := &holder{}
	// Code blocks and inline code first: nothing inside them is formatted.
	s = replaceDelimited(s, "```", func(inner string) string {
		return h.put(`<pre class="sk-pre">` + escape(unslack(strings.Trim(inner, "\n"))) + `</pre>`)
	})
	s = replaceDelimited(s, "`", func(inner string) string {
		if strings.Contains(inner, "\n") {
			return "`" + inner + "`"
		}
		return h.put(`<code class="sk-code">` + escape(unslack(inner)) + `</code>`)
	})
	// Angle-bracket tokens.
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			b.WriteString(s)
			break
		}
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:i])
		b.WriteString(h.put(r.token(s[i+1 : i+j])))
		s = s[i+j+1:]
	}
	s = escape(unslack(b.String()))
	s = replaceEmoji(s, h.put)
	s = wrapMarker(s, '*', "b")
	s = wrapMarker(s, '_', "i")
	s = wrapMarker(s, '~', "s")
	// Block quotes: lines starting with "> " (escaped by now).
	lines := strings.Split(s, "\n")
	var out []string
	var quote []string
	flush := func() {
		if len(quote) > 0 {
			out = append(out, `<blockquote class="sk-quote">`+strings.Join(quote, "<br>")+`</blockquote>`)
			quote = nil
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "&gt; ") || l == "&gt;" {
			quote = append(quote, strings.TrimPrefix(strings.TrimPrefix(l, "&gt;"), " "))
			continue
		}
		flush()
		out = append(out, l)
	}
	flush()
	s = strings.Join(out, "\n")
	s = strings.ReplaceAll(s, "</blockquote>\n", "</blockquote>")
	s = strings.ReplaceAll(s, "\n", "<br>")
	return h.restore(s)
}

// token renders the inside of <...>.
func (r mrkdwnRenderer) token(t string) string {
	target, label, hasLabel := strings.Cut(t, "|")
	switch {
	case strings.HasPrefix(target, "@"):
		return r.userMention(strings.TrimPrefix(target, "@"), label)
	case strings.HasPrefix(target, "#"):
		id := strings.TrimPrefix(target, "#")
		name := label
		if c, ok := findSeedChannel(id); ok {
			name = c.Name
		}
		if name == "" {
			name = id
		}
		return `<span class="mention channel">#` + escape(name) + `</span>`
	case strings.HasPrefix(target, "!subteam^"):
		id := strings.TrimPrefix(target, "!subteam^")
		name := strings.TrimPrefix(label, "@")
		if g, ok := groupByID(id); ok {
			name = g.Handle
		}
		cls := "mention"
		if g, ok := groupByID(id); ok && contains(g.Members, r.viewer) {
			cls += " me"
		}
		return `<span class="` + cls + `">@` + escape(name) + `</span>`
	case target == "!here" || target == "!channel" || target == "!everyone":
		return `<span class="mention me">@` + target[1:] + `</span>`
	case strings.HasPrefix(target, "!date^"):
		return r.date(target, label)
	case strings.HasPrefix(target, "!"):
		return escape(label)
	}
	u, err := url.Parse(unslack(target))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "mailto") {
		return escape("<" + unslack(t) + ">")
	}
	text := unslack(target)
	if hasLabel && label != "" {
		text = unslack(label)
	}
	if u.Scheme == "mailto" && !hasLabel {
		text = u.Opaque
	}
	return `<a href="` + escape(u.String()) + `" target="_blank" rel="noopener">` + escape(text) + `</a>`
}

func (r mrkdwnRenderer) userMention(id, label string) string {
	name := strings.TrimPrefix(label, "@")
	if u, ok := userByID(id); ok {
		name = u.Name
	}
	if name == "" {
		name = id
	}
	cls := "mention"
	if id == r.viewer {
		cls += " me"
	}
	return `<span class="` + cls + `" title="` + escape(id) + `">@` + escape(name) + `</span>`
}

// date renders <!date^unix^format|fallback>.
func (r mrkdwnRenderer) date(target, fallback string) string {
	parts := strings.SplitN(strings.TrimPrefix(target, "!date^"), "^", 3)
	if len(parts) < 2 {
		return escape(fallback)
	}
	sec, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return escape(fallback)
	}
	t := time.Unix(sec, 0).In(r.location())
	out := strings.NewReplacer(
		"{date_num}", t.Format("2006-01-02"), "{date}", t.Format("January 2, 2006"),
		"{date_short}", t.Format("Jan 2, 2006"), "{date_long}", t.Format("Monday, January 2, 2006"),
		"{date_pretty}", t.Format("January 2"), "{date_short_pretty}", t.Format("Jan 2"),
		"{date_long_pretty}", t.Format("Monday, January 2"), "{time}", t.Format("15:04"),
		"{time_secs}", t.Format("15:04:05"), "{ago}", agoText(t),
	).Replace(parts[1])
	return `<span class="sk-date" title="` + escape(t.Format(time.RFC1123)) + `">` + escape(out) + `</span>`
}

func (r mrkdwnRenderer) location() *time.Location {
	if r.loc != nil {
		return r.loc
	}
	return time.UTC
}

func agoText(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute && d > -time.Minute:
		return "just now"
	case d < 0:
		return "in " + (-d).Round(time.Minute).String()
	case d < time.Hour:
		return fmt.Sprintf("%d minutes ago", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%d hours ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

func findSeedChannel(id string) (Channel, bool) {
	for _, c := range seedChannels {
		if c.ID == id {
			return c, true
		}
	}
	return Channel{}, false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// replaceDelimited replaces every delim…delim span with fn(inner).
func replaceDelimited(s, delim string, fn func(string) string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, delim)
		if i < 0 {
			break
		}
		j := strings.Index(s[i+len(delim):], delim)
		if j < 0 || j == 0 {
			break
		}
		b.WriteString(s[:i])
		b.WriteString(fn(s[i+len(delim) : i+len(delim)+j]))
		s = s[i+len(delim)+j+len(delim):]
	}
	b.WriteString(s)
	return b.String()
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// wrapMarker wraps c…c spans in <tag>: the opening marker must follow a
// non-word character and precede a non-space, the closing one the reverse,
// both on one line, as Slack formats.
func wrapMarker(s string, c byte, tag string) string {
	var b strings.Builder
	i := 0
	for i < len(s) {
		if s[i] != c || (i > 0 && (isWordByte(s[i-1]) || s[i-1] == c)) || i+1 >= len(s) || s[i+1] == ' ' || s[i+1] == '\n' || s[i+1] == c {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := -1
		for j := i + 1; j < len(s) && s[j] != '\n'; j++ {
			if s[j] == c && s[j-1] != ' ' && (j+1 == len(s) || !isWordByte(s[j+1])) {
				end = j
				break
			}
		}
		if end < 0 {
			b.WriteByte(s[i])
			i++
			continue
		}
		b.WriteString("<" + tag + ">" + s[i+1:end] + "</" + tag + ">")
		i = end + 1
	}
	return b.String()
}

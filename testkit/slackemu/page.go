package slackemu

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"
)

//go:embed page/*
var pageFiles embed.FS

var pageTmpl = template.Must(template.New("page").ParseFS(pageFiles, "page/*.html"))

const viewerCookie = "slackemu_as"

func (s *Server) routePage(mux *http.ServeMux) {
	static, _ := fs.Sub(pageFiles, "page")
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.handlePage)
	mux.HandleFunc("GET /ui/events", s.handleEvents)
	mux.HandleFunc("POST /ui/send", s.handleSend)
	mux.HandleFunc("POST /ui/click", s.handleClick)
	mux.HandleFunc("POST /ui/submit", s.handleSubmit)
	mux.HandleFunc("POST /ui/close", s.handleCloseView)
	mux.HandleFunc("GET /archives/{channel}/{p}", func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.PathValue("p"), "p")
		if len(p) > 6 {
			p = p[:len(p)-6] + "." + p[len(p)-6:]
		}
		http.Redirect(w, r, "/?channel="+r.PathValue("channel")+"#m-"+strings.ReplaceAll(p, ".", "-"), http.StatusFound)
	})
}

// viewerOf picks the acting user: ?as=, then the cookie, then alice.
func viewerOf(r *http.Request) User {
	for _, id := range []string{r.URL.Query().Get("as"), cookieValue(r, viewerCookie)} {
		if u, ok := userByID(id); ok && !u.IsBot {
			return u
		}
	}
	u, _ := userByID(UserAlice)
	return u
}

func cookieValue(r *http.Request, name string) string {
	if c, err := r.Cookie(name); err == nil {
		return c.Value
	}
	return ""
}

func (s *Server) channelOf(r *http.Request) Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.st.channelByID(r.URL.Query().Get("channel")); ok {
		return c
	}
	c, _ := s.st.channelByID(ChannelIncident)
	return c
}

type chanLink struct {
	ID, Label, Icon string
	Active          bool
}

type userOpt struct {
	User
	Initials string
	Roles    string
	Selected bool
}

type pageData struct {
	Viewer    userOpt
	Channel   Channel
	Title     string
	Topic     string
	Channels  []chanLink
	DMs       []chanLink
	Users     []userOpt
	Groups    []groupView
	State     pageState
	AckWindow string
	APIURL    string
}

type groupView struct {
	Handle  string
	Members string
}

// pageState is what the SSE stream sends on every change.
type pageState struct {
	Messages  template.HTML `json:"messages"`
	Modal     template.HTML `json:"modal"`
	ModalKey  string        `json:"modalKey"`
	ModalView string        `json:"modalView"`
	Status    template.HTML `json:"status"`
	Scheduled template.HTML `json:"scheduled"`
}

func initials(u User) string {
	if u.IsBot {
		return "🤖"
	}
	parts := strings.Fields(u.RealName)
	out := ""
	for _, p := range parts {
		out += strings.ToUpper(p[:1])
		if len(out) == 2 {
			break
		}
	}
	return out
}

func rolesOf(id string) string {
	var roles []string
	for _, g := range seedGroups {
		if contains(g.Members, id) {
			roles = append(roles, "@"+g.Handle)
		}
	}
	if len(roles) == 0 {
		return "viewer"
	}
	return strings.Join(roles, ", ")
}

func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	viewer := viewerOf(r)
	c := s.channelOf(r)
	http.SetCookie(w, &http.Cookie{Name: viewerCookie, Value: viewer.ID, Path: "/", SameSite: http.SameSiteLaxMode})
	d := pageData{
		Viewer:    userOpt{User: viewer, Initials: initials(viewer), Roles: rolesOf(viewer.ID)},
		Channel:   c,
		Title:     channelTitle(c),
		Topic:     c.Topic,
		State:     s.renderState(c.ID, viewer),
		AckWindow: s.opts.AckTimeout.String(),
		APIURL:    s.APIURL(),
	}
	s.mu.Lock()
	for _, ch := range s.st.channelsFor(viewer.ID) {
		l := chanLink{ID: ch.ID, Label: channelTitle(ch), Icon: "#", Active: ch.ID == c.ID}
		if ch.IsIM {
			l.Icon, l.Label = "🤖", "rollbot"
			d.DMs = append(d.DMs, l)
		} else {
			l.Label = ch.Name
			d.Channels = append(d.Channels, l)
		}
	}
	s.mu.Unlock()
	if c.IsIM {
		d.Topic = "Direct messages between you and rollbot"
	}
	for _, u := range seedUsers {
		if !u.IsBot {
			d.Users = append(d.Users, userOpt{User: u, Initials: initials(u), Roles: rolesOf(u.ID), Selected: u.ID == viewer.ID})
		}
	}
	for _, g := range seedGroups {
		var names []string
		for _, m := range g.Members {
			names = append(names, userName(m))
		}
		d.Groups = append(d.Groups, groupView{Handle: g.Handle, Members: strings.Join(names, ", ")})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := pageTmpl.ExecuteTemplate(w, "page.html", d); err != nil {
		s.log.Error("render page", "err", err)
	}
}

func channelTitle(c Channel) string {
	if c.IsIM {
		return "rollbot"
	}
	return c.Name
}

// msgView is one message as the page shows it.
type msgView struct {
	TS, Anchor      string
	Author          userOpt
	Continuation    bool
	Time, TimeTitle string
	Body            template.HTML
	Edited          bool
	Ephemeral       bool
	HiddenFor       string // an ephemeral message for someone else: only a note
	Reactions       []reactionView
	Replies         []msgView
	DayDivider      string
}

type reactionView struct {
	Emoji template.HTML
	Name  string
	Count int
	Mine  bool
}

type scheduledView struct {
	Text string
	When string
}

// renderState renders the channel, the viewer's modal and the status line.
func (s *Server) renderState(channel string, viewer User) pageState {
	loc := time.FixedZone(viewer.TZ, viewer.TZOffset)
	md := mrkdwnRenderer{viewer: viewer.ID, loc: loc}
	s.mu.Lock()
	var msgs []*storedMsg
	for _, m := range s.st.msgs[channel] {
		c := *m
		c.Message = m.export()
		c.reactions = append([]reaction(nil), m.reactions...)
		msgs = append(msgs, &c)
	}
	var modal *storedView
	if v := s.st.topView(viewer.ID); v != nil {
		c := *v
		c.View = v.export()
		modal = &c
	}
	depth := len(s.st.stacks[viewer.ID])
	var sched []scheduledView
	for _, sm := range s.st.scheduled {
		if sm.Channel == channel && !sm.Posted && !sm.Deleted {
			text := sm.Text
			if text == "" {
				text = "(blocks)"
			}
			if len([]rune(text)) > 90 {
				text = string([]rune(text)[:90]) + "…"
			}
			sched = append(sched, scheduledView{Text: text, When: sm.PostAt.In(loc).Format("Mon Jan 2 at 15:04 MST")})
		}
	}
	s.mu.Unlock()
	conns := s.Connections()

	var st pageState
	st.Messages = s.renderMessages(msgs, viewer, md, loc)
	if modal != nil {
		// Buttons inside modals (block_actions from a view) are not
		// emulated: they render disabled.
		br := &blockRenderer{md: md, modal: true, errors: modal.Errors}
		body := br.blocks(modal.Blocks)
		errs, _ := json.Marshal(modal.Errors)
		st.ModalKey = modal.ID + "|" + modal.Hash + "|" + string(errs)
		st.ModalView = modal.ID
		st.Modal = execTmpl("modal", map[string]any{"V": modal, "Body": template.HTML(body), "Depth": depth})
	}
	st.Status = execTmpl("status", map[string]any{"Connections": conns})
	st.Scheduled = execTmpl("scheduled", sched)
	return st
}

func execTmpl(name string, data any) template.HTML {
	var b strings.Builder
	if err := pageTmpl.ExecuteTemplate(&b, name, data); err != nil {
		return template.HTML("<!-- " + template.HTMLEscapeString(err.Error()) + " -->")
	}
	return template.HTML(b.String())
}

func (s *Server) renderMessages(msgs []*storedMsg, viewer User, md mrkdwnRenderer, loc *time.Location) template.HTML {
	view := func(m *storedMsg) msgView {
		author, _ := userByID(m.User)
		if author.ID == "" {
			author = User{ID: m.User, Name: m.User, RealName: m.User, Color: "#888"}
		}
		clock, title := formatClock(m.TS, loc)
		v := msgView{
			TS: m.TS, Anchor: "m-" + strings.ReplaceAll(m.TS, ".", "-"),
			Author: userOpt{User: author, Initials: initials(author)},
			Time:   clock, TimeTitle: title, Edited: m.Edited, Ephemeral: m.Ephemeral,
		}
		if m.Ephemeral && m.EphemeralFor != viewer.ID {
			v.HiddenFor = userName(m.EphemeralFor)
			return v
		}
		br := &blockRenderer{md: md, interactive: true}
		var body string
		if len(m.Blocks) > 0 {
			body = br.blocks(m.Blocks)
		} else if m.Text != "" {
			body = `<div class="sk-text">` + md.render(m.Text) + `</div>`
		}
		if len(m.Attachments) > 0 {
			ar := &blockRenderer{md: md, interactive: true}
			body += ar.attachments(m.Attachments)
		}
		body += filesHTML(m.files)
		if m.Edited {
			// "(edited)" goes at the end of the last block, as Slack shows it.
			i := len(body)
			for strings.HasSuffix(body[:i], "</div>") {
				i -= len("</div>")
			}
			if i == len(body) || strings.HasSuffix(body[:i], "</table>") {
				i = len(body)
			}
			body = body[:i] + `<span class="edited">(edited)</span>` + body[i:]
		}
		v.Body = template.HTML(body)
		for _, r := range m.reactions {
			v.Reactions = append(v.Reactions, reactionView{
				Emoji: template.HTML(emojiHTML(r.name, "")), Name: r.name, Count: len(r.users), Mine: contains(r.users, viewer.ID),
			})
		}
		return v
	}
	// Thread replies go under their parent; orphans stay top level.
	byTS := map[string]bool{}
	for _, m := range msgs {
		if !m.Deleted && m.ThreadTS == "" {
			byTS[m.TS] = true
		}
	}
	replies := map[string][]*storedMsg{}
	var top []*storedMsg
	for _, m := range msgs {
		if m.Deleted {
			continue
		}
		if m.ThreadTS != "" && m.ThreadTS != m.TS && byTS[m.ThreadTS] {
			replies[m.ThreadTS] = append(replies[m.ThreadTS], m)
			continue
		}
		top = append(top, m)
	}
	var out []msgView
	var prev *storedMsg
	lastDay := ""
	for _, m := range top {
		v := view(m)
		day := dayLabel(m.TS, loc)
		if day != lastDay {
			v.DayDivider = day
			lastDay = day
			prev = nil
		}
		if prev != nil && prev.User == m.User && !m.Ephemeral && !prev.Ephemeral && len(replies[prev.TS]) == 0 &&
			tsTime(m.TS).Sub(tsTime(prev.TS)) < 5*time.Minute {
			v.Continuation = true
		}
		var rs []*storedMsg
		rs = append(rs, replies[m.TS]...)
		sort.Slice(rs, func(i, j int) bool { return rs[i].TS < rs[j].TS })
		for _, r := range rs {
			v.Replies = append(v.Replies, view(r))
		}
		out = append(out, v)
		prev = m
	}
	return execTmpl("messages", out)
}

func tsTime(ts string) time.Time {
	var sec, usec int64
	fmt.Sscanf(ts, "%d.%d", &sec, &usec)
	return time.Unix(sec, usec*1000)
}

func dayLabel(ts string, loc *time.Location) string {
	t := tsTime(ts).In(loc)
	now := time.Now().In(loc)
	y1, m1, d1 := t.Date()
	y2, m2, d2 := now.Date()
	switch {
	case y1 == y2 && m1 == m2 && d1 == d2:
		return "Today"
	case now.Sub(t) < 48*time.Hour && now.AddDate(0, 0, -1).Day() == d1:
		return "Yesterday"
	}
	return t.Format("Monday, January 2")
}

// handleEvents streams pageState over SSE whenever something changes.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	viewer := viewerOf(r)
	c := s.channelOf(r)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 1000\n\n")
	fl.Flush()
	last := ""
	keepalive := time.NewTicker(20 * time.Second)
	defer keepalive.Stop()
	for {
		s.mu.Lock()
		changed := s.st.changed
		s.mu.Unlock()
		st := s.renderState(c.ID, viewer)
		b, _ := json.Marshal(st)
		if string(b) != last {
			last = string(b)
			if _, err := fmt.Fprintf(w, "event: state\ndata: %s\n\n", b); err != nil {
				return
			}
			fl.Flush()
		}
		select {
		case <-changed:
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-r.Context().Done():
			return
		case <-s.close:
			return
		}
	}
}

// uiReq is the body of the page's POSTs.
type uiReq struct {
	As      string                       `json:"as"`
	Channel string                       `json:"channel"`
	Text    string                       `json:"text"`
	TS      string                       `json:"ts"`
	Action  string                       `json:"action"`
	View    string                       `json:"view"`
	Values  map[string]map[string]string `json:"values"`
}

func readUI(r *http.Request) (uiReq, User, error) {
	var req uiReq
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		return req, User{}, fmt.Errorf("bad request: %w", err)
	}
	u, ok := userByID(req.As)
	if !ok || u.IsBot {
		return req, User{}, fmt.Errorf("unknown user %q", req.As)
	}
	return req, u, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func uiFail(w http.ResponseWriter, msg string) {
	writeJSON(w, map[string]any{"ok": false, "error": msg})
}

// uiCtx bounds a page action by the ack window.
func (s *Server) uiCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.opts.AckTimeout+2*time.Second)
}

// handleSend runs the composer: "/command text" or a plain message.
func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	req, u, err := readUI(r)
	if err != nil {
		uiFail(w, err.Error())
		return
	}
	text := strings.TrimSpace(req.Text)
	if text == "" {
		uiFail(w, "type a message or a /command")
		return
	}
	ctx, cancel := s.uiCtx(r)
	defer cancel()
	if strings.HasPrefix(text, "/") {
		cmd, args, _ := strings.Cut(text, " ")
		if s.Connections() == 0 {
			uiFail(w, fmt.Sprintf("%s failed with the error \"dispatch_failed\": the app is not connected (no Socket Mode connection)", cmd))
			return
		}
		if err := s.SlashCommand(ctx, u.ID, req.Channel, cmd, strings.TrimSpace(args)); err != nil {
			reason := "dispatch_failed"
			if errors.Is(err, ErrNotAcked) {
				reason = "operation_timeout"
			}
			uiFail(w, fmt.Sprintf("%s failed with the error \"%s\" (%v)", cmd, reason, err))
			return
		}
		writeJSON(w, map[string]any{"ok": true})
		return
	}
	_, mention, err := s.storeUserMessage(u.ID, req.Channel, encodeMentions(text))
	if err != nil {
		uiFail(w, err.Error())
		return
	}
	if mention != nil {
		// The page does not wait for the app: deliver in the background.
		s.bgWG.Go(func() {
			if err := s.SendEvent(s.bg, mention); err != nil && s.bg.Err() == nil {
				s.log.Warn("app_mention from the page", "err", err)
			}
		})
	}
	writeJSON(w, map[string]any{"ok": true})
}

var atRE = regexp.MustCompile(`(^|[\s(])@([a-z0-9._-]+)`)

// encodeMentions escapes text as the Slack client does and turns @name
// into <@U…> (users) or <!subteam^S…|@handle> (groups).
func encodeMentions(text string) string {
	text = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(text)
	return atRE.ReplaceAllStringFunc(text, func(m string) string {
		sub := atRE.FindStringSubmatch(m)
		if u, ok := userByName(sub[2]); ok {
			return sub[1] + "<@" + u.ID + ">"
		}
		if g, ok := groupByHandle(sub[2]); ok {
			return sub[1] + "<!subteam^" + g.ID + "|@" + g.Handle + ">"
		}
		if sub[2] == "here" || sub[2] == "channel" {
			return sub[1] + "<!" + sub[2] + ">"
		}
		return m
	})
}

func (s *Server) handleClick(w http.ResponseWriter, r *http.Request) {
	req, u, err := readUI(r)
	if err != nil {
		uiFail(w, err.Error())
		return
	}
	ctx, cancel := s.uiCtx(r)
	defer cancel()
	if s.Connections() == 0 {
		uiFail(w, "rollbot is not connected, so nothing handles this button")
		return
	}
	if err := s.ClickButton(ctx, u.ID, req.Channel, req.TS, req.Action); err != nil {
		uiFail(w, err.Error())
		return
	}
	writeJSON(w, map[string]any{"ok": true})
}

func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) {
	req, u, err := readUI(r)
	if err != nil {
		uiFail(w, err.Error())
		return
	}
	ctx, cancel := s.uiCtx(r)
	defer cancel()
	ack, err := s.SubmitView(ctx, u.ID, req.View, req.Values)
	if err != nil {
		uiFail(w, err.Error())
		return
	}
	writeJSON(w, map[string]any{"ok": true, "ack": map[string]any{
		"response_action": ack.ResponseAction, "errors": ack.Errors, "from_client": ack.FromClient,
	}})
}

func (s *Server) handleCloseView(w http.ResponseWriter, r *http.Request) {
	req, u, err := readUI(r)
	if err != nil {
		uiFail(w, err.Error())
		return
	}
	ctx, cancel := s.uiCtx(r)
	defer cancel()
	if err := s.CloseView(ctx, u.ID, req.View); err != nil {
		uiFail(w, err.Error())
		return
	}
	writeJSON(w, map[string]any{"ok": true})
}

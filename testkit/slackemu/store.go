package slackemu

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Message is the current state of a stored message. Updates change it in
// place (Edited), chat.delete and delete_original mark it Deleted.
type Message struct {
	Channel      string
	TS           string
	ThreadTS     string // parent ts for a thread reply, empty otherwise
	User         string // author: BotUserID for the bot's messages
	BotID        string // BotID for the bot's messages
	Text         string
	Blocks       json.RawMessage // as stored (block_ids assigned); nil without blocks
	Attachments  json.RawMessage // legacy attachments, if any
	Ephemeral    bool
	EphemeralFor string // the only user who sees an ephemeral message
	Edited       bool
	Deleted      bool
	Reactions    []string // reaction names, in the order first added
	// Files were shared with the message (files.completeUploadExternal).
	Files []File
}

// View is a modal opened with views.open (or pushed, or updated).
type View struct {
	ID              string
	User            string // whom it is open for
	Type            string
	CallbackID      string
	ExternalID      string
	PrivateMetadata string
	Title           string
	Submit          string
	Close           string
	Blocks          json.RawMessage
	Hash            string
	RootViewID      string
	PreviousViewID  string
	Errors          map[string]string // inline errors from the last response_action "errors"
	Open            bool
	NotifyOnClose   bool
}

// ScheduledMessage was recorded by chat.scheduleMessage. It is posted to the
// channel at PostAt while the server runs.
type ScheduledMessage struct {
	ID       string
	Channel  string
	PostAt   time.Time
	ThreadTS string
	Text     string
	Blocks   json.RawMessage
	Posted   bool   // the message was posted at PostAt
	TS       string // ts of the posted message
	Deleted  bool   // removed with chat.deleteScheduledMessage
}

// Call is one Web API request as the server saw it; posts to a
// response_url are recorded too, with Method "response_url".
type Call struct {
	Method string
	// Params are the form fields, or the top-level fields of a JSON body
	// (non-string values as JSON text). The token is redacted.
	Params map[string]string
	Time   time.Time
	// Error is the Slack error code answered ("" when ok), "ratelimited"
	// for a 429.
	Error string
}

// ViewAck is the app's acknowledgement of a view_submission.
type ViewAck struct {
	ResponseAction string            // "", "errors", "update", "push" or "clear"
	Errors         map[string]string // block_id → message, for "errors"
	View           json.RawMessage   // for "update" and "push"
	// FromClient is true when the Slack client itself refused the
	// submission (a required field was empty or a length limit was broken)
	// and the app never saw it; Errors says why.
	FromClient bool
}

// storedMsg is a message with the bookkeeping the exported copy omits.
type storedMsg struct {
	Message
	reactions []reaction
	files     []*File
	editedTS  string
	created   time.Time
}

type reaction struct {
	name  string
	users []string
}

type storedView struct {
	View
	title, submit, closeBtn json.RawMessage // text objects as sent
	clearOnClose            bool
	state                   map[string]map[string]any // last submitted values
}

type trigger struct {
	user, channel string
	created       time.Time
	used          bool
}

// responseTarget is what a response_url acts on.
type responseTarget struct {
	channel   string
	user      string // who triggered it: ephemeral replies go to them
	messageTS string // the message a block action came from ("" for commands)
	threadTS  string
	ephemeral bool // the original message is ephemeral
	uses      int
	created   time.Time
}

type store struct {
	msgs      map[string][]*storedMsg // channel → messages in ts order
	views     []*storedView
	stacks    map[string][]string // user → open view IDs, bottom first
	scheduled []*ScheduledMessage
	calls     []Call
	files     map[string]*File
	triggers  map[string]*trigger
	responses map[string]*responseTarget
	dms       map[string]Channel
	timers    []*time.Timer
	lastTS    int64 // microseconds
	seq       int64
	changed   chan struct{} // closed and replaced on every change
	version   uint64
}

func (st *store) init() {
	st.msgs = map[string][]*storedMsg{}
	st.stacks = map[string][]string{}
	st.triggers = map[string]*trigger{}
	st.responses = map[string]*responseTarget{}
	st.dms = map[string]Channel{}
	st.changed = make(chan struct{})
}

// notify wakes every waiter (WaitForMessage, SSE streams). Callers hold s.mu.
func (st *store) notify() {
	st.version++
	close(st.changed)
	st.changed = make(chan struct{})
}

func (st *store) stopTimers() {
	for _, t := range st.timers {
		t.Stop()
	}
	st.timers = nil
}

// nextTS returns a message ts strictly greater than every earlier one.
func (st *store) nextTS() string {
	now := time.Now().UnixMicro()
	if now <= st.lastTS {
		now = st.lastTS + 1
	}
	st.lastTS = now
	return fmt.Sprintf("%d.%06d", now/1_000_000, now%1_000_000)
}

// nextID returns prefix followed by a fresh upper-case ID.
func (st *store) nextID(prefix string) string {
	st.seq++
	return fmt.Sprintf("%s%08X", prefix, st.seq)
}

// randomToken returns n random alphanumerics (block IDs, trigger IDs).
func randomToken(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func (st *store) addMessage(m *storedMsg) {
	m.created = time.Now()
	st.msgs[m.Channel] = append(st.msgs[m.Channel], m)
	st.notify()
}

func (st *store) find(channel, ts string) *storedMsg {
	for _, m := range st.msgs[channel] {
		if m.TS == ts {
			return m
		}
	}
	return nil
}

// export returns a copy safe to hand out.
func (m *storedMsg) export() Message {
	out := m.Message
	out.Blocks = append(json.RawMessage(nil), m.Blocks...)
	out.Reactions = nil
	for _, r := range m.reactions {
		out.Reactions = append(out.Reactions, r.name)
	}
	if len(m.Blocks) == 0 {
		out.Blocks = nil
	}
	out.Files = nil
	for _, f := range m.files {
		out.Files = append(out.Files, f.export())
	}
	return out
}

// slackJSON is the message as Slack shows it to apps (API responses and
// interaction payloads).
func (m *storedMsg) slackJSON() map[string]any {
	out := map[string]any{
		"type": "message",
		"text": m.Text,
		"user": m.User,
		"ts":   m.TS,
		"team": TeamID,
	}
	if m.BotID != "" {
		out["bot_id"] = m.BotID
		out["app_id"] = AppID
		out["bot_profile"] = map[string]any{
			"id": BotID, "app_id": AppID, "name": "rollbot", "deleted": false, "team_id": TeamID,
			"icons": map[string]any{"image_48": ""}, "updated": 1700000000,
		}
	}
	if len(m.Blocks) > 0 {
		out["blocks"] = json.RawMessage(m.Blocks)
	}
	if len(m.Attachments) > 0 {
		out["attachments"] = json.RawMessage(m.Attachments)
	}
	if len(m.files) > 0 {
		var fs []map[string]any
		for _, f := range m.files {
			fs = append(fs, f.slackJSON(""))
		}
		out["files"], out["upload"] = fs, true
	}
	if m.ThreadTS != "" {
		out["thread_ts"] = m.ThreadTS
	}
	if m.Edited {
		out["edited"] = map[string]any{"user": m.User, "ts": m.editedTS}
	}
	if len(m.reactions) > 0 {
		var rs []map[string]any
		for _, r := range m.reactions {
			rs = append(rs, map[string]any{"name": r.name, "users": r.users, "count": len(r.users)})
		}
		out["reactions"] = rs
	}
	return out
}

// PlainText is every text in the message (its text field and every "text"
// string in its blocks and attachments), joined by newlines, for
// predicates. Mentions stay as Slack sends them (<@U0ALICE>).
func (m Message) PlainText() string {
	var parts []string
	if m.Text != "" {
		parts = append(parts, m.Text)
	}
	for _, raw := range []json.RawMessage{m.Blocks, m.Attachments} {
		var v any
		if len(raw) > 0 && json.Unmarshal(raw, &v) == nil {
			walkJSON(v, func(key string, val any) {
				if s, ok := val.(string); ok && (key == "text" || key == "fallback" || key == "pretext" || key == "title") && s != "" {
					parts = append(parts, s)
				}
			})
		}
	}
	return strings.Join(parts, "\n")
}

// ActionIDs lists the action_id of every interactive element in the
// message's blocks, in order.
func (m Message) ActionIDs() []string {
	var ids []string
	var v any
	if len(m.Blocks) > 0 && json.Unmarshal(m.Blocks, &v) == nil {
		walkJSON(v, func(key string, val any) {
			if s, ok := val.(string); ok && key == "action_id" {
				ids = append(ids, s)
			}
		})
	}
	return ids
}

// walkJSON calls fn for every object member, depth first in document
// order (object keys sorted for determinism).
func walkJSON(v any, fn func(key string, val any)) {
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fn(k, t[k])
			walkJSON(t[k], fn)
		}
	case []any:
		for _, e := range t {
			walkJSON(e, fn)
		}
	}
}

// Messages returns the messages of a channel in ts order, including
// ephemeral messages, thread replies and deleted messages (Deleted set).
func (s *Server) Messages(channelID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.st.msgs[channelID] {
		out = append(out, m.export())
	}
	return out
}

// Message returns one message by channel and ts.
func (s *Server) Message(channelID, ts string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.st.find(channelID, ts); m != nil {
		return m.export(), true
	}
	return Message{}, false
}

// WaitForMessage waits until a message (in any channel, in its current
// state, deleted ones included) satisfies pred, and returns it; when several
// match, the newest. It fails when ctx ends or the server closes.
func (s *Server) WaitForMessage(ctx context.Context, pred func(Message) bool) (Message, error) {
	for {
		s.mu.Lock()
		var found *Message
		var all []*storedMsg
		for _, ms := range s.st.msgs {
			all = append(all, ms...)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].TS < all[j].TS })
		for i := len(all) - 1; i >= 0; i-- {
			m := all[i].export()
			if pred(m) {
				found = &m
				break
			}
		}
		changed := s.st.changed
		s.mu.Unlock()
		if found != nil {
			return *found, nil
		}
		select {
		case <-ctx.Done():
			return Message{}, fmt.Errorf("wait for message: %w", context.Cause(ctx))
		case <-s.close:
			return Message{}, fmt.Errorf("wait for message: %w", errClosed)
		case <-changed:
		}
	}
}

// Views returns every view ever opened, in order, with its current state.
func (s *Server) Views() []View {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]View, 0, len(s.st.views))
	for _, v := range s.st.views {
		out = append(out, v.export())
	}
	return out
}

// CurrentView returns the modal currently shown to a user (the top of their
// stack).
func (s *Server) CurrentView(userID string) (View, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.st.topView(userID); v != nil {
		return v.export(), true
	}
	return View{}, false
}

// WaitForView waits until a view (in its current state; closed ones
// included) satisfies pred and returns it; when several match, the newest.
func (s *Server) WaitForView(ctx context.Context, pred func(View) bool) (View, error) {
	for {
		s.mu.Lock()
		var found *View
		for i := len(s.st.views) - 1; i >= 0; i-- {
			if v := s.st.views[i].export(); pred(v) {
				found = &v
				break
			}
		}
		changed := s.st.changed
		s.mu.Unlock()
		if found != nil {
			return *found, nil
		}
		select {
		case <-ctx.Done():
			return View{}, fmt.Errorf("wait for view: %w", context.Cause(ctx))
		case <-s.close:
			return View{}, fmt.Errorf("wait for view: %w", errClosed)
		case <-changed:
		}
	}
}

func (v *storedView) export() View {
	out := v.View
	out.Blocks = append(json.RawMessage(nil), v.Blocks...)
	if v.Errors != nil {
		out.Errors = map[string]string{}
		for k, e := range v.Errors {
			out.Errors[k] = e
		}
	}
	return out
}

func (st *store) view(id string) *storedView {
	for _, v := range st.views {
		if v.ID == id {
			return v
		}
	}
	return nil
}

func (st *store) viewByExternalID(id string) *storedView {
	for i := len(st.views) - 1; i >= 0; i-- {
		if st.views[i].ExternalID == id && st.views[i].Open {
			return st.views[i]
		}
	}
	return nil
}

func (st *store) topView(user string) *storedView {
	stack := st.stacks[user]
	if len(stack) == 0 {
		return nil
	}
	return st.view(stack[len(stack)-1])
}

// Scheduled returns the messages recorded by chat.scheduleMessage.
func (s *Server) Scheduled() []ScheduledMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ScheduledMessage, 0, len(s.st.scheduled))
	for _, m := range s.st.scheduled {
		c := *m
		c.Blocks = append(json.RawMessage(nil), m.Blocks...)
		out = append(out, c)
	}
	return out
}

// Calls returns every Web API call so far, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, len(s.st.calls))
	for i, c := range s.st.calls {
		p := make(map[string]string, len(c.Params))
		for k, v := range c.Params {
			p[k] = v
		}
		c.Params = p
		out[i] = c
	}
	return out
}

// CallsTo returns the calls of one method.
func (s *Server) CallsTo(method string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

func (st *store) newTrigger(user, channel string) string {
	id := fmt.Sprintf("%d.%d.%s", time.Now().Unix(), st.seq+1, randomToken(24))
	st.seq++
	st.triggers[id] = &trigger{user: user, channel: channel, created: time.Now()}
	return id
}

func (s *Server) newResponseURL(t responseTarget) string {
	id := randomToken(20)
	t.created = time.Now()
	s.st.responses[id] = &t
	return s.base + "/response/" + TeamID + "/" + id
}

// touch wakes the page streams (connection count changed).
func (s *Server) touch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.notify()
}

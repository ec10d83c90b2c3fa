package slackemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// slackError is an {"ok":false} answer with an error code.
type slackError struct {
	code  string
	extra map[string]any
}

func (e *slackError) Error() string { return e.code }

func errCode(code string) error { return &slackError{code: code} }

// apiReq is a parsed Web API request.
type apiReq struct {
	method string
	params map[string]string
	body   []byte // a JSON body, when the request had one
	token  string
}

type apiHandler func(s *Server, req *apiReq) (map[string]any, error)

type apiMethod struct {
	fn       apiHandler
	appToken bool // takes the app-level token, not the bot token
}

var apiMethods map[string]apiMethod

func init() {
	apiMethods = map[string]apiMethod{
		"api.test":                     {fn: (*Server).apiTest},
		"auth.test":                    {fn: (*Server).authTest},
		"apps.connections.open":        {fn: (*Server).appsConnectionsOpen, appToken: true},
		"chat.postMessage":             {fn: (*Server).chatPostMessage},
		"chat.postEphemeral":           {fn: (*Server).chatPostEphemeral},
		"chat.update":                  {fn: (*Server).chatUpdate},
		"chat.delete":                  {fn: (*Server).chatDelete},
		"chat.scheduleMessage":         {fn: (*Server).chatScheduleMessage},
		"chat.deleteScheduledMessage":  {fn: (*Server).chatDeleteScheduledMessage},
		"chat.getPermalink":            {fn: (*Server).chatGetPermalink},
		"conversations.info":           {fn: (*Server).conversationsInfo},
		"conversations.history":        {fn: (*Server).conversationsHistory},
		"conversations.replies":        {fn: (*Server).conversationsReplies},
		"users.info":                   {fn: (*Server).usersInfo},
		"users.list":                   {fn: (*Server).usersList},
		"users.lookupByEmail":          {fn: (*Server).usersLookupByEmail},
		"conversations.members":        {fn: (*Server).conversationsMembers},
		"team.info":                    {fn: (*Server).teamInfo},
		"bots.info":                    {fn: (*Server).botsInfo},
		"usergroups.list":              {fn: (*Server).usergroupsList},
		"usergroups.users.list":        {fn: (*Server).usergroupsUsersList},
		"reactions.add":                {fn: (*Server).reactionsAdd},
		"reactions.remove":             {fn: (*Server).reactionsRemove},
		"views.open":                   {fn: (*Server).viewsOpen},
		"views.push":                   {fn: (*Server).viewsPush},
		"views.update":                 {fn: (*Server).viewsUpdate},
		"files.getUploadURLExternal":   {fn: (*Server).filesGetUploadURLExternal},
		"files.completeUploadExternal": {fn: (*Server).filesCompleteUploadExternal},
	}
}

// handleAPI serves /api/<method>.
func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	req, perr := parseAPIRequest(r, method)
	idx := s.recordCall(req)
	answer := func(status int, body map[string]any, code string) {
		s.finishCall(idx, code)
		if code != "" {
			s.log.Info("api error", "method", method, "error", code)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
	fail := func(err error) {
		var se *slackError
		var be *blocksError
		switch {
		case errors.As(err, &be):
			msgs := make([]string, len(be.errs))
			for i, e := range be.errs {
				msgs[i] = "[ERROR] " + e
			}
			body := map[string]any{"ok": false, "error": be.code, "response_metadata": map[string]any{"messages": msgs}}
			if be.code == "invalid_blocks" {
				body["errors"] = be.errs
			}
			answer(http.StatusOK, body, be.code)
		case errors.As(err, &se):
			body := map[string]any{"ok": false, "error": se.code}
			for k, v := range se.extra {
				body[k] = v
			}
			answer(http.StatusOK, body, se.code)
		default:
			s.log.Error("api internal error", "method", method, "err", err)
			answer(http.StatusOK, map[string]any{"ok": false, "error": "internal_error"}, "internal_error")
		}
	}

	m, known := apiMethods[method]
	switch {
	case !known:
		fail(&slackError{code: "unknown_method", extra: map[string]any{"req_method": method}})
		return
	case perr != nil:
		fail(perr)
		return
	}
	if err := checkToken(req.token, m.appToken); err != nil {
		fail(err)
		return
	}
	if d := s.takeDelay(method); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.finishCall(idx, "client_gone")
			return
		case <-s.close:
			t.Stop()
			return
		}
	}
	if s.opts.SlackRateLimits {
		if ok, ra := s.rl.allow(method, req.params["channel"], time.Now()); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(ra.Seconds())))
			answer(http.StatusTooManyRequests, map[string]any{"ok": false, "error": "ratelimited"}, "ratelimited")
			return
		}
	}
	if ra, code := s.takeFault(method); ra > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ra.Seconds()))))
		answer(http.StatusTooManyRequests, map[string]any{"ok": false, "error": "ratelimited"}, "ratelimited")
		return
	} else if code != "" {
		fail(errCode(code))
		return
	}
	resp, err := m.fn(s, req)
	if err != nil {
		fail(err)
		return
	}
	resp["ok"] = true
	answer(http.StatusOK, resp, "")
}

// parseAPIRequest reads form fields, query parameters or a JSON body.
func parseAPIRequest(r *http.Request, method string) (*apiReq, error) {
	req := &apiReq{method: method, params: map[string]string{}}
	if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, "Bearer ") {
		req.token = strings.TrimSpace(strings.TrimPrefix(auth, "Bearer "))
	}
	ctype, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ctype == "application/json" {
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			return req, errCode("invalid_request")
		}
		req.body = body
		if len(bytes.TrimSpace(body)) > 0 {
			var top map[string]json.RawMessage
			if err := json.Unmarshal(body, &top); err != nil {
				return req, errCode("invalid_json")
			}
			for k, v := range top {
				var str string
				if json.Unmarshal(v, &str) == nil {
					req.params[k] = str
				} else {
					req.params[k] = string(v)
				}
			}
		}
		for k, v := range r.URL.Query() {
			if _, ok := req.params[k]; !ok && len(v) > 0 {
				req.params[k] = v[0]
			}
		}
	} else {
		var err error
		if ctype == "multipart/form-data" {
			err = r.ParseMultipartForm(8 << 20)
		} else {
			err = r.ParseForm()
		}
		if err != nil {
			return req, errCode("invalid_form_data")
		}
		for k, v := range r.Form {
			if len(v) > 0 {
				req.params[k] = v[0]
			}
		}
	}
	if req.token == "" {
		req.token = req.params["token"]
	}
	return req, nil
}

// checkToken answers like Slack: not_authed without a token, invalid_auth
// for an unknown one, not_allowed_token_type for the wrong kind.
func checkToken(token string, wantApp bool) error {
	switch {
	case token == "":
		return errCode("not_authed")
	case token != BotToken && token != AppToken:
		return errCode("invalid_auth")
	case wantApp != (token == AppToken):
		return errCode("not_allowed_token_type")
	}
	return nil
}

func (s *Server) recordCall(req *apiReq) int {
	p := make(map[string]string, len(req.params))
	for k, v := range req.params {
		p[k] = v
	}
	if _, ok := p["token"]; ok {
		p["token"] = "[redacted]"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.calls = append(s.st.calls, Call{Method: req.method, Params: p, Time: time.Now()})
	return len(s.st.calls) - 1
}

func (s *Server) finishCall(idx int, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idx < len(s.st.calls) {
		s.st.calls[idx].Error = code
	}
}

func (s *Server) apiTest(req *apiReq) (map[string]any, error) {
	return map[string]any{"args": req.params}, nil
}

func (s *Server) authTest(*apiReq) (map[string]any, error) {
	return map[string]any{
		"url": "https://" + TeamDomain + ".slack.com/", "team": TeamDomain, "user": "rollbot",
		"team_id": TeamID, "user_id": BotUserID, "bot_id": BotID, "is_enterprise_install": false,
	}, nil
}

func (s *Server) appsConnectionsOpen(*apiReq) (map[string]any, error) {
	u, err := s.hub.openTicket()
	if err != nil {
		return nil, err
	}
	return map[string]any{"url": u}, nil
}

// messageInput is the content of a chat.* call or a response_url post.
type messageInput struct {
	text, threadTS   string
	blocks, attach   json.RawMessage
	hasText, hasBlks bool
}

func readMessageInput(req *apiReq) (messageInput, error) {
	in := messageInput{text: req.params["text"], threadTS: req.params["thread_ts"]}
	_, in.hasText = req.params["text"]
	if raw, ok := req.params["blocks"]; ok {
		in.hasBlks = true
		b, err := normalizeMessageBlocks(raw)
		if err != nil {
			return in, err
		}
		in.blocks = b
	}
	if raw := strings.TrimSpace(req.params["attachments"]); raw != "" && raw != "null" {
		var v []any
		if json.Unmarshal([]byte(raw), &v) != nil {
			return in, errCode("invalid_attachments")
		}
		if len(v) > 0 {
			in.attach = json.RawMessage(raw)
		}
	}
	if len([]rune(in.text)) > maxMessageText {
		return in, errCode("msg_too_long")
	}
	return in, nil
}

func (in messageInput) empty() bool {
	return strings.TrimSpace(in.text) == "" && len(in.blocks) == 0 && len(in.attach) == 0
}

// postChannel resolves the channel argument of a posting method.
func (s *Server) postChannel(arg string) (Channel, error) {
	if arg == "" {
		return Channel{}, errCode("channel_not_found")
	}
	c, ok := s.st.resolveChannel(arg)
	if !ok {
		return Channel{}, errCode("channel_not_found")
	}
	if !c.BotMember {
		return Channel{}, errCode("not_in_channel")
	}
	return c, nil
}

// threadParent normalises thread_ts to the parent's ts (callers hold s.mu).
func (st *store) threadParent(channel, ts string) string {
	if ts == "" {
		return ""
	}
	if m := st.find(channel, ts); m != nil && m.ThreadTS != "" {
		return m.ThreadTS
	}
	return ts
}

func (s *Server) chatPostMessage(req *apiReq) (map[string]any, error) {
	in, err := readMessageInput(req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.postChannel(req.params["channel"])
	if err != nil {
		return nil, err
	}
	if in.empty() {
		return nil, errCode("no_text")
	}
	m := s.botMessage(c.ID, in)
	s.st.addMessage(m)
	return map[string]any{"channel": c.ID, "ts": m.TS, "message": m.slackJSON()}, nil
}

// botMessage builds a new bot message (callers hold s.mu).
func (s *Server) botMessage(channel string, in messageInput) *storedMsg {
	return &storedMsg{Message: Message{
		Channel: channel, TS: s.st.nextTS(), ThreadTS: s.st.threadParent(channel, in.threadTS),
		User: BotUserID, BotID: BotID, Text: in.text, Blocks: in.blocks, Attachments: in.attach,
	}}
}

func (s *Server) chatPostEphemeral(req *apiReq) (map[string]any, error) {
	in, err := readMessageInput(req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.postChannel(req.params["channel"])
	if err != nil {
		return nil, err
	}
	u, ok := userByID(req.params["user"])
	if !ok || u.IsBot {
		return nil, errCode("user_not_found")
	}
	if c.IsIM && c.IMUser != u.ID {
		return nil, errCode("user_not_in_channel")
	}
	if in.empty() {
		return nil, errCode("no_text")
	}
	m := s.botMessage(c.ID, in)
	m.Ephemeral, m.EphemeralFor = true, u.ID
	s.st.addMessage(m)
	return map[string]any{"message_ts": m.TS}, nil
}

func (s *Server) chatUpdate(req *apiReq) (map[string]any, error) {
	in, err := readMessageInput(req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.resolveChannel(req.params["channel"])
	if !ok {
		return nil, errCode("channel_not_found")
	}
	m := s.st.find(c.ID, req.params["ts"])
	if m == nil || m.Deleted || m.Ephemeral {
		return nil, errCode("message_not_found")
	}
	if m.User != BotUserID {
		return nil, errCode("cant_update_message")
	}
	if in.hasText {
		m.Text = in.text
	}
	if in.hasBlks {
		m.Blocks = in.blocks
	}
	if len(in.attach) > 0 {
		m.Attachments = in.attach
	}
	if strings.TrimSpace(m.Text) == "" && len(m.Blocks) == 0 && len(m.Attachments) == 0 {
		return nil, errCode("no_text")
	}
	m.Edited, m.editedTS = true, s.st.nextTS()
	s.st.notify()
	return map[string]any{"channel": c.ID, "ts": m.TS, "text": m.Text, "message": m.slackJSON()}, nil
}

func (s *Server) chatDelete(req *apiReq) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.resolveChannel(req.params["channel"])
	if !ok {
		return nil, errCode("channel_not_found")
	}
	m := s.st.find(c.ID, req.params["ts"])
	if m == nil || m.Deleted || m.Ephemeral {
		return nil, errCode("message_not_found")
	}
	if m.User != BotUserID {
		return nil, errCode("cant_delete_message")
	}
	m.Deleted = true
	s.st.notify()
	return map[string]any{"channel": c.ID, "ts": m.TS}, nil
}

func (s *Server) chatScheduleMessage(req *apiReq) (map[string]any, error) {
	in, err := readMessageInput(req)
	if err != nil {
		return nil, err
	}
	postAt, perr := strconv.ParseFloat(req.params["post_at"], 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.postChannel(req.params["channel"])
	if err != nil {
		return nil, err
	}
	when := time.Unix(int64(postAt), 0)
	switch {
	case perr != nil:
		return nil, errCode("invalid_time")
	case !when.After(time.Now()):
		return nil, errCode("time_in_past")
	case when.After(time.Now().Add(120 * 24 * time.Hour)):
		return nil, errCode("time_too_far")
	case in.empty():
		return nil, errCode("no_text")
	}
	sm := &ScheduledMessage{
		ID: s.st.nextID("Q"), Channel: c.ID, PostAt: when, ThreadTS: in.threadTS,
		Text: in.text, Blocks: in.blocks,
	}
	s.st.scheduled = append(s.st.scheduled, sm)
	s.st.timers = append(s.st.timers, time.AfterFunc(time.Until(when), func() { s.postScheduled(sm.ID, in) }))
	s.st.notify()
	msg := map[string]any{"type": "message", "text": in.text, "user": BotUserID, "bot_id": BotID, "team": TeamID}
	if len(in.blocks) > 0 {
		msg["blocks"] = in.blocks
	}
	return map[string]any{"channel": c.ID, "scheduled_message_id": sm.ID, "post_at": when.Unix(), "message": msg}, nil
}

// postScheduled posts a scheduled message when its time comes.
func (s *Server) postScheduled(id string, in messageInput) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed() {
		return
	}
	for _, sm := range s.st.scheduled {
		if sm.ID == id && !sm.Deleted && !sm.Posted {
			m := s.botMessage(sm.Channel, in)
			s.st.addMessage(m)
			sm.Posted, sm.TS = true, m.TS
		}
	}
}

func (s *Server) chatDeleteScheduledMessage(req *apiReq) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sm := range s.st.scheduled {
		if sm.ID == req.params["scheduled_message_id"] && sm.Channel == req.params["channel"] && !sm.Deleted && !sm.Posted {
			sm.Deleted = true
			s.st.notify()
			return map[string]any{}, nil
		}
	}
	return nil, errCode("invalid_scheduled_message_id")
}

func (s *Server) chatGetPermalink(req *apiReq) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.channelByID(req.params["channel"])
	if !ok {
		return nil, errCode("channel_not_found")
	}
	ts := req.params["message_ts"]
	if m := s.st.find(c.ID, ts); m == nil || m.Deleted {
		return nil, errCode("message_not_found")
	}
	return map[string]any{"channel": c.ID, "permalink": s.permalink(c.ID, ts)}, nil
}

func (s *Server) permalink(channel, ts string) string {
	return fmt.Sprintf("%s/archives/%s/p%s", s.base, channel, strings.ReplaceAll(ts, ".", ""))
}

func (s *Server) conversationsInfo(req *apiReq) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.channelByID(req.params["channel"])
	if !ok {
		return nil, errCode("channel_not_found")
	}
	return map[string]any{"channel": slackChannel(c)}, nil
}

// visibleToBot lists a channel's messages the bot can read: not ephemeral,
// not deleted.
func (s *Server) visibleToBot(channel string, keep func(*storedMsg) bool) []map[string]any {
	var out []map[string]any
	for _, m := range s.st.msgs[channel] {
		if !m.Ephemeral && !m.Deleted && keep(m) {
			j := m.slackJSON()
			if n := s.st.replyCount(channel, m.TS); n > 0 {
				j["reply_count"] = n
				j["thread_ts"] = m.TS
			}
			out = append(out, j)
		}
	}
	return out
}

func (st *store) replyCount(channel, ts string) int {
	n := 0
	for _, m := range st.msgs[channel] {
		if m.ThreadTS == ts && !m.Deleted && !m.Ephemeral {
			n++
		}
	}
	return n
}

func (s *Server) conversationsHistory(req *apiReq) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.channelByID(req.params["channel"])
	if !ok {
		return nil, errCode("channel_not_found")
	}
	msgs := s.visibleToBot(c.ID, func(m *storedMsg) bool { return m.ThreadTS == "" })
	sort.Slice(msgs, func(i, j int) bool { return msgs[i]["ts"].(string) > msgs[j]["ts"].(string) })
	return map[string]any{"messages": msgs, "has_more": false}, nil
}

func (s *Server) conversationsReplies(req *apiReq) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.channelByID(req.params["channel"])
	if !ok {
		return nil, errCode("channel_not_found")
	}
	ts := s.st.threadParent(c.ID, req.params["ts"])
	if m := s.st.find(c.ID, ts); m == nil {
		return nil, errCode("thread_not_found")
	}
	msgs := s.visibleToBot(c.ID, func(m *storedMsg) bool { return m.TS == ts || m.ThreadTS == ts })
	return map[string]any{"messages": msgs, "has_more": false}, nil
}

func (s *Server) usersInfo(req *apiReq) (map[string]any, error) {
	if many := req.params["users"]; many != "" {
		var users []map[string]any
		for _, id := range strings.Split(many, ",") {
			u, ok := userByID(strings.TrimSpace(id))
			if !ok {
				return nil, errCode("user_not_found")
			}
			users = append(users, slackUser(u))
		}
		return map[string]any{"users": users}, nil
	}
	u, ok := userByID(req.params["user"])
	if !ok {
		return nil, errCode("user_not_found")
	}
	return map[string]any{"user": slackUser(u)}, nil
}

func (s *Server) usergroupsList(req *apiReq) (map[string]any, error) {
	var out []map[string]any
	for _, g := range seedGroups {
		j := slackGroup(g)
		if req.params["include_users"] != "true" {
			delete(j, "users")
		}
		out = append(out, j)
	}
	return map[string]any{"usergroups": out}, nil
}

func (s *Server) usergroupsUsersList(req *apiReq) (map[string]any, error) {
	g, ok := groupByID(req.params["usergroup"])
	if !ok {
		return nil, errCode("no_such_subteam")
	}
	return map[string]any{"users": append([]string(nil), g.Members...)}, nil
}

func (s *Server) reactionTarget(req *apiReq) (*storedMsg, string, error) {
	name := strings.Trim(req.params["name"], ":")
	if name == "" {
		return nil, "", errCode("invalid_name")
	}
	c, ok := s.st.channelByID(req.params["channel"])
	if !ok {
		return nil, "", errCode("channel_not_found")
	}
	m := s.st.find(c.ID, req.params["timestamp"])
	if m == nil || m.Deleted || m.Ephemeral {
		return nil, "", errCode("message_not_found")
	}
	return m, name, nil
}

func (s *Server) reactionsAdd(req *apiReq) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, name, err := s.reactionTarget(req)
	if err != nil {
		return nil, err
	}
	if err := m.react(name, BotUserID); err != nil {
		return nil, err
	}
	s.st.notify()
	return map[string]any{}, nil
}

// react adds user's reaction name (callers hold s.mu).
func (m *storedMsg) react(name, user string) error {
	for i := range m.reactions {
		if m.reactions[i].name == name {
			for _, u := range m.reactions[i].users {
				if u == user {
					return errCode("already_reacted")
				}
			}
			m.reactions[i].users = append(m.reactions[i].users, user)
			return nil
		}
	}
	m.reactions = append(m.reactions, reaction{name: name, users: []string{user}})
	return nil
}

func (s *Server) reactionsRemove(req *apiReq) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, name, err := s.reactionTarget(req)
	if err != nil {
		return nil, err
	}
	for i, r := range m.reactions {
		if r.name != name {
			continue
		}
		for j, u := range r.users {
			if u == BotUserID {
				r.users = append(r.users[:j], r.users[j+1:]...)
				if len(r.users) == 0 {
					m.reactions = append(m.reactions[:i], m.reactions[i+1:]...)
				} else {
					m.reactions[i] = r
				}
				s.st.notify()
				return map[string]any{}, nil
			}
		}
	}
	return nil, errCode("no_reaction")
}

func (s *Server) usersList(*apiReq) (map[string]any, error) {
	var members []map[string]any
	for _, u := range seedUsers {
		members = append(members, slackUser(u))
	}
	return map[string]any{"members": members, "cache_ts": time.Now().Unix(),
		"response_metadata": map[string]any{"next_cursor": ""}}, nil
}

func (s *Server) usersLookupByEmail(req *apiReq) (map[string]any, error) {
	for _, u := range seedUsers {
		if !u.IsBot && strings.EqualFold(req.params["email"], u.Name+"@acme.example") {
			return map[string]any{"user": slackUser(u)}, nil
		}
	}
	return nil, errCode("users_not_found")
}

func (s *Server) conversationsMembers(req *apiReq) (map[string]any, error) {
	s.mu.Lock()
	c, ok := s.st.channelByID(req.params["channel"])
	s.mu.Unlock()
	if !ok {
		return nil, errCode("channel_not_found")
	}
	var ids []string
	for _, u := range seedUsers {
		if !c.IsIM || u.ID == c.IMUser || u.IsBot {
			ids = append(ids, u.ID)
		}
	}
	return map[string]any{"members": ids, "response_metadata": map[string]any{"next_cursor": ""}}, nil
}

func (s *Server) teamInfo(*apiReq) (map[string]any, error) {
	return map[string]any{"team": map[string]any{
		"id": TeamID, "name": "Acme", "domain": TeamDomain, "email_domain": "acme.example",
		"icon": map[string]any{"image_default": true},
	}}, nil
}

func (s *Server) botsInfo(req *apiReq) (map[string]any, error) {
	if b := req.params["bot"]; b != "" && b != BotID {
		return nil, errCode("bot_not_found")
	}
	return map[string]any{"bot": map[string]any{
		"id": BotID, "deleted": false, "name": "rollbot", "updated": 1700000000, "app_id": AppID,
		"user_id": BotUserID, "icons": map[string]any{},
	}}, nil
}

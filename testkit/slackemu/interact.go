package slackemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// verificationToken is the legacy "token" field of payloads.
const verificationToken = "emulatorVerificationToken"

func actionTS() string {
	now := time.Now().UnixMicro()
	return fmt.Sprintf("%d.%06d", now/1_000_000, now%1_000_000)
}

func (s *Server) checkUserChannel(userID, channelID string) (User, Channel, error) {
	u, ok := userByID(userID)
	if !ok || u.IsBot {
		return User{}, Channel{}, fmt.Errorf("unknown user %q", userID)
	}
	s.mu.Lock()
	c, ok := s.st.channelByID(channelID)
	s.mu.Unlock()
	if !ok {
		return User{}, Channel{}, fmt.Errorf("unknown channel %q", channelID)
	}
	return u, c, nil
}

func payloadUser(u User) map[string]any {
	return map[string]any{"id": u.ID, "username": u.Name, "name": u.Name, "team_id": TeamID}
}

func payloadTeam() map[string]any { return map[string]any{"id": TeamID, "domain": TeamDomain} }

func payloadChannel(c Channel) map[string]any {
	name := c.Name
	if c.IsIM {
		name = "directmessage"
	}
	return map[string]any{"id": c.ID, "name": name}
}

// SlashCommand sends a slash_commands envelope as the user typed
// "command text" in the channel, and returns once the app acked it. It
// waits for a Socket Mode connection while ctx allows, then fails with
// ErrNotAcked after AckTimeout. An ack payload with text or blocks is shown
// to the user as an ephemeral message (or in the channel with
// response_type "in_channel"), as Slack does.
func (s *Server) SlashCommand(ctx context.Context, userID, channelID, command, text string) error {
	u, c, err := s.checkUserChannel(userID, channelID)
	if err != nil {
		return fmt.Errorf("slash command %s: %w", command, err)
	}
	if !strings.HasPrefix(command, "/") {
		command = "/" + command
	}
	s.mu.Lock()
	trig := s.st.newTrigger(u.ID, c.ID)
	target := responseTarget{channel: c.ID, user: u.ID}
	respURL := s.newResponseURL(target)
	s.mu.Unlock()
	name := c.Name
	if c.IsIM {
		name = "directmessage"
	}
	payload, _ := json.Marshal(map[string]any{
		"token": verificationToken, "team_id": TeamID, "team_domain": TeamDomain,
		"channel_id": c.ID, "channel_name": name, "user_id": u.ID, "user_name": u.Name,
		"command": command, "text": text, "api_app_id": AppID, "is_enterprise_install": "false",
		"response_url": respURL, "trigger_id": trig,
	})
	ack, err := s.hub.deliver(ctx, envelope{Type: "slash_commands", Payload: payload, AcceptsResponsePayload: true})
	if err != nil {
		return fmt.Errorf("slash command %s as %s: %w", command, u.Name, err)
	}
	if err := s.applyResponse(target, ack, "ephemeral"); err != nil && !errors.Is(err, errNothingToPost) {
		return fmt.Errorf("slash command %s response: %w", command, err)
	}
	return nil
}

// ClickButton clicks the button with actionID in a stored message as the
// user: it builds the block_actions payload from the stored blocks as
// Slack does and returns once the app acked it. A confirm dialog on the
// button counts as accepted. It fails when there is no such button or the
// message is not visible to the user.
func (s *Server) ClickButton(ctx context.Context, userID, channelID, messageTS, actionID string) error {
	u, c, err := s.checkUserChannel(userID, channelID)
	if err != nil {
		return fmt.Errorf("click %s: %w", actionID, err)
	}
	s.mu.Lock()
	m := s.st.find(c.ID, messageTS)
	if m == nil || m.Deleted {
		s.mu.Unlock()
		return fmt.Errorf("click %s: no message %s in %s", actionID, messageTS, c.ID)
	}
	if m.Ephemeral && m.EphemeralFor != u.ID {
		s.mu.Unlock()
		return fmt.Errorf("click %s: message %s is visible only to %s", actionID, messageTS, m.EphemeralFor)
	}
	el, blockID, ok := findElement(m.Blocks, actionID)
	if !ok || el["type"] != "button" {
		s.mu.Unlock()
		return fmt.Errorf("click %s: no button with that action_id in message %s", actionID, messageTS)
	}
	trig := s.st.newTrigger(u.ID, c.ID)
	target := responseTarget{channel: c.ID, user: u.ID, messageTS: m.TS, threadTS: m.ThreadTS, ephemeral: m.Ephemeral}
	respURL := s.newResponseURL(target)
	container := map[string]any{
		"type": "message", "message_ts": m.TS, "channel_id": c.ID, "is_ephemeral": m.Ephemeral,
	}
	if m.ThreadTS != "" {
		container["thread_ts"] = m.ThreadTS
	}
	action := map[string]any{
		"type": "button", "action_id": actionID, "block_id": blockID, "text": el["text"],
		"action_ts": actionTS(),
	}
	for _, k := range []string{"value", "style", "url"} {
		if v, ok := el[k]; ok {
			action[k] = v
		}
	}
	p := map[string]any{
		"type": "block_actions", "user": payloadUser(u), "api_app_id": AppID, "token": verificationToken,
		"container": container, "trigger_id": trig, "team": payloadTeam(), "enterprise": nil,
		"is_enterprise_install": false, "channel": payloadChannel(c),
		"state": map[string]any{"values": map[string]any{}}, "response_url": respURL,
		"actions": []any{action},
	}
	if !m.Ephemeral { // Slack omits the message of an ephemeral container
		p["message"] = m.slackJSON()
	}
	s.mu.Unlock()
	payload, _ := json.Marshal(p)
	if _, err := s.hub.deliver(ctx, envelope{Type: "interactive", Payload: payload}); err != nil {
		return fmt.Errorf("click %s as %s: %w", actionID, u.Name, err)
	}
	return nil
}

// SubmitView submits the user's open modal viewID with values
// (block_id → action_id → value) and returns the app's ack. Like the Slack
// client it first checks required inputs and length limits and, when they
// fail, returns a ViewAck with FromClient set without calling the app. The
// ack is applied: "errors" are shown inline, "update" replaces the view,
// "push" pushes one, "clear" closes all; no response_action closes the
// view.
func (s *Server) SubmitView(ctx context.Context, userID, viewID string, values map[string]map[string]string) (ViewAck, error) {
	u, ok := userByID(userID)
	if !ok {
		return ViewAck{}, fmt.Errorf("submit view %s: unknown user %q", viewID, userID)
	}
	s.mu.Lock()
	v := s.st.view(viewID)
	if v == nil || !v.Open || v.User != u.ID {
		s.mu.Unlock()
		return ViewAck{}, fmt.Errorf("submit view %s: not open for %s", viewID, u.Name)
	}
	if top := s.st.topView(u.ID); top != v {
		s.mu.Unlock()
		return ViewAck{}, fmt.Errorf("submit view %s: another view is on top of it", viewID)
	}
	if v.Submit == "" {
		s.mu.Unlock()
		return ViewAck{}, fmt.Errorf("submit view %s: it has no submit button", viewID)
	}
	state, clientErrs, err := viewState(v.Blocks, values)
	if err != nil {
		s.mu.Unlock()
		return ViewAck{}, fmt.Errorf("submit view %s: %w", viewID, err)
	}
	if len(clientErrs) > 0 {
		v.Errors = clientErrs
		s.st.notify()
		s.mu.Unlock()
		return ViewAck{ResponseAction: "errors", Errors: clientErrs, FromClient: true}, nil
	}
	v.state = state
	trig := s.st.newTrigger(u.ID, "")
	p := map[string]any{
		"type": "view_submission", "team": payloadTeam(), "user": payloadUser(u), "api_app_id": AppID,
		"token": verificationToken, "trigger_id": trig, "view": v.slackJSON(), "response_urls": []any{},
		"is_enterprise_install": false, "enterprise": nil,
	}
	s.mu.Unlock()
	payload, _ := json.Marshal(p)
	raw, err := s.hub.deliver(ctx, envelope{Type: "interactive", Payload: payload, AcceptsResponsePayload: true})
	if err != nil {
		return ViewAck{}, fmt.Errorf("submit view %s as %s: %w", viewID, u.Name, err)
	}
	var ack struct {
		ResponseAction string            `json:"response_action"`
		Errors         map[string]string `json:"errors"`
		View           json.RawMessage   `json:"view"`
	}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &ack); err != nil {
			return ViewAck{}, fmt.Errorf("submit view %s: unreadable ack payload: %w", viewID, err)
		}
	}
	out := ViewAck{ResponseAction: ack.ResponseAction, Errors: ack.Errors, View: ack.View}
	if err := s.applyViewAck(v, out); err != nil {
		return out, fmt.Errorf("submit view %s: %w", viewID, err)
	}
	return out, nil
}

// applyViewAck acts on a view_submission ack like the Slack client.
func (s *Server) applyViewAck(v *storedView, ack ViewAck) error {
	var nv *storedView
	if ack.ResponseAction == "update" || ack.ResponseAction == "push" {
		var err error
		if nv, err = viewFromJSON(ack.View); err != nil {
			return fmt.Errorf("response_action %s: %w", ack.ResponseAction, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ack.ResponseAction {
	case "errors":
		v.Errors = ack.Errors
		s.st.notify()
	case "update":
		s.replaceView(v, nv)
	case "push":
		if len(s.st.stacks[v.User]) >= maxViewStack {
			return errors.New("response_action push: push_limit_reached")
		}
		s.pushView(nv, v.User)
	case "clear":
		s.closeStack(v.User)
		s.st.notify()
	case "":
		s.popView(v)
	default:
		return fmt.Errorf("unknown response_action %q", ack.ResponseAction)
	}
	return nil
}

// popView closes v, the top of its user's stack (callers hold s.mu).
func (s *Server) popView(v *storedView) {
	v.Open = false
	stack := s.st.stacks[v.User]
	if n := len(stack); n > 0 && stack[n-1] == v.ID {
		stack = stack[:n-1]
	}
	if len(stack) == 0 {
		delete(s.st.stacks, v.User)
	} else {
		s.st.stacks[v.User] = stack
	}
	s.st.notify()
}

// CloseView closes the user's open modal as its Close button does; with
// notify_on_close the app gets a view_closed payload (and this waits for
// its ack).
func (s *Server) CloseView(ctx context.Context, userID, viewID string) error {
	u, ok := userByID(userID)
	if !ok {
		return fmt.Errorf("close view %s: unknown user %q", viewID, userID)
	}
	s.mu.Lock()
	v := s.st.view(viewID)
	if v == nil || !v.Open || v.User != u.ID {
		s.mu.Unlock()
		return fmt.Errorf("close view %s: not open for %s", viewID, u.Name)
	}
	notify := v.NotifyOnClose
	p := map[string]any{
		"type": "view_closed", "team": payloadTeam(), "user": payloadUser(u), "api_app_id": AppID,
		"token": verificationToken, "view": v.slackJSON(), "is_cleared": false, "is_enterprise_install": false,
	}
	if v.clearOnClose {
		s.closeStack(u.ID)
		s.st.notify()
		p["is_cleared"] = true
	} else {
		s.popView(v)
	}
	s.mu.Unlock()
	if !notify {
		return nil
	}
	payload, _ := json.Marshal(p)
	if _, err := s.hub.deliver(ctx, envelope{Type: "interactive", Payload: payload}); err != nil {
		return fmt.Errorf("close view %s: %w", viewID, err)
	}
	return nil
}

// viewState builds view.state.values from the input blocks and the
// submitted values, and the errors the Slack client itself would show.
func viewState(blocks json.RawMessage, values map[string]map[string]string) (map[string]map[string]any, map[string]string, error) {
	var arr []map[string]any
	if err := json.Unmarshal(blocks, &arr); err != nil {
		return nil, nil, fmt.Errorf("view blocks: %w", err)
	}
	state := map[string]map[string]any{}
	clientErrs := map[string]string{}
	known := map[string]map[string]bool{}
	for _, b := range arr {
		if b["type"] != "input" {
			continue
		}
		bid, _ := b["block_id"].(string)
		el, _ := b["element"].(map[string]any)
		aid, _ := el["action_id"].(string)
		typ, _ := el["type"].(string)
		if known[bid] == nil {
			known[bid] = map[string]bool{}
		}
		known[bid][aid] = true
		val, given := values[bid][aid]
		optional, _ := b["optional"].(bool)
		if strings.TrimSpace(val) == "" && !optional {
			clientErrs[bid] = "Please complete this required field."
		}
		if n := utf8.RuneCountInString(val); given && val != "" {
			if min, ok := el["min_length"].(float64); ok && n < int(min) {
				clientErrs[bid] = fmt.Sprintf("Please enter at least %d characters.", int(min))
			}
			if max, ok := el["max_length"].(float64); ok && n > int(max) {
				clientErrs[bid] = fmt.Sprintf("Please enter no more than %d characters.", int(max))
			}
		}
		entry := map[string]any{"type": typ}
		switch typ {
		case "static_select", "radio_buttons":
			if val == "" {
				entry["selected_option"] = nil
			} else {
				entry["selected_option"] = optionFor(el, val)
			}
		case "users_select":
			entry["selected_user"] = nilIfEmpty(val)
		case "conversations_select":
			entry["selected_conversation"] = nilIfEmpty(val)
		case "channels_select":
			entry["selected_channel"] = nilIfEmpty(val)
		case "datepicker":
			entry["selected_date"] = nilIfEmpty(val)
		case "timepicker":
			entry["selected_time"] = nilIfEmpty(val)
		default:
			entry["value"] = nilIfEmpty(val)
		}
		if state[bid] == nil {
			state[bid] = map[string]any{}
		}
		state[bid][aid] = entry
	}
	for bid, acts := range values {
		for aid := range acts {
			if !known[bid][aid] {
				return nil, nil, fmt.Errorf("no input %s/%s in the view", bid, aid)
			}
		}
	}
	return state, clientErrs, nil
}

// optionFor finds the option of a select whose value is val.
func optionFor(el map[string]any, val string) any {
	opts, _ := el["options"].([]any)
	for _, o := range opts {
		if m, ok := o.(map[string]any); ok && m["value"] == val {
			return m
		}
	}
	return map[string]any{"value": val, "text": map[string]any{"type": "plain_text", "text": val}}
}

var mentionRE = regexp.MustCompile(`<@(U[0-9A-Z]+)(\|[^>]*)?>`)

// PostUserMessage posts text in the channel as a person. When it mentions
// the bot (<@U0ROLLBOT>) the app gets an app_mention event, and this
// returns once that was acked (after redeliveries if needed).
func (s *Server) PostUserMessage(ctx context.Context, userID, channelID, text string) (Message, error) {
	out, mention, err := s.storeUserMessage(userID, channelID, text)
	if err != nil || mention == nil {
		return out, err
	}
	if err := s.SendEvent(ctx, mention); err != nil {
		return out, fmt.Errorf("post as %s: %w", userName(userID), err)
	}
	return out, nil
}

// storeUserMessage stores a person's message and returns the app_mention
// event to deliver when it mentions the bot.
func (s *Server) storeUserMessage(userID, channelID, text string) (Message, map[string]any, error) {
	u, c, err := s.checkUserChannel(userID, channelID)
	if err != nil {
		return Message{}, nil, fmt.Errorf("post as user: %w", err)
	}
	s.mu.Lock()
	m := &storedMsg{Message: Message{Channel: c.ID, TS: s.st.nextTS(), User: u.ID, Text: text}}
	s.st.addMessage(m)
	out := m.export()
	s.mu.Unlock()
	for _, mm := range mentionRE.FindAllStringSubmatch(text, -1) {
		if mm[1] == BotUserID {
			return out, map[string]any{
				"type": "app_mention", "user": u.ID, "text": text, "ts": out.TS, "channel": c.ID,
				"event_ts": out.TS, "team": TeamID, "client_msg_id": randomToken(16),
			}, nil
		}
	}
	return out, nil, nil
}

// SendEvent delivers an Events API event (the inner "event" object) in an
// events_api envelope and returns once the app acked it; without an ack in
// AckTimeout it is redelivered with retry_attempt 1, 2, 3 and
// retry_reason "timeout", then fails with ErrNotAcked.
func (s *Server) SendEvent(ctx context.Context, event map[string]any) error {
	if _, ok := event["event_ts"]; !ok {
		event["event_ts"] = actionTS()
	}
	s.mu.Lock()
	eventID := s.st.nextID("Ev")
	s.mu.Unlock()
	payload, _ := json.Marshal(map[string]any{
		"token": verificationToken, "team_id": TeamID, "api_app_id": AppID, "event": event,
		"type": "event_callback", "event_id": eventID, "event_time": time.Now().Unix(),
		"authorizations": []any{map[string]any{
			"enterprise_id": nil, "team_id": TeamID, "user_id": BotUserID, "is_bot": true, "is_enterprise_install": false,
		}},
		"is_ext_shared_channel": false, "event_context": "4-" + randomToken(20),
	})
	if _, err := s.hub.deliver(ctx, envelope{Type: "events_api", Payload: payload}); err != nil {
		return fmt.Errorf("event %v: %w", event["type"], err)
	}
	return nil
}

// errNothingToPost: a response (an ack payload) had no message in it.
var errNothingToPost = errors.New("no message in response")

// responseMsg is what a response_url (or a slash command ack) may carry.
type responseMsg struct {
	Text            string          `json:"text"`
	Blocks          json.RawMessage `json:"blocks"`
	Attachments     json.RawMessage `json:"attachments"`
	ThreadTS        string          `json:"thread_ts"`
	ResponseType    string          `json:"response_type"`
	ReplaceOriginal json.RawMessage `json:"replace_original"`
	DeleteOriginal  json.RawMessage `json:"delete_original"`
}

func truthy(raw json.RawMessage) bool {
	s := strings.Trim(string(raw), `"`)
	return s == "true" || s == "1"
}

// applyResponse acts on a response_url post or an ack payload:
// delete_original, replace_original, in_channel or (default) ephemeral.
func (s *Server) applyResponse(t responseTarget, raw json.RawMessage, defaultType string) error {
	var r responseMsg
	if len(raw) == 0 || string(raw) == "null" {
		return errNothingToPost
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return errCode("invalid_payload")
	}
	in := messageInput{text: r.Text, threadTS: r.ThreadTS, hasText: r.Text != ""}
	if len(r.Blocks) > 0 && string(r.Blocks) != "null" {
		b, err := normalizeMessageBlocks(string(r.Blocks))
		if err != nil {
			return err
		}
		in.blocks, in.hasBlks = b, true
	}
	if len(r.Attachments) > 0 && string(r.Attachments) != "null" && string(r.Attachments) != "[]" {
		in.attach = r.Attachments
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if truthy(r.DeleteOriginal) {
		m := s.st.find(t.channel, t.messageTS)
		if m == nil || m.Deleted {
			return errCode("message_not_found")
		}
		m.Deleted = true
		s.st.notify()
		return nil
	}
	if truthy(r.ReplaceOriginal) && t.messageTS != "" {
		m := s.st.find(t.channel, t.messageTS)
		if m == nil || m.Deleted {
			return errCode("message_not_found")
		}
		if in.empty() {
			return errCode("no_text")
		}
		m.Text, m.Blocks, m.Attachments = in.text, in.blocks, in.attach
		m.Edited, m.editedTS = true, s.st.nextTS()
		s.st.notify()
		return nil
	}
	if in.empty() {
		return errNothingToPost
	}
	if in.threadTS == "" {
		in.threadTS = t.threadTS
	}
	m := s.botMessage(t.channel, in)
	typ := r.ResponseType
	if typ == "" {
		typ = defaultType
	}
	if typ != "in_channel" {
		m.Ephemeral, m.EphemeralFor = true, t.user
	}
	s.st.addMessage(m)
	return nil
}

// handleResponseURL serves the response_urls handed out in payloads: JSON
// (as slack-go sends) or a form field "payload". Each URL works 5 times
// within 30 minutes, as in Slack. Posts are recorded in Calls with Method
// "response_url".
func (s *Server) handleResponseURL(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	reply := func(status int, code string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if code == "" {
			_, _ = io.WriteString(w, `{"ok":true}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": code})
	}
	if r.Method != http.MethodPost {
		reply(http.StatusMethodNotAllowed, "method_not_allowed")
		return
	}
	s.mu.Lock()
	t, ok := s.st.responses[id]
	var target responseTarget
	switch {
	case !ok:
	case t.uses >= 5:
		s.mu.Unlock()
		reply(http.StatusNotFound, "used_url")
		return
	case time.Since(t.created) > 30*time.Minute:
		s.mu.Unlock()
		reply(http.StatusNotFound, "expired_url")
		return
	default:
		t.uses++
		target = *t
	}
	s.mu.Unlock()
	if !ok {
		reply(http.StatusNotFound, "no_such_url")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		reply(http.StatusBadRequest, "invalid_payload")
		return
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if q, err := url.ParseQuery(string(body)); err == nil {
			body = []byte(q.Get("payload"))
		}
	}
	idx := s.recordResponseCall(body)
	code := responseErrCode(s.applyResponse(target, body, "ephemeral"))
	s.finishCall(idx, code)
	status := http.StatusOK
	if code == "internal_error" {
		status = http.StatusInternalServerError
	}
	reply(status, code)
}

// responseErrCode maps an applyResponse error to Slack's error code.
func responseErrCode(err error) string {
	var se *slackError
	var be *blocksError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, errNothingToPost):
		return "no_text"
	case errors.As(err, &be):
		return be.code
	case errors.As(err, &se):
		return se.code
	}
	return "internal_error"
}

// recordResponseCall records a response_url post in Calls.
func (s *Server) recordResponseCall(body []byte) int {
	req := &apiReq{method: "response_url", params: map[string]string{}}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) == nil {
		for k, v := range top {
			var str string
			if json.Unmarshal(v, &str) == nil {
				req.params[k] = str
			} else {
				req.params[k] = string(v)
			}
		}
	}
	return s.recordCall(req)
}

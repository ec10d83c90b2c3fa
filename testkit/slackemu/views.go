package slackemu

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

const maxViewStack = 3

// viewFromJSON validates a modal definition and builds a view from it (not
// yet stored, without ID). Errors are invalid_arguments like Slack's.
func viewFromJSON(raw json.RawMessage) (*storedView, error) {
	var def map[string]any
	if len(raw) == 0 || json.Unmarshal(raw, &def) != nil {
		return nil, &blocksError{code: "invalid_arguments", errs: []string{"missing required field: view [json-pointer:/view]"}}
	}
	v := &validator{}
	if t, _ := def["type"].(string); t != "modal" {
		v.add("/view/type", "must be modal")
	}
	v.textObject("/view/title", def["title"], true, maxModalTitle, "plain_text")
	if def["submit"] != nil {
		v.textObject("/view/submit", def["submit"], true, maxModalTitle, "plain_text")
	}
	if def["close"] != nil {
		v.textObject("/view/close", def["close"], true, maxModalTitle, "plain_text")
	}
	blocks, _ := def["blocks"].([]any)
	if _, ok := def["blocks"].([]any); !ok {
		v.add("/view/blocks", "missing required field: blocks")
	}
	hasInput := false
	for _, b := range blocks {
		if m, ok := b.(map[string]any); ok && m["type"] == "input" {
			hasInput = true
		}
	}
	if hasInput && def["submit"] == nil {
		v.add("/view/submit", "submit is required when an input block is within the blocks array")
	}
	for _, e := range validateBlocks(blocks, surfaceModal) {
		v.errs = append(v.errs, prefixPointer(e, "/view"))
	}
	pm, _ := def["private_metadata"].(string)
	if utf8.RuneCountInString(pm) > maxPrivateMetadata {
		v.add("/view/private_metadata", "must be less than %d characters", maxPrivateMetadata+1)
	}
	cb, _ := def["callback_id"].(string)
	if utf8.RuneCountInString(cb) > maxCallbackID {
		v.add("/view/callback_id", "must be less than %d characters", maxCallbackID+1)
	}
	if len(v.errs) > 0 {
		return nil, &blocksError{code: "invalid_arguments", errs: v.errs}
	}
	assignBlockIDs(blocks)
	b, err := json.Marshal(blocks)
	if err != nil {
		return nil, fmt.Errorf("marshal view blocks: %w", err)
	}
	sv := &storedView{}
	sv.Type = "modal"
	sv.Blocks = b
	sv.CallbackID = cb
	sv.PrivateMetadata = pm
	sv.ExternalID, _ = def["external_id"].(string)
	sv.NotifyOnClose, _ = def["notify_on_close"].(bool)
	sv.clearOnClose, _ = def["clear_on_close"].(bool)
	sv.title, sv.Title = textObj(def["title"])
	sv.submit, sv.Submit = textObj(def["submit"])
	sv.closeBtn, sv.Close = textObj(def["close"])
	return sv, nil
}

func prefixPointer(e, prefix string) string {
	const marker = "[json-pointer:"
	for i := 0; i+len(marker) <= len(e); i++ {
		if e[i:i+len(marker)] == marker {
			return e[:i+len(marker)] + prefix + e[i+len(marker):]
		}
	}
	return e
}

// textObj returns a text object as JSON and its text.
func textObj(v any) (json.RawMessage, string) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, ""
	}
	b, _ := json.Marshal(m)
	s, _ := m["text"].(string)
	return b, s
}

// slackJSON is the view object of views.* answers and payloads.
func (v *storedView) slackJSON() map[string]any {
	state := map[string]any{"values": map[string]any{}}
	if v.state != nil {
		state["values"] = v.state
	}
	raw := func(r json.RawMessage) any {
		if len(r) == 0 {
			return nil
		}
		return r
	}
	return map[string]any{
		"id": v.ID, "team_id": TeamID, "type": v.Type, "blocks": json.RawMessage(v.Blocks),
		"private_metadata": v.PrivateMetadata, "callback_id": v.CallbackID, "state": state,
		"hash": v.Hash, "title": raw(v.title), "clear_on_close": v.clearOnClose,
		"notify_on_close": v.NotifyOnClose, "close": raw(v.closeBtn), "submit": raw(v.submit),
		"previous_view_id": nilIfEmpty(v.PreviousViewID), "root_view_id": v.RootViewID,
		"app_id": AppID, "external_id": v.ExternalID, "app_installed_team_id": TeamID, "bot_id": BotID,
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// takeTrigger checks and consumes a trigger_id (callers hold s.mu).
func (s *Server) takeTrigger(id string) (*trigger, error) {
	if id == "" {
		return nil, &blocksError{code: "invalid_arguments", errs: []string{"missing required field: trigger_id [json-pointer:/trigger_id]"}}
	}
	t, ok := s.st.triggers[id]
	switch {
	case !ok:
		return nil, errCode("invalid_trigger_id")
	case t.used:
		return nil, errCode("exchanged_trigger_id")
	case time.Since(t.created) > s.opts.TriggerTTL:
		return nil, errCode("expired_trigger_id")
	}
	t.used = true
	return t, nil
}

type viewCall struct {
	TriggerID  string          `json:"trigger_id"`
	View       json.RawMessage `json:"view"`
	ViewID     string          `json:"view_id"`
	ExternalID string          `json:"external_id"`
	Hash       string          `json:"hash"`
}

func decodeViewCall(req *apiReq) (viewCall, error) {
	var vc viewCall
	if len(req.body) > 0 {
		if err := json.Unmarshal(req.body, &vc); err != nil {
			return vc, errCode("invalid_json")
		}
	} else {
		vc.TriggerID, vc.ViewID = req.params["trigger_id"], req.params["view_id"]
		vc.ExternalID, vc.Hash = req.params["external_id"], req.params["hash"]
		vc.View = json.RawMessage(req.params["view"])
	}
	return vc, nil
}

// storeView gives v an ID and hash and records it (callers hold s.mu).
func (s *Server) storeView(v *storedView, user string) {
	v.ID = s.st.nextID("V")
	v.User = user
	v.Open = true
	v.Hash = fmt.Sprintf("%d.%s", time.Now().Unix(), randomToken(8))
	s.st.views = append(s.st.views, v)
}

func (s *Server) viewsOpen(req *apiReq) (map[string]any, error) {
	vc, err := decodeViewCall(req)
	if err != nil {
		return nil, err
	}
	v, err := viewFromJSON(vc.View)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.takeTrigger(vc.TriggerID)
	if err != nil {
		return nil, err
	}
	if v.ExternalID != "" && s.st.viewByExternalID(v.ExternalID) != nil {
		return nil, errCode("duplicate_external_id")
	}
	s.closeStack(t.user)
	s.storeView(v, t.user)
	v.RootViewID = v.ID
	s.st.stacks[t.user] = []string{v.ID}
	s.st.notify()
	return map[string]any{"view": v.slackJSON()}, nil
}

// closeStack closes every open view of user (callers hold s.mu).
func (s *Server) closeStack(user string) {
	for _, id := range s.st.stacks[user] {
		if v := s.st.view(id); v != nil {
			v.Open = false
		}
	}
	delete(s.st.stacks, user)
}

func (s *Server) viewsPush(req *apiReq) (map[string]any, error) {
	vc, err := decodeViewCall(req)
	if err != nil {
		return nil, err
	}
	v, err := viewFromJSON(vc.View)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.takeTrigger(vc.TriggerID)
	if err != nil {
		return nil, err
	}
	stack := s.st.stacks[t.user]
	if len(stack) == 0 {
		return nil, errCode("not_found")
	}
	if len(stack) >= maxViewStack {
		return nil, errCode("push_limit_reached")
	}
	s.pushView(v, t.user)
	return map[string]any{"view": v.slackJSON()}, nil
}

// pushView stores v on top of user's stack (callers hold s.mu).
func (s *Server) pushView(v *storedView, user string) {
	stack := s.st.stacks[user]
	s.storeView(v, user)
	v.RootViewID = stack[0]
	v.PreviousViewID = stack[len(stack)-1]
	s.st.stacks[user] = append(stack, v.ID)
	s.st.notify()
}

func (s *Server) viewsUpdate(req *apiReq) (map[string]any, error) {
	vc, err := decodeViewCall(req)
	if err != nil {
		return nil, err
	}
	if vc.ViewID == "" && vc.ExternalID == "" {
		return nil, &blocksError{code: "invalid_arguments", errs: []string{"either view_id or external_id is required [json-pointer:/view_id]"}}
	}
	nv, err := viewFromJSON(vc.View)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var v *storedView
	if vc.ViewID != "" {
		v = s.st.view(vc.ViewID)
	} else {
		v = s.st.viewByExternalID(vc.ExternalID)
	}
	if v == nil || !v.Open {
		return nil, errCode("not_found")
	}
	if vc.Hash != "" && vc.Hash != v.Hash {
		return nil, errCode("hash_conflict")
	}
	s.replaceView(v, nv)
	return map[string]any{"view": v.slackJSON()}, nil
}

// replaceView puts nv's content into v, keeping its identity (callers hold
// s.mu).
func (s *Server) replaceView(v, nv *storedView) {
	v.Blocks, v.CallbackID, v.PrivateMetadata = nv.Blocks, nv.CallbackID, nv.PrivateMetadata
	if nv.ExternalID != "" {
		v.ExternalID = nv.ExternalID
	}
	v.title, v.Title, v.submit, v.Submit, v.closeBtn, v.Close = nv.title, nv.Title, nv.submit, nv.Submit, nv.closeBtn, nv.Close
	v.NotifyOnClose, v.clearOnClose = nv.NotifyOnClose, nv.clearOnClose
	v.Hash = fmt.Sprintf("%d.%s", time.Now().Unix(), randomToken(8))
	v.Errors = nil
	v.state = nil
	s.st.notify()
}

package slackemu

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Block Kit limits enforced like Slack (slack-go checks none of them).
const (
	maxMessageBlocks   = 50
	maxModalBlocks     = 100
	maxSectionText     = 3000
	maxSectionFields   = 10
	maxFieldText       = 2000
	maxHeaderText      = 150
	maxButtonText      = 75
	maxButtonValue     = 2000
	maxURL             = 3000
	maxActionElements  = 25
	maxContextElements = 10
	maxConfirmTitle    = 100
	maxConfirmText     = 300
	maxConfirmButton   = 30
	maxTableRows       = 100
	maxTableCells      = 20
	maxBlockID         = 255
	maxActionID        = 255
	maxLabel           = 2000
	maxMarkdownText    = 12000
	maxModalTitle      = 24
	maxPrivateMetadata = 3000
	maxCallbackID      = 255
	maxMessageText     = 40000
)

type surface int

const (
	surfaceMessage surface = iota
	surfaceModal
)

var knownBlocks = map[string]bool{
	"section": true, "divider": true, "header": true, "context": true, "actions": true,
	"image": true, "input": true, "rich_text": true, "table": true, "markdown": true,
	"file": true, "video": true, "context_actions": true, "call": true,
}

var knownElements = map[string]bool{
	"button": true, "static_select": true, "multi_static_select": true, "external_select": true,
	"multi_external_select": true, "users_select": true, "multi_users_select": true,
	"conversations_select": true, "multi_conversations_select": true, "channels_select": true,
	"multi_channels_select": true, "overflow": true, "datepicker": true, "timepicker": true,
	"datetimepicker": true, "plain_text_input": true, "number_input": true, "email_text_input": true,
	"url_text_input": true, "checkboxes": true, "radio_buttons": true, "image": true,
	"rich_text_input": true, "workflow_button": true, "file_input": true,
}

// validator collects Slack-style error strings ("... [json-pointer:/blocks/0/text]").
type validator struct {
	errs []string
}

func (v *validator) add(ptr, format string, args ...any) {
	v.errs = append(v.errs, fmt.Sprintf(format, args...)+" [json-pointer:"+ptr+"]")
}

// parseBlocks decodes a blocks argument: a JSON array of objects.
func parseBlocks(raw []byte) ([]any, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("blocks: %w", err)
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("blocks: not an array")
	}
	return arr, nil
}

// validateBlocks checks blocks for a message or a modal and returns
// Slack's error strings (empty when valid).
func validateBlocks(blocks []any, where surface) []string {
	v := &validator{}
	limit := maxMessageBlocks
	if where == surfaceModal {
		limit = maxModalBlocks
	}
	if len(blocks) > limit {
		v.add("/blocks", "no more than %d items allowed", limit)
	}
	seenIDs := map[string]bool{}
	tables := 0
	for i, b := range blocks {
		ptr := fmt.Sprintf("/blocks/%d", i)
		obj, ok := b.(map[string]any)
		if !ok {
			v.add(ptr, "expected object")
			continue
		}
		typ, _ := obj["type"].(string)
		if typ == "" {
			v.add(ptr, "missing required field: type")
			continue
		}
		if !knownBlocks[typ] {
			v.add(ptr+"/type", "unsupported type: %s", typ)
			continue
		}
		if id, ok := obj["block_id"]; ok {
			s, isStr := id.(string)
			switch {
			case !isStr || s == "":
				v.add(ptr+"/block_id", "must be a non-empty string")
			case utf8.RuneCountInString(s) > maxBlockID:
				v.add(ptr+"/block_id", "must be less than %d characters", maxBlockID+1)
			case seenIDs[s]:
				v.add(ptr+"/block_id", "duplicate block_id: %s", s)
			default:
				seenIDs[s] = true
			}
		}
		switch typ {
		case "section":
			v.section(ptr, obj)
		case "header":
			v.textObject(ptr+"/text", obj["text"], true, maxHeaderText, "plain_text")
		case "context":
			v.context(ptr, obj)
		case "actions":
			v.actions(ptr, obj)
		case "image":
			v.image(ptr, obj)
		case "input":
			v.input(ptr, obj)
		case "rich_text":
			if _, ok := obj["elements"].([]any); !ok {
				v.add(ptr, "missing required field: elements")
			}
		case "table":
			tables++
			if tables > 1 {
				v.add(ptr, "only one table block is allowed per message")
			}
			v.table(ptr, obj)
		case "markdown":
			s, ok := obj["text"].(string)
			switch {
			case !ok || s == "":
				v.add(ptr, "missing required field: text")
			case utf8.RuneCountInString(s) > maxMarkdownText:
				v.add(ptr+"/text", "must be less than %d characters", maxMarkdownText+1)
			}
		}
	}
	return v.errs
}

func (v *validator) textObject(ptr string, t any, required bool, max int, types ...string) {
	if t == nil {
		if required {
			v.add(ptr, "missing required field")
		}
		return
	}
	obj, ok := t.(map[string]any)
	if !ok {
		v.add(ptr, "expected object")
		return
	}
	typ, _ := obj["type"].(string)
	allowed := types
	if len(allowed) == 0 {
		allowed = []string{"plain_text", "mrkdwn"}
	}
	okType := false
	for _, a := range allowed {
		okType = okType || typ == a
	}
	if !okType {
		v.add(ptr+"/type", "must be one of %s", strings.Join(allowed, ", "))
	}
	s, _ := obj["text"].(string)
	n := utf8.RuneCountInString(s)
	switch {
	case n == 0:
		v.add(ptr+"/text", "must be more than 0 characters")
	case n > max:
		v.add(ptr+"/text", "must be less than %d characters", max+1)
	}
}

func (v *validator) section(ptr string, obj map[string]any) {
	_, hasText := obj["text"]
	fields, hasFields := obj["fields"]
	if !hasText && !hasFields {
		v.add(ptr, "must provide text or fields")
	}
	if hasText {
		v.textObject(ptr+"/text", obj["text"], true, maxSectionText)
	}
	if hasFields {
		arr, ok := fields.([]any)
		switch {
		case !ok:
			v.add(ptr+"/fields", "expected array")
		case len(arr) > maxSectionFields:
			v.add(ptr+"/fields", "no more than %d items allowed", maxSectionFields)
		}
		for i, f := range arr {
			v.textObject(fmt.Sprintf("%s/fields/%d", ptr, i), f, true, maxFieldText)
		}
	}
	if acc, ok := obj["accessory"]; ok {
		v.element(ptr+"/accessory", acc, nil)
	}
}

func (v *validator) context(ptr string, obj map[string]any) {
	arr, ok := obj["elements"].([]any)
	if !ok || len(arr) == 0 {
		v.add(ptr+"/elements", "must provide at least 1 item")
		return
	}
	if len(arr) > maxContextElements {
		v.add(ptr+"/elements", "no more than %d items allowed", maxContextElements)
	}
	for i, e := range arr {
		p := fmt.Sprintf("%s/elements/%d", ptr, i)
		el, _ := e.(map[string]any)
		switch t, _ := el["type"].(string); t {
		case "image":
			v.image(p, el)
		case "plain_text", "mrkdwn":
			v.textObject(p, el, true, maxSectionText)
		default:
			v.add(p+"/type", "unsupported type: %s", t)
		}
	}
}

func (v *validator) actions(ptr string, obj map[string]any) {
	arr, ok := obj["elements"].([]any)
	if !ok || len(arr) == 0 {
		v.add(ptr+"/elements", "must provide at least 1 item")
		return
	}
	if len(arr) > maxActionElements {
		v.add(ptr+"/elements", "no more than %d items allowed", maxActionElements)
	}
	seen := map[string]bool{}
	for i, e := range arr {
		v.element(fmt.Sprintf("%s/elements/%d", ptr, i), e, seen)
	}
}

func (v *validator) element(ptr string, e any, seenActionIDs map[string]bool) {
	el, ok := e.(map[string]any)
	if !ok {
		v.add(ptr, "expected object")
		return
	}
	typ, _ := el["type"].(string)
	if !knownElements[typ] {
		v.add(ptr+"/type", "unsupported type: %s", typ)
		return
	}
	if a, ok := el["action_id"]; ok {
		s, _ := a.(string)
		switch {
		case s == "":
			v.add(ptr+"/action_id", "must be a non-empty string")
		case utf8.RuneCountInString(s) > maxActionID:
			v.add(ptr+"/action_id", "must be less than %d characters", maxActionID+1)
		case seenActionIDs != nil && seenActionIDs[s]:
			v.add(ptr+"/action_id", "duplicate action_id: %s", s)
		case seenActionIDs != nil:
			seenActionIDs[s] = true
		}
	}
	switch typ {
	case "button":
		v.textObject(ptr+"/text", el["text"], true, maxButtonText, "plain_text")
		if s, ok := el["value"].(string); ok && utf8.RuneCountInString(s) > maxButtonValue {
			v.add(ptr+"/value", "must be less than %d characters", maxButtonValue+1)
		}
		if s, ok := el["url"].(string); ok && utf8.RuneCountInString(s) > maxURL {
			v.add(ptr+"/url", "must be less than %d characters", maxURL+1)
		}
		if st, ok := el["style"]; ok {
			if s, _ := st.(string); s != "primary" && s != "danger" {
				v.add(ptr+"/style", "must be one of primary, danger")
			}
		}
	case "image":
		v.image(ptr, el)
	}
	if c, ok := el["confirm"]; ok {
		v.confirm(ptr+"/confirm", c)
	}
}

func (v *validator) confirm(ptr string, c any) {
	obj, ok := c.(map[string]any)
	if !ok {
		v.add(ptr, "expected object")
		return
	}
	v.textObject(ptr+"/title", obj["title"], true, maxConfirmTitle, "plain_text")
	v.textObject(ptr+"/text", obj["text"], true, maxConfirmText)
	v.textObject(ptr+"/confirm", obj["confirm"], true, maxConfirmButton, "plain_text")
	v.textObject(ptr+"/deny", obj["deny"], true, maxConfirmButton, "plain_text")
	if st, ok := obj["style"]; ok {
		if s, _ := st.(string); s != "primary" && s != "danger" {
			v.add(ptr+"/style", "must be one of primary, danger")
		}
	}
}

func (v *validator) image(ptr string, obj map[string]any) {
	_, hasURL := obj["image_url"].(string)
	_, hasFile := obj["slack_file"].(map[string]any)
	if !hasURL && !hasFile {
		v.add(ptr, "missing required field: image_url")
	}
	if s, _ := obj["alt_text"].(string); s == "" {
		v.add(ptr, "missing required field: alt_text")
	}
}

func (v *validator) input(ptr string, obj map[string]any) {
	v.textObject(ptr+"/label", obj["label"], true, maxLabel, "plain_text")
	if h, ok := obj["hint"]; ok {
		v.textObject(ptr+"/hint", h, true, maxLabel, "plain_text")
	}
	el, ok := obj["element"]
	if !ok {
		v.add(ptr, "missing required field: element")
		return
	}
	v.element(ptr+"/element", el, nil)
}

func (v *validator) table(ptr string, obj map[string]any) {
	rows, ok := obj["rows"].([]any)
	if !ok || len(rows) == 0 {
		v.add(ptr+"/rows", "must provide at least 1 item")
		return
	}
	if len(rows) > maxTableRows {
		v.add(ptr+"/rows", "no more than %d items allowed", maxTableRows)
	}
	for i, r := range rows {
		cells, ok := r.([]any)
		p := fmt.Sprintf("%s/rows/%d", ptr, i)
		switch {
		case !ok || len(cells) == 0:
			v.add(p, "must provide at least 1 item")
		case len(cells) > maxTableCells:
			v.add(p, "no more than %d items allowed", maxTableCells)
		}
		for j, c := range cells {
			cell, _ := c.(map[string]any)
			switch t, _ := cell["type"].(string); t {
			case "raw_text", "raw_number", "rich_text":
			default:
				v.add(fmt.Sprintf("%s/%d/type", p, j), "unsupported type: %s", t)
			}
		}
	}
}

// assignBlockIDs gives every block without a block_id, and every
// interactive element without an action_id, a fresh random one, as Slack
// does, and reports whether it changed anything.
func assignBlockIDs(blocks []any) bool {
	used := map[string]bool{}
	for _, b := range blocks {
		if obj, ok := b.(map[string]any); ok {
			if id, ok := obj["block_id"].(string); ok {
				used[id] = true
			}
		}
	}
	changed := false
	for _, b := range blocks {
		obj, ok := b.(map[string]any)
		if !ok {
			continue
		}
		for _, el := range blockElements(obj) {
			if _, ok := el["action_id"]; !ok {
				el["action_id"] = randomToken(5)
				changed = true
			}
		}
		if _, ok := obj["block_id"]; ok {
			continue
		}
		id := randomToken(5)
		for used[id] {
			id = randomToken(5)
		}
		used[id] = true
		obj["block_id"] = id
		changed = true
	}
	return changed
}

// blocksError is an invalid_blocks (messages) or invalid_arguments (views)
// answer.
type blocksError struct {
	code string
	errs []string
}

func (e *blocksError) Error() string { return e.code + ": " + strings.Join(e.errs, "; ") }

// normalizeMessageBlocks parses, validates and completes message blocks.
// It returns nil for an empty argument.
func normalizeMessageBlocks(raw string) (json.RawMessage, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil
	}
	blocks, err := parseBlocks([]byte(raw))
	if err != nil {
		return nil, &slackError{code: "invalid_blocks_format"}
	}
	if errs := validateBlocks(blocks, surfaceMessage); len(errs) > 0 {
		return nil, &blocksError{code: "invalid_blocks", errs: errs}
	}
	assignBlockIDs(blocks)
	out, err := json.Marshal(blocks)
	if err != nil {
		return nil, fmt.Errorf("marshal blocks: %w", err)
	}
	return out, nil
}

// findElement finds the interactive element with actionID in blocks and
// returns it with its block's block_id.
func findElement(blocks json.RawMessage, actionID string) (el map[string]any, blockID string, ok bool) {
	var arr []map[string]any
	if json.Unmarshal(blocks, &arr) != nil {
		return nil, "", false
	}
	for _, b := range arr {
		bid, _ := b["block_id"].(string)
		for _, m := range blockElements(b) {
			if id, _ := m["action_id"].(string); id == actionID {
				return m, bid, true
			}
		}
	}
	return nil, "", false
}

// blockElements returns the interactive elements of a block: the elements
// of actions (not of context or rich_text), a section's accessory, an
// input's element.
func blockElements(b map[string]any) []map[string]any {
	var out []map[string]any
	add := func(c any) {
		if m, ok := c.(map[string]any); ok && knownElements[fmt.Sprint(m["type"])] && m["type"] != "image" {
			out = append(out, m)
		}
	}
	switch b["type"] {
	case "actions", "context_actions":
		if els, ok := b["elements"].([]any); ok {
			for _, e := range els {
				add(e)
			}
		}
	case "section":
		add(b["accessory"])
	case "input":
		add(b["element"])
	}
	return out
}

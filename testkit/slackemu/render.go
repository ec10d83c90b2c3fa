package slackemu

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// blockRenderer turns Block Kit JSON into HTML for the page. Every string
// from a block is escaped; the output is trusted HTML.
type blockRenderer struct {
	md          mrkdwnRenderer
	interactive bool              // buttons can be clicked
	modal       bool              // rendering a modal: inputs are live
	errors      map[string]string // inline errors by block_id (modals)
	b           strings.Builder
}

func (r *blockRenderer) w(parts ...string) {
	for _, p := range parts {
		r.b.WriteString(p)
	}
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func obj(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func arr(v any) []any {
	a, _ := v.([]any)
	return a
}

// text renders a text object (plain_text or mrkdwn).
func (r *blockRenderer) text(v any) string {
	t := obj(v)
	if t == nil {
		return ""
	}
	s := str(t, "text")
	if str(t, "type") == "mrkdwn" {
		return r.md.render(s)
	}
	out := escape(s)
	if e, ok := t["emoji"].(bool); !ok || e {
		out = replaceEmoji(out, nil)
	}
	return strings.ReplaceAll(out, "\n", "<br>")
}

// blocks renders a list of blocks.
func (r *blockRenderer) blocks(raw json.RawMessage) string {
	var list []any
	if len(raw) == 0 || json.Unmarshal(raw, &list) != nil {
		return ""
	}
	for _, b := range list {
		r.block(obj(b))
	}
	return r.b.String()
}

func (r *blockRenderer) block(b map[string]any) {
	if b == nil {
		return
	}
	bid := escape(str(b, "block_id"))
	switch typ := str(b, "type"); typ {
	case "header":
		r.w(`<div class="sk-header" data-block="`, bid, `">`, r.text(b["text"]), `</div>`)
	case "divider":
		r.w(`<hr class="sk-divider">`)
	case "section":
		r.w(`<div class="sk-section" data-block="`, bid, `"><div class="sk-section-body">`)
		if b["text"] != nil {
			r.w(`<div class="sk-text">`, r.text(b["text"]), `</div>`)
		}
		if fields := arr(b["fields"]); len(fields) > 0 {
			r.w(`<div class="sk-fields">`)
			for _, f := range fields {
				r.w(`<div class="sk-field">`, r.text(f), `</div>`)
			}
			r.w(`</div>`)
		}
		r.w(`</div>`)
		if acc := obj(b["accessory"]); acc != nil {
			r.w(`<div class="sk-accessory">`)
			r.element(acc, str(b, "block_id"))
			r.w(`</div>`)
		}
		r.w(`</div>`)
	case "context":
		r.w(`<div class="sk-context" data-block="`, bid, `">`)
		for _, e := range arr(b["elements"]) {
			el := obj(e)
			if str(el, "type") == "image" {
				r.w(`<span class="sk-context-img" title="`, escape(str(el, "alt_text")), `">🖼</span>`)
				continue
			}
			r.w(`<span class="sk-context-text">`, r.text(el), `</span>`)
		}
		r.w(`</div>`)
	case "actions", "context_actions":
		r.w(`<div class="sk-actions" data-block="`, bid, `">`)
		for _, e := range arr(b["elements"]) {
			r.element(obj(e), str(b, "block_id"))
		}
		r.w(`</div>`)
	case "image":
		r.w(`<figure class="sk-image" data-block="`, bid, `">`)
		if b["title"] != nil {
			r.w(`<figcaption>`, r.text(b["title"]), `</figcaption>`)
		}
		r.w(`<div class="sk-image-box" title="`, escape(str(b, "image_url")), `">🖼 `, escape(str(b, "alt_text")), `</div></figure>`)
	case "input":
		r.input(b)
	case "rich_text":
		r.w(`<div class="sk-rich" data-block="`, bid, `">`)
		r.richElements(arr(b["elements"]))
		r.w(`</div>`)
	case "table":
		r.table(b)
	case "markdown":
		r.w(`<div class="sk-markdown" data-block="`, bid, `">`, r.markdown(str(b, "text")), `</div>`)
	default:
		r.w(`<div class="sk-unsupported">[`, escape(typ), ` block: not shown by the emulator]</div>`)
	}
}

// element renders an interactive element (or an image accessory).
func (r *blockRenderer) element(el map[string]any, blockID string) {
	if el == nil {
		return
	}
	aid := escape(str(el, "action_id"))
	switch str(el, "type") {
	case "button":
		style := str(el, "style")
		cls := "sk-btn"
		if style == "primary" || style == "danger" {
			cls += " sk-btn-" + style
		}
		dis := ""
		if !r.interactive {
			dis = " disabled"
		}
		r.w(`<span class="sk-btn-wrap"><button type="button" class="`, cls, `" data-action="`, aid,
			`" data-block="`, escape(blockID), `" data-value="`, escape(str(el, "value")), `"`)
		if u := str(el, "url"); u != "" {
			r.w(` data-url="`, escape(u), `"`)
		}
		if el["confirm"] != nil {
			r.w(` data-confirm="1"`)
		}
		r.w(dis, `>`, r.text(el["text"]), `</button>`)
		if c := obj(el["confirm"]); c != nil {
			r.confirm(c)
		}
		r.w(`</span>`)
	case "image":
		r.w(`<div class="sk-thumb" title="`, escape(str(el, "alt_text")), `">🖼</div>`)
	case "overflow":
		r.w(`<button type="button" class="sk-btn sk-overflow" disabled title="overflow menus are not interactive in the emulator">⋯</button>`)
	case "static_select", "multi_static_select", "users_select", "conversations_select", "channels_select", "external_select":
		r.w(`<select class="sk-select" disabled title="selects in messages are not interactive in the emulator"><option>`,
			r.placeholder(el, "Select…"), `</option></select>`)
	case "datepicker", "timepicker", "datetimepicker":
		r.w(`<span class="sk-select sk-picker" title="not interactive in the emulator">📅 `, r.placeholder(el, "Pick"), `</span>`)
	default:
		r.w(`<span class="sk-unsupported">[`, escape(str(el, "type")), `]</span>`)
	}
}

func (r *blockRenderer) placeholder(el map[string]any, def string) string {
	if p := obj(el["placeholder"]); p != nil {
		return escape(str(p, "text"))
	}
	if o := obj(el["initial_option"]); o != nil {
		return r.text(o["text"])
	}
	return escape(def)
}

// confirm renders a confirm dialog into a <template> the page's script
// shows when the button is clicked.
func (r *blockRenderer) confirm(c map[string]any) {
	okCls := "sk-btn sk-btn-primary"
	if str(c, "style") == "danger" {
		okCls = "sk-btn sk-btn-danger"
	}
	r.w(`<template class="confirm-tpl"><div class="dialog-title">`, r.text(c["title"]),
		`</div><div class="dialog-body">`, r.text(c["text"]), `</div><div class="dialog-actions">`,
		`<button type="button" class="sk-btn confirm-deny">`, r.text(c["deny"]), `</button>`,
		`<button type="button" class="`, okCls, ` confirm-ok">`, r.text(c["confirm"]), `</button></div></template>`)
}

// input renders an input block: live in a modal, inert in a message.
func (r *blockRenderer) input(b map[string]any) {
	bid := str(b, "block_id")
	el := obj(b["element"])
	aid := str(el, "action_id")
	errMsg := r.errors[bid]
	cls := "sk-input"
	if errMsg != "" {
		cls += " has-error"
	}
	optional, _ := b["optional"].(bool)
	r.w(`<div class="`, cls, `" data-block="`, escape(bid), `"><label class="sk-label" for="in-`, escape(bid), `">`, r.text(b["label"]))
	if optional {
		r.w(` <span class="sk-optional">(optional)</span>`)
	}
	r.w(`</label>`)
	dis := ""
	if !r.modal {
		dis = " disabled"
	}
	common := ` id="in-` + escape(bid) + `" data-block="` + escape(bid) + `" data-action="` + escape(aid) + `"` + dis
	if !optional {
		common += ` required`
	}
	ph := ""
	if p := obj(el["placeholder"]); p != nil {
		ph = ` placeholder="` + escape(str(p, "text")) + `"`
	}
	for _, k := range []string{"min_length", "max_length"} {
		if n, ok := el[k].(float64); ok {
			common += ` data-` + strings.ReplaceAll(k, "_", "") + `="` + strconv.Itoa(int(n)) + `"`
		}
	}
	switch str(el, "type") {
	case "plain_text_input":
		if ml, _ := el["multiline"].(bool); ml {
			r.w(`<textarea class="sk-field-input" rows="4"`, common, ph, `>`, escape(str(el, "initial_value")), `</textarea>`)
		} else {
			r.w(`<input type="text" class="sk-field-input"`, common, ph, ` value="`, escape(str(el, "initial_value")), `">`)
		}
	case "number_input", "email_text_input", "url_text_input":
		t := map[string]string{"number_input": "number", "email_text_input": "email", "url_text_input": "url"}[str(el, "type")]
		r.w(`<input type="`, t, `" class="sk-field-input"`, common, ph, ` value="`, escape(str(el, "initial_value")), `">`)
	case "static_select", "radio_buttons":
		initial := str(obj(el["initial_option"]), "value")
		r.w(`<select class="sk-field-input"`, common, `><option value="">`, r.placeholder(map[string]any{"placeholder": el["placeholder"]}, "Choose an option"), `</option>`)
		for _, o := range arr(el["options"]) {
			op := obj(o)
			sel := ""
			if str(op, "value") == initial && initial != "" {
				sel = " selected"
			}
			r.w(`<option value="`, escape(str(op, "value")), `"`, sel, `>`, escape(str(obj(op["text"]), "text")), `</option>`)
		}
		r.w(`</select>`)
	case "users_select":
		r.w(`<select class="sk-field-input"`, common, `><option value="">Choose a person</option>`)
		for _, u := range seedUsers {
			if !u.IsBot {
				r.w(`<option value="`, u.ID, `">`, escape(u.RealName), ` (@`, u.Name, `)</option>`)
			}
		}
		r.w(`</select>`)
	default:
		r.w(`<input type="text" class="sk-field-input"`, common, ph, `>`)
	}
	if errMsg != "" {
		r.w(`<div class="sk-error">⚠️ `, escape(errMsg), `</div>`)
	}
	if b["hint"] != nil {
		r.w(`<div class="sk-hint">`, r.text(b["hint"]), `</div>`)
	}
	r.w(`</div>`)
}

// richElements renders rich_text containers.
func (r *blockRenderer) richElements(els []any) {
	for _, e := range els {
		el := obj(e)
		switch str(el, "type") {
		case "rich_text_section":
			r.w(`<div class="sk-rich-section">`, r.inline(arr(el["elements"])), `</div>`)
		case "rich_text_preformatted":
			r.w(`<pre class="sk-pre">`, r.inline(arr(el["elements"])), `</pre>`)
		case "rich_text_quote":
			r.w(`<blockquote class="sk-quote">`, r.inline(arr(el["elements"])), `</blockquote>`)
		case "rich_text_list":
			tag := "ul"
			if str(el, "style") == "ordered" {
				tag = "ol"
			}
			indent, _ := el["indent"].(float64)
			r.w(`<`, tag, ` class="sk-list" style="margin-left:`, strconv.Itoa(int(indent)*20), `px">`)
			for _, item := range arr(el["elements"]) {
				r.w(`<li>`, r.inline(arr(obj(item)["elements"])), `</li>`)
			}
			r.w(`</`, tag, `>`)
		}
	}
}

// inline renders rich_text section elements.
func (r *blockRenderer) inline(els []any) string {
	var b strings.Builder
	for _, e := range els {
		el := obj(e)
		var s string
		switch str(el, "type") {
		case "text":
			s = strings.ReplaceAll(escape(str(el, "text")), "\n", "<br>")
		case "link":
			t := str(el, "text")
			if t == "" {
				t = str(el, "url")
			}
			s = `<a href="` + escape(str(el, "url")) + `" target="_blank" rel="noopener">` + escape(t) + `</a>`
		case "emoji":
			s = emojiHTML(str(el, "name"), str(el, "unicode"))
		case "user":
			s = r.md.userMention(str(el, "user_id"), "")
		case "usergroup":
			s = r.md.token("!subteam^" + str(el, "usergroup_id"))
		case "channel":
			s = r.md.token("#" + str(el, "channel_id"))
		case "broadcast":
			s = `<span class="mention me">@` + escape(str(el, "range")) + `</span>`
		case "date":
			ts, _ := el["timestamp"].(float64)
			f := str(el, "format")
			if f == "" {
				f = "{date_short} {time}"
			}
			s = r.md.date(fmt.Sprintf("!date^%d^%s", int64(ts), f), str(el, "fallback"))
		case "color":
			v := str(el, "value")
			s = `<span class="sk-color"><i style="background:` + escape(v) + `"></i>` + escape(v) + `</span>`
		default:
			s = escape(str(el, "text"))
		}
		if st := obj(el["style"]); st != nil {
			for _, f := range []struct{ key, tag string }{{"code", "code"}, {"bold", "b"}, {"italic", "i"}, {"strike", "s"}} {
				if on, _ := st[f.key].(bool); on {
					if f.tag == "code" {
						s = `<code class="sk-code">` + s + `</code>`
					} else {
						s = "<" + f.tag + ">" + s + "</" + f.tag + ">"
					}
				}
			}
		}
		b.WriteString(s)
	}
	return b.String()
}

// table renders the table block; the first row is the header.
func (r *blockRenderer) table(b map[string]any) {
	settings := arr(b["column_settings"])
	r.w(`<div class="sk-table-wrap" data-block="`, escape(str(b, "block_id")), `"><table class="sk-table">`)
	for i, row := range arr(b["rows"]) {
		tag := "td"
		if i == 0 {
			r.w(`<thead>`)
			tag = "th"
		} else if i == 1 {
			r.w(`<tbody>`)
		}
		r.w(`<tr>`)
		for j, c := range arr(row) {
			cell := obj(c)
			style := ""
			if j < len(settings) {
				s := obj(settings[j])
				if a := str(s, "align"); a == "left" || a == "center" || a == "right" {
					style = ` style="text-align:` + a + `"`
				}
				if wrap, _ := s["is_wrapped"].(bool); !wrap {
					style += ` class="nowrap"`
				}
			}
			var content string
			switch str(cell, "type") {
			case "raw_text":
				content = replaceEmoji(escape(str(cell, "text")), nil)
			case "raw_number":
				if t := str(cell, "text"); t != "" {
					content = escape(t)
				} else if v, ok := cell["value"].(float64); ok {
					content = strconv.FormatFloat(v, 'f', -1, 64)
				}
				if style == "" {
					style = ` style="text-align:right"`
				}
			case "rich_text":
				sub := &blockRenderer{md: r.md}
				sub.richElements(arr(cell["elements"]))
				content = sub.b.String()
			}
			r.w(`<`, tag, style, `>`, content, `</`, tag, `>`)
		}
		r.w(`</tr>`)
		if i == 0 {
			r.w(`</thead>`)
		}
	}
	if len(arr(b["rows"])) > 1 {
		r.w(`</tbody>`)
	}
	r.w(`</table></div>`)
}

// markdown renders the markdown block's standard Markdown (a useful
// subset: headings, lists, **bold**, *italic*, `code`, [links](url)).
func (r *blockRenderer) markdown(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		l := strings.TrimRight(line, " ")
		switch {
		case strings.HasPrefix(l, "### "), strings.HasPrefix(l, "## "), strings.HasPrefix(l, "# "):
			level := strings.Index(l, " ")
			out = append(out, fmt.Sprintf(`<div class="sk-md-h%d">%s</div>`, level, mdInline(l[level+1:])))
		case strings.HasPrefix(l, "- "), strings.HasPrefix(l, "* "):
			out = append(out, `<div class="sk-md-li">• `+mdInline(l[2:])+`</div>`)
		default:
			out = append(out, mdInline(l)+"<br>")
		}
	}
	return strings.Join(out, "")
}

func mdInline(s string) string {
	h := &holder{}
	s = replaceDelimited(s, "`", func(in string) string { return h.put(`<code class="sk-code">` + escape(in) + `</code>`) })
	for {
		i := strings.Index(s, "[")
		j := strings.Index(s, "](")
		if i < 0 || j < i {
			break
		}
		k := strings.Index(s[j:], ")")
		if k < 0 {
			break
		}
		u := s[j+2 : j+k]
		link := escape(s[i+1 : j])
		if strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") {
			link = `<a href="` + escape(u) + `" target="_blank" rel="noopener">` + link + `</a>`
		}
		s = s[:i] + h.put(link) + s[j+k+1:]
	}
	s = escape(s)
	s = replaceDelimited(s, "**", func(in string) string { return "<b>" + in + "</b>" })
	s = wrapMarker(s, '*', "i")
	s = replaceEmoji(s, h.put)
	return h.restore(s)
}

// attachments renders legacy attachments (colour bar, text, fields,
// blocks).
func (r *blockRenderer) attachments(raw json.RawMessage) string {
	var list []any
	if len(raw) == 0 || json.Unmarshal(raw, &list) != nil {
		return ""
	}
	start := r.b.Len()
	for _, a := range list {
		at := obj(a)
		color := str(at, "color")
		switch color {
		case "good":
			color = "#2eb67d"
		case "warning":
			color = "#ecb22e"
		case "danger":
			color = "#e01e5a"
		case "":
			color = "#dddddd"
		}
		if !strings.HasPrefix(color, "#") {
			color = "#" + color
		}
		r.w(`<div class="sk-attachment" style="border-left-color:`, escape(color), `">`)
		if p := str(at, "pretext"); p != "" {
			r.w(`<div>`, r.md.render(p), `</div>`)
		}
		if t := str(at, "title"); t != "" {
			r.w(`<div class="sk-att-title">`, escape(t), `</div>`)
		}
		if t := str(at, "text"); t != "" {
			r.w(`<div>`, r.md.render(t), `</div>`)
		}
		if fields := arr(at["fields"]); len(fields) > 0 {
			r.w(`<div class="sk-fields">`)
			for _, f := range fields {
				fo := obj(f)
				r.w(`<div class="sk-field"><b>`, escape(str(fo, "title")), `</b><br>`, r.md.render(str(fo, "value")), `</div>`)
			}
			r.w(`</div>`)
		}
		if bl, ok := at["blocks"]; ok {
			raw, _ := json.Marshal(bl)
			sub := &blockRenderer{md: r.md, interactive: r.interactive}
			r.w(sub.blocks(raw))
		}
		if f := str(at, "footer"); f != "" {
			r.w(`<div class="sk-context">`, escape(f), `</div>`)
		}
		r.w(`</div>`)
	}
	return r.b.String()[start:]
}

// formatClock renders a ts as the viewer's wall-clock time.
func formatClock(ts string, loc *time.Location) (string, string) {
	f, err := strconv.ParseFloat(ts, 64)
	if err != nil {
		return "", ""
	}
	t := time.Unix(int64(f), 0).In(loc)
	return t.Format("15:04"), t.Format("Monday, January 2 at 15:04:05 MST")
}

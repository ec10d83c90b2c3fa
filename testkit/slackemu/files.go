package slackemu

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// Slack's current file upload flow, as apps use it (slack-go's
// UploadFileContext):
//
//  1. files.getUploadURLExternal (filename, length) returns an upload_url
//     and a file_id;
//  2. the app POSTs the content to upload_url (multipart field "file", or
//     the raw body); the server answers "OK - <length>" as text;
//  3. files.completeUploadExternal (files=[{"id","title"}], channel_id,
//     thread_ts, initial_comment or blocks) shares the file: a message
//     carrying it appears in the channel or thread.
//
// A file is shared only once completed; completing one whose content did
// not arrive, or arrived with another length than announced, fails.

// maxUploadBytes bounds one upload (Slack allows 1 GB; tests need less).
const maxUploadBytes = 64 << 20

// File is an uploaded file.
type File struct {
	ID      string
	Name    string // the filename given to files.getUploadURLExternal
	Title   string
	Length  int    // announced by files.getUploadURLExternal
	Content []byte // as uploaded; nil until then
	// Channel, ThreadTS and MessageTS say where it was shared (empty until
	// files.completeUploadExternal).
	Channel, ThreadTS, MessageTS string
	Uploaded, Completed          bool
}

func (f *File) export() File {
	out := *f
	out.Content = append([]byte(nil), f.Content...)
	return out
}

func (f *File) slackJSON(base string) map[string]any {
	return map[string]any{
		"id": f.ID, "name": f.Name, "title": f.Title, "size": len(f.Content), "mimetype": mimeOf(f.Name),
		"filetype": strings.TrimPrefix(fileExt(f.Name), "."), "url_private": base + "/files/" + f.ID,
		"permalink": base + "/files/" + f.ID, "user": BotUserID, "is_external": false,
	}
}

func fileExt(name string) string {
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		return name[i:]
	}
	return ""
}

func mimeOf(name string) string {
	switch fileExt(name) {
	case ".txt", ".log":
		return "text/plain"
	case ".md":
		return "text/markdown"
	}
	if t := mime.TypeByExtension(fileExt(name)); t != "" {
		return t
	}
	return "application/octet-stream"
}

func (s *Server) filesGetUploadURLExternal(req *apiReq) (map[string]any, error) {
	name := strings.TrimSpace(req.params["filename"])
	n, err := strconv.Atoi(req.params["length"])
	if name == "" || err != nil || n <= 0 || n > maxUploadBytes {
		return nil, errCode("invalid_arguments")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &File{ID: s.st.nextID("F"), Name: name, Length: n}
	if s.st.files == nil {
		s.st.files = map[string]*File{}
	}
	s.st.files[f.ID] = f
	return map[string]any{"upload_url": s.base + "/upload/v1/" + f.ID, "file_id": f.ID}, nil
}

// handleUpload receives a file's content at its upload_url.
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	f := s.st.files[id]
	s.mu.Unlock()
	if f == nil || f.Uploaded {
		http.Error(w, "unknown or used upload URL", http.StatusNotFound)
		return
	}
	var body io.Reader = r.Body
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "multipart/form-data" {
		mr, err := r.MultipartReader()
		if err != nil {
			http.Error(w, "bad multipart body", http.StatusBadRequest)
			return
		}
		body = nil
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			if p.FormName() == "file" {
				body = p
				break
			}
		}
		if body == nil {
			http.Error(w, "no file part", http.StatusBadRequest)
			return
		}
	}
	b, err := io.ReadAll(io.LimitReader(body, maxUploadBytes+1))
	if err != nil || len(b) > maxUploadBytes {
		http.Error(w, "upload too large or cut", http.StatusRequestEntityTooLarge)
		return
	}
	s.mu.Lock()
	f.Content, f.Uploaded = b, true
	s.recordUpload(f)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "OK - %d", len(b))
}

// recordUpload adds the upload POST to the calls (callers hold s.mu).
func (s *Server) recordUpload(f *File) {
	s.st.calls = append(s.st.calls, Call{Method: "upload", Params: map[string]string{"file_id": f.ID, "length": strconv.Itoa(len(f.Content))}})
}

func (s *Server) filesCompleteUploadExternal(req *apiReq) (map[string]any, error) {
	var refs []struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	}
	if err := json.Unmarshal([]byte(req.params["files"]), &refs); err != nil || len(refs) == 0 {
		return nil, errCode("invalid_arguments")
	}
	in := messageInput{text: req.params["initial_comment"], threadTS: req.params["thread_ts"]}
	in.hasText = in.text != ""
	if raw, ok := req.params["blocks"]; ok && in.text == "" {
		b, err := normalizeMessageBlocks(raw)
		if err != nil {
			return nil, err
		}
		in.blocks, in.hasBlks = b, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var files []*File
	for _, ref := range refs {
		f := s.st.files[ref.ID]
		switch {
		case f == nil || f.Completed:
			return nil, errCode("file_not_found")
		case !f.Uploaded:
			return nil, errCode("file_upload_incomplete")
		case len(f.Content) != f.Length:
			return nil, errCode("file_size_mismatch")
		}
		files = append(files, f)
	}
	var out []map[string]any
	channel := req.params["channel_id"]
	if channel == "" {
		channel = req.params["channels"]
	}
	var msg *storedMsg
	if channel != "" {
		c, err := s.postChannel(channel)
		if err != nil {
			return nil, err
		}
		msg = s.botMessage(c.ID, in)
	}
	for i, f := range files {
		f.Title = refs[i].Title
		if f.Title == "" {
			f.Title = f.Name
		}
		f.Completed = true
		if msg != nil {
			f.Channel, f.ThreadTS, f.MessageTS = msg.Channel, msg.ThreadTS, msg.TS
			msg.files = append(msg.files, f)
		}
		out = append(out, map[string]any{"id": f.ID, "title": f.Title})
	}
	if msg != nil {
		s.st.addMessage(msg)
	}
	return map[string]any{"files": out}, nil
}

// Files returns every completed upload, in order.
func (s *Server) Files() []File {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []File
	for i := int64(1); i <= s.st.seq; i++ {
		if f := s.st.files[fmt.Sprintf("F%08X", i)]; f != nil && f.Completed {
			out = append(out, f.export())
		}
	}
	return out
}

// handleFile serves a file's content (the page's link).
func (s *Server) handleFile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	f := s.st.files[r.PathValue("id")]
	var b []byte
	name := ""
	if f != nil && f.Completed {
		b, name = f.Content, f.Name
	}
	s.mu.Unlock()
	if name == "" {
		http.NotFound(w, r)
		return
	}
	ct := mimeOf(name)
	if strings.HasPrefix(ct, "text/") {
		ct = "text/plain; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", `inline; filename="`+strings.ReplaceAll(name, `"`, "")+`"`)
	w.Write(b)
}

// filesHTML renders the files of a message as Slack shows them: a card
// with the name, the size and the first lines (callers hold s.mu).
func filesHTML(files []*File) string {
	var b strings.Builder
	for _, f := range files {
		preview := string(f.Content)
		lines := strings.SplitN(preview, "\n", 13)
		if len(lines) > 12 {
			lines = lines[:12]
		}
		preview = strings.Join(lines, "\n")
		if len(preview) > 2000 {
			preview = preview[:2000]
		}
		fmt.Fprintf(&b, `<div class="sk-file" data-file="%s"><div class="sk-file-head">📄 <a href="/files/%s" target="_blank" rel="noopener">%s</a> <span class="muted">%s · %s</span></div><pre class="sk-file-preview">%s</pre></div>`,
			html.EscapeString(f.ID), html.EscapeString(f.ID), html.EscapeString(f.Title), html.EscapeString(f.Name), sizeLabel(len(f.Content)), html.EscapeString(preview))
	}
	return b.String()
}

func sizeLabel(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

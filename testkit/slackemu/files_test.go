package slackemu

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/slack-go/slack"
)

// slack-go's UploadFileContext runs Slack's upload flow against the
// server: the file is shared into the thread, shown on the page and
// served from its link.
func TestUploadFlowIntoAThread(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := context.Background()
	_, parent, err := api.PostMessageContext(ctx, ChannelIncident, slack.MsgOptionText("RB-1 assessment", false))
	if err != nil {
		t.Fatal(err)
	}
	content := "===== pod prod/myapp-1 container app =====\npanic: <nil map>\n"
	f, err := api.UploadFileContext(ctx, slack.UploadFileParameters{
		Reader: strings.NewReader(content), FileSize: len(content), Filename: "RB-1-evidence.txt", Title: "RB-1 evidence",
		InitialComment: "evidence kept", Channel: ChannelIncident, ThreadTimestamp: parent,
	})
	if err != nil {
		t.Fatalf("UploadFileContext: %v", err)
	}
	if f.ID == "" || f.Title != "RB-1 evidence" {
		t.Errorf("file summary %+v", f)
	}
	var methods []string
	for _, c := range s.Calls() {
		methods = append(methods, c.Method)
	}
	if got := strings.Join(methods, ","); got != "chat.postMessage,files.getUploadURLExternal,upload,files.completeUploadExternal" {
		t.Errorf("calls: %s", got)
	}
	files := s.Files()
	if len(files) != 1 || string(files[0].Content) != content || files[0].ThreadTS != parent || files[0].Channel != ChannelIncident {
		t.Fatalf("files: %+v", files)
	}
	m, ok := s.Message(ChannelIncident, files[0].MessageTS)
	if !ok || m.ThreadTS != parent || m.Text != "evidence kept" || len(m.Files) != 1 || m.Files[0].ID != f.ID {
		t.Errorf("message %+v", m)
	}
	page := getPage(t, s, UserAlice, ChannelIncident)
	for _, want := range []string{`data-file="` + f.ID + `"`, "RB-1 evidence", "RB-1-evidence.txt", "panic: &lt;nil map&gt;", `href="/files/` + f.ID + `"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	resp, err := http.Get(strings.TrimSuffix(s.PageURL(), "/") + "/files/" + f.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != content || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("GET file: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}

// The flow's errors, as Slack answers them.
func TestUploadFlowErrors(t *testing.T) {
	s := newServer(t, Options{})
	api := apiClient(s, BotToken)
	ctx := context.Background()
	slackErr := func(err error) string {
		var se slack.SlackErrorResponse
		if errors.As(err, &se) {
			return se.Err
		}
		return "not a slack error: " + err.Error()
	}
	// No length: refused.
	if _, err := api.GetUploadURLExternalContext(ctx, slack.GetUploadURLExternalParameters{FileName: "x.txt", FileSize: -1}); slackErr(err) != "invalid_arguments" {
		t.Errorf("negative length: %v", err)
	}
	// Completing a file never uploaded.
	u, err := api.GetUploadURLExternalContext(ctx, slack.GetUploadURLExternalParameters{FileName: "x.txt", FileSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	_, err = api.CompleteUploadExternalContext(ctx, slack.CompleteUploadExternalParameters{Files: []slack.FileSummary{{ID: u.FileID}}, Channel: ChannelIncident})
	if slackErr(err) != "file_upload_incomplete" {
		t.Errorf("complete before upload: %v", err)
	}
	// Another length than announced.
	if err := api.UploadToURL(ctx, slack.UploadToURLParameters{UploadURL: u.UploadURL, Content: "too long", Filename: "x.txt"}); err != nil {
		t.Fatal(err)
	}
	_, err = api.CompleteUploadExternalContext(ctx, slack.CompleteUploadExternalParameters{Files: []slack.FileSummary{{ID: u.FileID}}, Channel: ChannelIncident})
	if slackErr(err) != "file_size_mismatch" {
		t.Errorf("length mismatch: %v", err)
	}
	// An unknown file, and a channel the bot is not in.
	_, err = api.CompleteUploadExternalContext(ctx, slack.CompleteUploadExternalParameters{Files: []slack.FileSummary{{ID: "F404"}}, Channel: ChannelIncident})
	if slackErr(err) != "file_not_found" {
		t.Errorf("unknown file: %v", err)
	}
	if len(s.Files()) != 0 {
		t.Errorf("files shared after errors: %+v", s.Files())
	}
}

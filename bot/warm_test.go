package bot

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// A warm pass takes both canned envelopes through a real Socket Mode
// client and websocket to their acks, and runs none of their work: the
// bot here has no engine and no store, so work would panic.
func TestWarmAckPathAcksBothKinds(t *testing.T) {
	b := &Bot{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for range 2 { // again, as after every unmap
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := b.warmAckPath(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The canned envelopes are one slash command and one button press, and
// decode as slack-go decodes them.
func TestWarmEnvelopesAreBothKinds(t *testing.T) {
	kinds := map[string]bool{}
	for _, envelope := range warmEnvelopes {
		var req socketmode.Request
		if err := json.Unmarshal(envelope, &req); err != nil {
			t.Fatal(err)
		}
		kinds[req.Type] = true
		switch req.Type {
		case socketmode.RequestTypeSlashCommands:
			var cmd slack.SlashCommand
			if err := json.Unmarshal(req.Payload, &cmd); err != nil || cmd.Command != "/rollback" || cmd.TriggerID == "" {
				t.Errorf("slash command envelope decodes to %+v, %v", cmd, err)
			}
		case socketmode.RequestTypeInteractive:
			var cb slack.InteractionCallback
			if err := json.Unmarshal(req.Payload, &cb); err != nil || cb.Type != slack.InteractionTypeBlockActions || len(cb.ActionCallback.BlockActions) != 1 {
				t.Errorf("interactive envelope decodes to type %q with %d actions, %v", cb.Type, len(cb.ActionCallback.BlockActions), err)
			}
		}
	}
	if !kinds[socketmode.RequestTypeSlashCommands] || !kinds[socketmode.RequestTypeInteractive] {
		t.Errorf("canned envelopes of kinds %v; want a slash command and an interactive one", kinds)
	}
}

// The loopback server reports an envelope left unacknowledged: a warm
// pass that acked nothing is not counted as done.
func TestWarmServerNeedsEveryAck(t *testing.T) {
	b := &Bot{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	saved := warmEnvelopes
	defer func() { warmEnvelopes = saved }()
	// An events_api envelope: acknowledge is never called for it.
	warmEnvelopes = append(append([][]byte{}, saved...), []byte(`{"envelope_id":"warm-3","type":"events_api","payload":{"type":"event_callback","event":{"type":"app_mention"}}}`))
	if err := b.warmAckPath(ctx); err == nil {
		t.Fatal("a warm pass with an envelope nobody acked reported success")
	}
}

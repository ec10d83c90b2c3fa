package bot

import (
	"encoding/json"
	"testing"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// The canned envelopes go through both decoders an ack of rollbot's
// needs: a slash command and a button's interaction callback.
func TestWarmAckPathDecodesBothKinds(t *testing.T) {
	if err := warmAckPath(); err != nil {
		t.Fatal(err)
	}
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

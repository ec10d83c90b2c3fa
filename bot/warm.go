package bot

import (
	"encoding/json"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// warmAckPath runs the code an acknowledgement needs, on a canned
// envelope of each kind rollbot acts on, without sending anything: the
// envelope's decoding (the socketmode.Request, then a slash command and a
// button's interaction callback, as slack-go decodes them) and the
// encoding of the ack. It is called after the executable's pages are
// trimmed or unmapped (pages.go), so the pages of that code are mapped
// again at once. A mapped page stays in memory where an unmapped one does
// not: a host that reclaims cold page cache (DAMON's proactive reclaim
// on this machine drops unmapped file pages not touched for a minute)
// would otherwise have dropped them by the next burst, whose acks then
// waited for disk reads (bench/ackload -idlefor 90s, 2026-12-05: 40–47
// major faults during the burst without it, 11–15 with it; the p99 that
// followed from them is in the README's benchmark table).
func warmAckPath() error {
	for _, envelope := range warmEnvelopes {
		var req socketmode.Request
		if err := json.Unmarshal(envelope, &req); err != nil {
			return err
		}
		switch req.Type {
		case socketmode.RequestTypeSlashCommands:
			var cmd slack.SlashCommand
			if err := json.Unmarshal(req.Payload, &cmd); err != nil {
				return err
			}
		case socketmode.RequestTypeInteractive:
			var cb slack.InteractionCallback
			if err := json.Unmarshal(req.Payload, &cb); err != nil {
				return err
			}
		}
		if _, err := json.Marshal(socketmode.Response{EnvelopeID: req.EnvelopeID}); err != nil {
			return err
		}
	}
	return nil
}

var warmEnvelopes = [][]byte{
	[]byte(`{"envelope_id":"warm-1","type":"slash_commands","accepts_response_payload":true,"payload":{"token":"","team_id":"T0","team_domain":"warm","channel_id":"C0","channel_name":"incident","user_id":"U0","user_name":"warm","command":"/rollback","text":"checkout","api_app_id":"A0","response_url":"https://example.invalid/","trigger_id":"1.2.3"}}`),
	[]byte(`{"envelope_id":"warm-2","type":"interactive","accepts_response_payload":false,"payload":{"type":"block_actions","trigger_id":"1.2.4","user":{"id":"U0","name":"warm"},"team":{"id":"T0"},"channel":{"id":"C0","name":"incident"},"container":{"type":"message","message_ts":"1.000001","channel_id":"C0"},"actions":[{"action_id":"confirm","block_id":"b","value":"RB-1","type":"button","action_ts":"1.000002"}]}}`),
}

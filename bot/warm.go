package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// warmAckPath runs a slash command and a button press through the code a
// real one takes up to its acknowledgement, and nothing after it: a
// Socket Mode client of slack-go's, like rollbot's own, connects to a
// loopback server of this function's, reads the two envelopes as
// websocket frames, parses them into events; Bot.acknowledge acks each
// one and the acks go back as masked frames, through slack-go's response
// sender. The work the envelopes call for is dropped; nothing leaves the
// process, and rollbot's own connection, metrics and idle clock are not
// touched.
//
// It is run after the executable's pages are trimmed or unmapped
// (pages_linux.go), so the pages of that code are mapped again at once. A
// mapped page stays in memory where an unmapped one does not: a host that
// reclaims cold page cache (DAMON's proactive reclaim on this machine
// drops unmapped file pages not touched for a minute) would otherwise have
// dropped them by the next burst, whose acks then waited for disk reads.
// Decoding canned envelopes alone (2026-12-05) left the socket's reader
// and writer, slack-go's event loop and the dispatch out: the first burst
// after 90 s idle still met 31–68 major faults (bench/ackload -idlefor
// 90s); the figures with this are in the README's benchmark table.
//
// It returns an error if the server did not get both acks, with the right
// envelope ids, within ctx.
func (b *Bot) warmAckPath(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	acked := make(chan error, 1)
	srv := &http.Server{Handler: warmServer(ln.Addr().String(), acked), ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	api := slack.New("xoxb-warm", slack.OptionAPIURL("http://"+ln.Addr().String()+"/"), slack.OptionAppLevelToken("xapp-warm"))
	sm := socketmode.New(api)
	runErr := make(chan error, 1)
	go func() { runErr <- sm.RunContext(ctx) }()
	for {
		select {
		case err := <-acked:
			return err
		case err := <-runErr:
			return fmt.Errorf("warm socket client stopped: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("warm acks: %w", context.Cause(ctx))
		case evt := <-sm.Events:
			if evt.Request == nil || (evt.Type != socketmode.EventTypeSlashCommand && evt.Type != socketmode.EventTypeInteractive) {
				continue
			}
			b.acknowledge(ctx, sm, evt)
		}
	}
}

// warmServer is the loopback end of warmAckPath: apps.connections.open
// names its websocket, which sends hello and the canned envelopes and
// reports on acked whether each came back acknowledged.
func warmServer(addr string, acked chan<- error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/apps.connections.open", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"ok": true, "url": "ws://" + addr + "/link"})
	})
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux.HandleFunc("/link", func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err == nil {
			err = exchangeWarmEnvelopes(conn)
			conn.Close()
		}
		select {
		case acked <- err:
		default: // a reconnect after the pass; it was reported
		}
	})
	return mux
}

func exchangeWarmEnvelopes(conn *websocket.Conn) error {
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello","num_connections":1}`)); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, envelope := range warmEnvelopes {
		var req socketmode.Request
		if err := json.Unmarshal(envelope, &req); err != nil {
			return err
		}
		want[req.EnvelopeID] = true
		if err := conn.WriteMessage(websocket.TextMessage, envelope); err != nil {
			return err
		}
	}
	for len(want) > 0 {
		var res socketmode.Response
		if err := conn.ReadJSON(&res); err != nil {
			return fmt.Errorf("warm acks: %d not acknowledged: %w", len(want), err)
		}
		if !want[res.EnvelopeID] {
			return fmt.Errorf("warm acks: an ack for %q, not a canned envelope", res.EnvelopeID)
		}
		delete(want, res.EnvelopeID)
	}
	return nil
}

// errWarmTimeout ends a warm pass that takes too long.
var errWarmTimeout = errors.New("the canned envelopes were not acknowledged in time")

// warmEnvelopes are a slash command and a button press as Slack sends
// them over Socket Mode.
var warmEnvelopes = [][]byte{
	[]byte(`{"envelope_id":"warm-1","type":"slash_commands","accepts_response_payload":true,"payload":{"token":"","team_id":"T0","team_domain":"warm","channel_id":"C0","channel_name":"incident","user_id":"U0","user_name":"warm","command":"/rollback","text":"checkout","api_app_id":"A0","response_url":"https://example.invalid/","trigger_id":"1.2.3"}}`),
	[]byte(`{"envelope_id":"warm-2","type":"interactive","accepts_response_payload":false,"payload":{"type":"block_actions","trigger_id":"1.2.4","user":{"id":"U0","name":"warm"},"team":{"id":"T0"},"channel":{"id":"C0","name":"incident"},"container":{"type":"message","message_ts":"1.000001","channel_id":"C0"},"actions":[{"action_id":"confirm","block_id":"b","value":"RB-1","type":"button","action_ts":"1.000002"}]}}`),
}

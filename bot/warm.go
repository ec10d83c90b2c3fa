package bot

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// warmAckPath runs a slash command and a button press through the code a
// real one takes up to its acknowledgement, and nothing after it: a
// Socket Mode client of slack-go's, like rollbot's own, opens its
// connection, reads the two envelopes as websocket frames and parses them
// into events; Bot.acknowledge acks each one and the acks go back as
// masked frames, through slack-go's response sender. The other end is in
// this process (warmPeer, over net.Pipe): nothing is sent anywhere, no
// port is opened, and rollbot's own connection, metrics and idle clock
// are not touched. The work the envelopes call for is dropped.
//
// It is run after the executable's pages are trimmed or unmapped
// (pages_linux.go), so the pages of that code are mapped again at once. A
// mapped page stays in memory where an unmapped one does not: a host that
// reclaims cold page cache (DAMON's proactive reclaim on this machine
// drops unmapped file pages not touched for a minute) would otherwise have
// dropped them by the next burst, whose acks then waited for disk reads.
// Decoding canned envelopes alone (2026-12-05) left the socket's reader
// and writer, slack-go's event loop and the dispatch out: the first burst
// after 90 s idle still met up to 68 major faults (bench/ackload -idlefor
// 90s); with this, 0–2. The peer is written by hand, not net/http's
// server with gorilla's Upgrader, and apps.connections.open is answered
// without an HTTP client: each page of code a pass touches stays mapped
// with its 64 KB neighbourhood (the kernel's fault-around), and those two
// cost 6.3 MB of resident executable (bench/ackload -idle, 2026-12-06).
//
// It returns an error unless the peer got both acks, with the right
// envelope ids, within ctx.
func (b *Bot) warmAckPath(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	acked := make(chan error, 1)
	envelopes := warmEnvelopes // read once: a reconnect's peer may outlive the pass
	dialer := &websocket.Dialer{
		HandshakeTimeout: 2 * time.Second,
		NetDialContext: func(context.Context, string, string) (net.Conn, error) {
			ours, peer := net.Pipe()
			go func() {
				err := warmPeer(peer, envelopes)
				peer.Close()
				select {
				case acked <- err:
				default: // a reconnect after the pass; it was reported
				}
			}()
			return ours, nil
		},
	}
	api := slack.New("xoxb-warm", slack.OptionAppLevelToken("xapp-warm"), slack.OptionHTTPClient(warmConnectionsOpen{}))
	sm := socketmode.New(api, socketmode.OptionDialer(dialer))
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

// warmConnectionsOpen answers the warm client's apps.connections.open with
// the URL of its peer; any other call is refused.
type warmConnectionsOpen struct{}

func (warmConnectionsOpen) Do(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	if !strings.HasSuffix(r.URL.Path, "/apps.connections.open") {
		return nil, fmt.Errorf("warm client: unexpected call %s", r.URL.Path)
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"application/json"}},
		Body:    io.NopCloser(strings.NewReader(`{"ok":true,"url":"ws://rollbot-warm.invalid/link"}`)),
		Request: r}, nil
}

// warmPeer is the server end of a warm pass: it completes the websocket
// handshake (RFC 6455 §4.2), sends hello and the canned envelopes as
// unmasked text frames and reads frames until every one of envelopes is
// acked.
func warmPeer(conn net.Conn, envelopes [][]byte) error {
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	key := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("warm handshake: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(name, "Sec-WebSocket-Key") {
			key = strings.TrimSpace(value)
		}
	}
	if key == "" {
		return errors.New("warm handshake: no Sec-WebSocket-Key")
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if _, err := fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:])); err != nil {
		return err
	}
	want := map[string]bool{}
	for i, envelope := range append([][]byte{[]byte(`{"type":"hello","num_connections":1}`)}, envelopes...) {
		if i > 0 {
			var req socketmode.Request
			if err := json.Unmarshal(envelope, &req); err != nil {
				return err
			}
			want[req.EnvelopeID] = true
		}
		if _, err := conn.Write(textFrame(envelope)); err != nil {
			return err
		}
	}
	for len(want) > 0 {
		payload, err := readClientFrame(r)
		if err != nil {
			return fmt.Errorf("warm acks: %d not acknowledged: %w", len(want), err)
		}
		if payload == nil {
			continue // a control frame
		}
		var res socketmode.Response
		if err := json.Unmarshal(payload, &res); err != nil {
			return fmt.Errorf("warm acks: %w", err)
		}
		if !want[res.EnvelopeID] {
			return fmt.Errorf("warm acks: an ack for %q, not a canned envelope", res.EnvelopeID)
		}
		delete(want, res.EnvelopeID)
	}
	return nil
}

// textFrame is one unmasked, final text frame, as a server sends it.
func textFrame(payload []byte) []byte {
	n := len(payload)
	var head []byte
	switch {
	case n < 126:
		head = []byte{0x81, byte(n)}
	case n <= 0xffff:
		head = []byte{0x81, 126, byte(n >> 8), byte(n)}
	default:
		head = []byte{0x81, 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return append(head, payload...)
}

// readClientFrame reads one frame a client sent (always masked) and
// returns its payload, or nil for a control frame (ping, pong, close).
// The warm client's acks are short single-frame text messages.
func readClientFrame(r *bufio.Reader) ([]byte, error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	if head[1]&0x80 == 0 {
		return nil, errors.New("an unmasked client frame")
	}
	n := uint64(head[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > 64<<10 {
		return nil, fmt.Errorf("a client frame of %d bytes", n)
	}
	var mask [4]byte
	if _, err := io.ReadFull(r, mask[:]); err != nil {
		return nil, err
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, err
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	if op := head[0] & 0x0f; op >= 8 {
		return nil, nil
	} else if op != 1 || head[0]&0x80 == 0 {
		return nil, fmt.Errorf("a client frame with opcode %d, final %t; want one text frame", op, head[0]&0x80 != 0)
	}
	return payload, nil
}

// errWarmTimeout ends a warm pass that takes too long.
var errWarmTimeout = errors.New("the canned envelopes were not acknowledged in time")

// warmEnvelopes are a slash command and a button press as Slack sends
// them over Socket Mode.
var warmEnvelopes = [][]byte{
	[]byte(`{"envelope_id":"warm-1","type":"slash_commands","accepts_response_payload":true,"payload":{"token":"","team_id":"T0","team_domain":"warm","channel_id":"C0","channel_name":"incident","user_id":"U0","user_name":"warm","command":"/rollback","text":"checkout","api_app_id":"A0","response_url":"https://example.invalid/","trigger_id":"1.2.3"}}`),
	[]byte(`{"envelope_id":"warm-2","type":"interactive","accepts_response_payload":false,"payload":{"type":"block_actions","trigger_id":"1.2.4","user":{"id":"U0","name":"warm"},"team":{"id":"T0"},"channel":{"id":"C0","name":"incident"},"container":{"type":"message","message_ts":"1.000001","channel_id":"C0"},"actions":[{"action_id":"confirm","block_id":"b","value":"RB-1","type":"button","action_ts":"1.000002"}]}}`),
}

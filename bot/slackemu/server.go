// Package slackemu is a local Slack-compatible server for tests and for the
// no-workspace demo.
//
// The unmodified slack-go client (Web API and socketmode) talks to it:
// point slack.New at APIURL with OptionAPIURL, use BotToken and AppToken, and
// run a socketmode client as usual. The server keeps a seeded workspace (team
// acme, a bot, four engineers and a viewer, two user groups, two channels),
// stores every message, view and scheduled message, validates Block Kit
// against Slack's limits, runs a Socket Mode hub (hello, pings, up to 10
// connections with one-of delivery, acks with a 3 s window, events_api
// redelivery) and serves response_urls itself.
//
// Tests act as people through SlashCommand, ClickButton, SubmitView and
// PostUserMessage, wait with WaitForMessage and inspect Messages, Views,
// Scheduled and Calls. Faults are injected with FailMethod, RateLimit,
// DelayMethod, DropConnections and DuplicateNextEnvelope.
//
// PageURL serves a chat page (server-rendered, live over SSE) where a person
// picks whom to act as, types slash commands, clicks buttons (with their
// confirm dialogs) and submits modals.
//
// This package is a development tool: the production bot must not import it
// (only the `rollbot demo` command does).
package slackemu

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// The only tokens the server accepts. BotToken works for every Web API
// method except apps.connections.open, which takes only AppToken, as in Slack.
const (
	BotToken = "xoxb-emulator-0000000001-rollbot-local"
	AppToken = "xapp-emulator-1-A0ROLLBOT-0000000001-local"
)

// Seeded workspace identifiers.
const (
	TeamID     = "T0ROLLBOT"
	TeamDomain = "acme"
	AppID      = "A0ROLLBOT"
	BotID      = "B0ROLLBOT"
	BotUserID  = "U0ROLLBOT"

	UserAlice = "U0ALICE" // on-call
	UserBob   = "U0BOB"   // on-call
	UserDana  = "U0DANA"  // DBA
	UserErin  = "U0ERIN"  // DBA
	UserEve   = "U0EVE"   // in no group: a viewer

	GroupOnCall = "S0ONCALL" // @oncall: alice, bob
	GroupDBA    = "S0DBA"    // @dba: dana, erin

	ChannelIncident = "C0INCIDENT" // #incident-rollbacks
	ChannelGeneral  = "C0GENERAL"  // #general
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Addr to listen on; default "127.0.0.1:0" (a free loopback port).
	Addr string
	// Log receives the server's own log lines; default discards them.
	Log *slog.Logger
	// AckTimeout is how long an envelope may go unacknowledged: Slack's
	// 3 s window. After it a slash command or interaction fails and an
	// events_api envelope is redelivered. Default 3s.
	AckTimeout time.Duration
	// TriggerTTL is how long a trigger_id can open a view; default 3s as
	// in Slack.
	TriggerTTL time.Duration
	// PingInterval between websocket PING frames; default 10s. slack-go
	// drops a connection that saw no ping for 30s.
	PingInterval time.Duration
	// MaxRedeliveries of an unacknowledged events_api envelope; default 3.
	MaxRedeliveries int
}

// Server is a running emulator. Create it with New, stop it with Close.
type Server struct {
	opts Options
	log  *slog.Logger
	ln   net.Listener
	srv  *http.Server
	base string // http://127.0.0.1:PORT

	hub *hub

	mu    sync.Mutex
	st    store
	flt   faults
	close chan struct{} // closed by Close
}

// New starts a server listening on opts.Addr. It listens before returning.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 3 * time.Second
	}
	if opts.TriggerTTL <= 0 {
		opts.TriggerTTL = 3 * time.Second
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 10 * time.Second
	}
	if opts.MaxRedeliveries <= 0 {
		opts.MaxRedeliveries = 3
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", opts.Addr, err)
	}
	s := &Server{
		opts:  opts,
		log:   opts.Log.With("component", "slackemu"),
		ln:    ln,
		base:  "http://" + ln.Addr().String(),
		close: make(chan struct{}),
	}
	s.st.init()
	s.hub = newHub(s)
	mux := http.NewServeMux()
	mux.HandleFunc("/api/", s.handleAPI)
	mux.HandleFunc("/link/", s.hub.handleLink)
	mux.HandleFunc("/response/", s.handleResponseURL)
	s.routePage(mux)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "err", err)
		}
	}()
	s.log.Info("listening", "api", s.APIURL(), "page", s.PageURL())
	return s, nil
}

// Close stops the server: it closes every websocket, SSE stream and pending
// wait, and the listener.
func (s *Server) Close() error {
	s.mu.Lock()
	select {
	case <-s.close:
		s.mu.Unlock()
		return nil
	default:
	}
	close(s.close)
	s.st.stopTimers()
	s.st.notify()
	s.mu.Unlock()
	s.hub.closeAll()
	if err := s.srv.Close(); err != nil {
		return fmt.Errorf("close slack emulator: %w", err)
	}
	return nil
}

// APIURL is the Web API base URL for slack.OptionAPIURL; it ends with "/".
func (s *Server) APIURL() string { return s.base + "/api/" }

// PageURL is the chat page.
func (s *Server) PageURL() string { return s.base + "/" }

// closed reports whether Close was called.
func (s *Server) closed() bool {
	select {
	case <-s.close:
		return true
	default:
		return false
	}
}

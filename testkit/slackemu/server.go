package slackemu

import (
	"context"
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
	ChannelTeamWeb  = "C0TEAMWEB"  // #web-incidents: one team's incident channel
	ChannelTeamPay  = "C0TEAMPAY"  // #payments-incidents: another team's
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
	// SlackRateLimits enforces Slack's per-method rate-limit tiers
	// (ratelimit.go): a call over its tier gets HTTP 429 with
	// Retry-After, as from Slack. Off by default.
	SlackRateLimits bool
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
	rl    rateLimits
	close chan struct{} // closed by Close

	bg     context.Context // ends with Close: background deliveries
	stopBG context.CancelFunc
	bgWG   sync.WaitGroup
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
	s.bg, s.stopBG = context.WithCancel(context.Background())
	s.st.init()
	s.hub = newHub(s)
	mux := http.NewServeMux()
	mux.HandleFunc("/api/", s.handleAPI)
	mux.HandleFunc("/link/", s.hub.handleLink)
	mux.HandleFunc("/response/", s.handleResponseURL)
	mux.HandleFunc("POST /upload/v1/{id}", s.handleUpload)
	mux.HandleFunc("GET /files/{id}", s.handleFile)
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
	s.stopBG()
	s.st.stopTimers()
	s.st.notify()
	s.mu.Unlock()
	s.bgWG.Wait()
	s.hub.shutdown()
	// Handlers end promptly once s.close is closed (SSE streams, delays);
	// Shutdown waits for them so nothing logs after Close returns.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		if cerr := s.srv.Close(); cerr != nil {
			return fmt.Errorf("close slack emulator: %w", cerr)
		}
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

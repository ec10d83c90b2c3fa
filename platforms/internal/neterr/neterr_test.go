package neterr

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"rollbot/testkit/nettest"
)

// get makes a real request and returns its error, with the ctx it ran in.
func get(t *testing.T, ctx context.Context, url string) error {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET %s succeeded, want a failure", url)
	}
	return err
}

// TestClassify provokes each failure for real (a closed port, a silent
// listener, a name that cannot resolve, a TLS server with an unknown
// authority, a plain HTTP server spoken to over TLS) and checks the
// classification and the words users see.
func TestClassify(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsSrv.Close)
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)

	tests := []struct {
		name   string
		err    func(ctx context.Context) error
		kind   Kind
		reason string
		msg    string
	}{
		{"refused", func(ctx context.Context) error { return get(t, ctx, "http://"+nettest.ClosedAddr(t)+"/") },
			Refused, "connection refused", "Peer X is not reachable (connection refused)"},
		{"timeout", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			return get(t, ctx, "http://"+silent.Addr().String()+"/")
		}, Timeout, "no answer within 2s", "Peer X did not answer within 2s"},
		{"dns", func(ctx context.Context) error { return get(t, ctx, "http://no-such-host.invalid/") },
			DNS, "cannot resolve no-such-host.invalid", "Peer X is not reachable (cannot resolve no-such-host.invalid)"},
		{"unknown authority", func(ctx context.Context) error { return get(t, ctx, tlsSrv.URL) },
			TLS, "TLS check failed: its certificate is signed by an authority rollbot does not trust",
			"Peer X failed the TLS check: its certificate is signed by an authority rollbot does not trust"},
		{"not TLS", func(ctx context.Context) error {
			c, err := (&tls.Dialer{}).DialContext(ctx, "tcp", strings.TrimPrefix(plain.URL, "http://"))
			if err == nil {
				c.Close()
				t.Fatal("TLS to a plain HTTP server succeeded")
			}
			return err
		},
			TLS, "TLS check failed: it does not speak TLS (is the URL meant to be http://?)",
			"Peer X failed the TLS check: it does not speak TLS (is the URL meant to be http://?)"},
		{"cancelled", func(context.Context) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return get(t, ctx, "http://"+silent.Addr().String()+"/")
		}, Canceled, "cancelled", "the test query to Peer X was cancelled"},
		{"unauthorized", func(context.Context) error { return fmt.Errorf("query: %w", &StatusError{Code: 401}) },
			Unauthorized, "HTTP 401", "Peer X refused the request (HTTP 401); check the token in $TOKEN"},
		{"status", func(context.Context) error { return fmt.Errorf("query: %w", &StatusError{Code: 503}) },
			Status, "HTTP 503", "Peer X answered HTTP 503"},
		{"unknown", func(context.Context) error { return errors.New("something else") },
			Unknown, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			err := tt.err(ctx)
			f := Classify(ctx, err)
			if f.Kind != tt.kind {
				t.Fatalf("Classify(%v) = %+v, want kind %d", err, f, tt.kind)
			}
			if got := f.Reason(2 * time.Second); got != tt.reason {
				t.Errorf("Reason = %q, want %q", got, tt.reason)
			}
			c := Call{Peer: "Peer X", What: "test query", Budget: 2 * time.Second, TokenEnv: "TOKEN"}
			msg, ok := c.Message(ctx, err)
			if ok != (tt.msg != "") || msg != tt.msg {
				t.Errorf("Message = %q, %v; want %q", msg, ok, tt.msg)
			}
		})
	}
}

func TestUnauthorizedHint(t *testing.T) {
	msg, _ := Call{Peer: "P"}.Message(context.Background(), &StatusError{Code: 403})
	if msg != "P refused the request (HTTP 403); set token_env" {
		t.Fatalf("Message = %q", msg)
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		300 * time.Millisecond:  "300ms",
		1999 * time.Millisecond: "2s",
		2500 * time.Millisecond: "2.5s",
		time.Minute:             "1m",
		90 * time.Minute:        "1h30m",
		2 * time.Hour:           "2h",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestBearer checks that the token reaches the server and stays out of
// the caller's request.
func TestBearer(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
	}))
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: Bearer{Token: "s3cret", Next: http.DefaultTransport}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got != "Bearer s3cret" || req.Header.Get("Authorization") != "" {
		t.Fatalf("server saw %q; caller's request has %q", got, req.Header.Get("Authorization"))
	}
}

// Package neterr says, in words an on-call engineer can act on, why a call
// to a network peer failed: a timeout, a refused or reset connection, no
// route, a name that does not resolve, a failed TLS check, or an HTTP
// status. The metric sources (prom, scrape), the health probe and the VM
// adapter's SSH dial all use it, so the same failure reads the same way
// wherever it happens.
//
// Classify looks only at typed errors (errors.Is / errors.As), never at
// error text. A failure it does not recognise is Unknown: the caller then
// returns its error without a user message, and the handlers show
// "internal error … ref <id>" pointing into the bot log.
package neterr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// Kind is the class of a network failure.
type Kind int

const (
	Unknown      Kind = iota
	Timeout           // no answer in time (ctx deadline or an I/O timeout)
	Canceled          // the caller gave up
	Refused           // connection refused: nothing listens there
	Reset             // the peer dropped the connection
	Unreachable       // no route to the host or network
	DNS               // the host name does not resolve
	TLS               // the TLS check failed
	Unauthorized      // HTTP 401 or 403
	Status            // another HTTP status the caller did not want
)

// Failure is a classified network failure.
type Failure struct {
	Kind Kind
	// Code is the HTTP status, for Unauthorized and Status.
	Code int
	// Name is the host name that did not resolve, for DNS.
	Name string
	// TLSReason says what the TLS check found, for TLS.
	TLSReason string
}

// StatusError is an HTTP answer whose status the caller did not want. An
// adapter returns it from its HTTP call so that Classify can tell the
// status without reading error text.
type StatusError struct{ Code int }

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d", e.Code) }

// Classify returns what kind of network failure err is. ctx is the call's
// context: a call whose deadline passed is a Timeout even when the error
// only says that the connection was closed under it.
func Classify(ctx context.Context, err error) Failure {
	var (
		se  *StatusError
		dns *net.DNSError
		ne  net.Error
	)
	switch {
	case err == nil:
		return Failure{}
	case errors.Is(err, context.DeadlineExceeded),
		ctx != nil && errors.Is(ctx.Err(), context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return Failure{Kind: Timeout}
	case errors.Is(err, context.Canceled):
		return Failure{Kind: Canceled}
	case errors.As(err, &se) && (se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden):
		return Failure{Kind: Unauthorized, Code: se.Code}
	case errors.As(err, &se):
		return Failure{Kind: Status, Code: se.Code}
	case errors.Is(err, syscall.ECONNREFUSED):
		return Failure{Kind: Refused}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Failure{Kind: Reset}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return Failure{Kind: Unreachable}
	case errors.As(err, &dns):
		return Failure{Kind: DNS, Name: dns.Name}
	}
	if reason := tlsReason(err); reason != "" {
		return Failure{Kind: TLS, TLSReason: reason}
	}
	return Failure{}
}

func tlsReason(err error) string {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		rh  tls.RecordHeaderError
		ae  tls.AlertError
		cve *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &ua):
		return "its certificate is signed by an authority rollbot does not trust"
	case errors.As(err, &he):
		return "its certificate is not valid for " + he.Host
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "its certificate has expired or is not valid yet"
	case errors.As(err, &ci):
		return "its certificate is not valid"
	case errors.As(err, &rh):
		return "it does not speak TLS (is the URL meant to be http://?)"
	case errors.As(err, &ae):
		return "it refused the TLS handshake"
	case errors.As(err, &cve):
		return "its certificate could not be verified"
	}
	return ""
}

// Reason is a short phrase for the failure, without the peer's name, for
// a line that already names it: "connection refused", "no answer within
// 5s", "cannot resolve db.internal", "HTTP 503". budget is the time the
// call had (0: say only "timed out"). It is "" for Unknown.
func (f Failure) Reason(budget time.Duration) string {
	switch f.Kind {
	case Timeout:
		if budget > 0 {
			return "no answer within " + Duration(budget)
		}
		return "timed out"
	case Canceled:
		return "cancelled"
	case Refused:
		return "connection refused"
	case Reset:
		return "connection reset"
	case Unreachable:
		return "no route to host"
	case DNS:
		if f.Name == "" {
			return "cannot resolve the host name"
		}
		return "cannot resolve " + f.Name
	case TLS:
		return "TLS check failed: " + f.TLSReason
	case Unauthorized, Status:
		return fmt.Sprintf("HTTP %d", f.Code)
	}
	return ""
}

// Call describes a request to a peer, for Message.
type Call struct {
	// Peer names the peer as the sentence's subject: "Prometheus at
	// prom:9090", "the metrics endpoint 10.0.0.5:8080/metrics".
	Peer string
	// What the request was for: "error ratio query", "p95 latency scrape".
	What string
	// Budget is the time the call had.
	Budget time.Duration
	// TokenEnv is the environment variable holding the bearer token sent,
	// if any, for the hint on HTTP 401/403.
	TokenEnv string
}

// Message is the sentence a user sees for err in c, and false when err is
// not a failure Classify recognises (the caller then keeps its error
// without a user message).
func (c Call) Message(ctx context.Context, err error) (string, bool) {
	f := Classify(ctx, err)
	switch f.Kind {
	case Timeout:
		return fmt.Sprintf("%s did not answer within %s", c.Peer, Duration(c.Budget)), true
	case Canceled:
		return fmt.Sprintf("the %s to %s was cancelled", c.What, c.Peer), true
	case Refused, Unreachable, DNS:
		return fmt.Sprintf("%s is not reachable (%s)", c.Peer, f.Reason(0)), true
	case Reset:
		return fmt.Sprintf("%s dropped the connection (connection reset)", c.Peer), true
	case TLS:
		return fmt.Sprintf("%s failed the TLS check: %s", c.Peer, f.TLSReason), true
	case Unauthorized:
		hint := "set token_env"
		if c.TokenEnv != "" {
			hint = "check the token in $" + c.TokenEnv
		}
		return fmt.Sprintf("%s refused the request (HTTP %d); %s", c.Peer, f.Code, hint), true
	case Status:
		return fmt.Sprintf("%s answered HTTP %d", c.Peer, f.Code), true
	}
	return "", false
}

// Duration formats a time budget for people: "5s", "300ms", "2.5s", "1m",
// not "1.999s" or "1m0s".
func Duration(d time.Duration) string {
	switch {
	case d >= time.Second:
		d = d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		d = d.Round(time.Millisecond)
	default:
		d = d.Round(time.Microsecond)
	}
	// Drop zero trailing units: 1m0s is 1m, 2h0m0s is 2h.
	s := d.String()
	for _, unit := range []string{"m0s", "h0m"} {
		if strings.HasSuffix(s, unit) {
			s = s[:len(s)-2]
		}
	}
	return s
}

// Bearer is an http.RoundTripper that sends "Authorization: Bearer
// <Token>" with every request. The token is never put in an error.
type Bearer struct {
	Token string
	Next  http.RoundTripper
}

func (b Bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.Token)
	return b.Next.RoundTrip(r)
}

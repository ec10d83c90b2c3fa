// Package docker is the Docker engine plumbing that rollbot's swarm and
// compose adapters share: the client for a configured host, the mapping
// of engine errors to messages for users, image reference comparison, the
// assembly of a service's history (current image, what the platform
// remembers, rollbot's own record, the engine's local images) and the HTTP
// health check through published ports.
//
// Engine bundles the per-adapter part of that (the engine's host for
// messages, rollbot's record, the health check client); the rest are plain
// functions. The engine calls go through the adapter's own narrow client,
// passed to each method, so an adapter has one client (which its tests
// may wrap).
package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"rollbot/platforms"
)

// History is rollbot's own record of what it saw deployed for a service
// (package state satisfies it). Revisions are newest first; Artifact is
// the image reference.
type History interface {
	Deployed(ctx context.Context, key string) ([]platforms.Revision, error)
}

// ImageAPI is the part of the moby client the shared code calls; both
// adapters' narrow client interfaces include it.
type ImageAPI interface {
	ImageInspect(ctx context.Context, imageID string, inspectOpts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ImageList(ctx context.Context, options client.ImageListOptions) (client.ImageListResult, error)
}

// Engine is what an adapter keeps about its engine besides its client.
type Engine struct {
	// Host is the engine address as shown to users: without credentials.
	Host string
	// raw is the configured (or environment's) address, for PublishedHost.
	raw string
	// Record is rollbot's record of deployed images (nil: none) and
	// RecordKey what it is asked for (the rollbot service name).
	Record    History
	RecordKey string
	// HTTP is the client of health checks through published ports.
	HTTP *http.Client
}

// NewEngine describes the engine at host (empty: DOCKER_HOST, else the
// local socket).
func NewEngine(host string) Engine {
	if host == "" {
		host = EnvHost()
	}
	return Engine{Host: DisplayHost(host), raw: host, HTTP: HealthClient()}
}

// Err wraps err from an engine call; see EngineErr.
func (e Engine) Err(err error, op string) error { return EngineErr(err, e.Host, op) }

// RequireImage checks that the engine has image ref, the rollback's
// precondition when the engine does not pull: a missing one is
// MissingImage (wrapping platforms.ErrNotFound).
func (e Engine) RequireImage(ctx context.Context, api ImageAPI, ref string) error {
	if _, err := api.ImageInspect(ctx, ref); err != nil {
		if IsNotFound(err) {
			return MissingImage(err, ref, e.Host)
		}
		return e.Err(err, "inspect image "+ref)
	}
	return nil
}

// PublishedHost is where the engine's published ports are reached:
// healthHost when configured, else the engine's host name for a tcp host,
// else 127.0.0.1 (a local socket).
func (e Engine) PublishedHost(healthHost string) string {
	if healthHost != "" {
		return healthHost
	}
	if u, err := url.Parse(e.raw); err == nil && u.Scheme != "unix" && u.Hostname() != "" {
		return u.Hostname()
	}
	return "127.0.0.1"
}

// FirstOK GETs each URL in turn until one answers 2xx. The engine may
// publish a port once per IP family under different numbers, so a caller
// passes every candidate; the error joins every attempt's.
func (e Engine) FirstOK(ctx context.Context, urls []string) error {
	if len(urls) == 0 {
		return errors.New("no URL to check")
	}
	var errs []error
	for _, u := range urls {
		err := getOK(ctx, e.HTTP, u)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func getOK(ctx context.Context, hc *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// HealthClient is the HTTP client of health checks: short timeouts, since
// a published port of the other IP family may swallow connections.
func HealthClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: time.Second}).DialContext
	tr.ResponseHeaderTimeout = 2 * time.Second
	return &http.Client{Timeout: 3 * time.Second, Transport: tr}
}

// ValidateHost checks a docker host address: a scheme the client speaks
// and no credentials (they would end up in error messages and logs).
// field names the setting in the error.
func ValidateHost(field, host string) error {
	if host == "" {
		return nil
	}
	u, err := url.Parse(host)
	if err != nil {
		return fmt.Errorf("%s: not a URL like unix:///var/run/docker.sock or tcp://host:2376", field)
	}
	if u.User != nil {
		return fmt.Errorf("%s: must not contain credentials; use tls_cert_path for client certificates", field)
	}
	switch u.Scheme {
	case "unix", "tcp", "http", "https":
	default:
		return fmt.Errorf("%s: scheme %q not supported (unix, tcp, http, https)", field, u.Scheme)
	}
	return nil
}

// NewClient returns an engine client for host (empty: DOCKER_HOST or the
// local socket) with TLS material from certPath (empty: DOCKER_CERT_PATH),
// negotiating the API version down to the engine's (1.41 on Docker 20.10).
// It does not contact the engine.
func NewClient(host, certPath string) (*client.Client, error) {
	if host == "" {
		if err := ValidateHost("DOCKER_HOST", os.Getenv(client.EnvOverrideHost)); err != nil {
			return nil, err
		}
	}
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	if certPath != "" {
		opts = append(opts, client.WithTLSClientConfig(
			filepath.Join(certPath, "ca.pem"), filepath.Join(certPath, "cert.pem"), filepath.Join(certPath, "key.pem")))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", DisplayHost(host), err)
	}
	return cli, nil
}

// DisplayHost is the host as shown to users: without any credentials.
func DisplayHost(host string) string {
	if host == "" {
		return "the local engine"
	}
	u, err := url.Parse(host)
	if err != nil {
		return "(unparsable host)"
	}
	u.User = nil
	return u.String()
}

// EnvHost is the host used when the config names none.
func EnvHost() string {
	if h := os.Getenv(client.EnvOverrideHost); h != "" {
		return h
	}
	return client.DefaultDockerHost
}

// EngineErr wraps err from an engine call as "op: cause", with a user
// message when the engine could not be reached or did not answer in time.
func EngineErr(err error, host, op string) error {
	wrapped := fmt.Errorf("%s: %w", op, err)
	switch {
	case client.IsErrConnectionFailed(err):
		return platforms.Userf(wrapped, "cannot reach the Docker engine at %s: check that it is running and that rollbot can reach it (host, socket permissions, TLS)", host)
	case errors.Is(err, context.DeadlineExceeded):
		return platforms.Userf(wrapped, "the Docker engine at %s did not answer in time", host)
	}
	return wrapped
}

// IsNotFound reports an engine 404.
func IsNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

// FallbackHint is the runbook FAQ's "what if the rollback also fails".
func FallbackHint(image string) string {
	return fmt.Sprintf("If no earlier image works either, scale the service to zero and rebuild %s from source (runbook FAQ: what if the rollback also fails).", image)
}

// MissingImage is the error for a rollback target the engine does not have.
func MissingImage(cause error, ref, host string) error {
	return platforms.Userf(fmt.Errorf("image %s: %w: %w", ref, platforms.ErrNotFound, cause),
		"image %s is not present on the Docker engine at %s, so the service cannot run it (this engine does not pull it for rollbot). Set another image that exists explicitly. %s",
		ref, host, FallbackHint(ref))
}

package compose

// This file is the engine plumbing shared in spirit with platforms/swarm
// (each package keeps its own copy so neither imports the other): the
// client for a configured host, error mapping for users, image reference
// comparison, and history assembly.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"

	"rollbot/platforms"
)

// History is rollbot's own record of what it saw deployed for a service
// (package state satisfies it). Revisions are newest first; Artifact is
// the image reference.
type History interface {
	Deployed(ctx context.Context, key string) ([]platforms.Revision, error)
}

// validateHost checks a docker host address: a scheme the client speaks
// and no credentials (they would end up in error messages and logs).
func validateHost(field, host string) error {
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

// newClient returns an engine client for host (empty: DOCKER_HOST or the
// local socket) with TLS material from certPath (empty: DOCKER_CERT_PATH),
// negotiating the API version down to the engine's (1.41 on Docker 20.10).
func newClient(host, certPath string) (*client.Client, error) {
	if host == "" {
		if err := validateHost("DOCKER_HOST", os.Getenv(client.EnvOverrideHost)); err != nil {
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
		return nil, fmt.Errorf("docker client for %s: %w", displayHost(host), err)
	}
	return cli, nil
}

// displayHost is the host as shown to users: without any credentials.
func displayHost(host string) string {
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

// engineErr wraps err from an engine call, with a user message when the
// engine could not be reached.
func engineErr(err error, host, op string) error {
	wrapped := fmt.Errorf("%s: %w", op, err)
	switch {
	case client.IsErrConnectionFailed(err):
		return platforms.Userf(wrapped, "cannot reach the Docker engine at %s: check that it is running and that rollbot can reach it (host, socket permissions, TLS)", host)
	case errors.Is(err, context.DeadlineExceeded):
		return platforms.Userf(wrapped, "the Docker engine at %s did not answer in time", host)
	}
	return wrapped
}

// fallbackHint is the runbook FAQ's "what if the rollback also fails".
func fallbackHint(image string) string {
	return fmt.Sprintf("If no earlier image works either, scale the service to zero and rebuild %s from source (runbook FAQ: what if the rollback also fails).", image)
}

// missingImage is the error for a rollback target the engine does not have.
func missingImage(cause error, ref, host string) error {
	return platforms.Userf(fmt.Errorf("image %s: %w: %w", ref, platforms.ErrNotFound, cause),
		"image %s is not present on the Docker engine at %s, so the service cannot run it (this engine does not pull it for rollbot). Set another image that exists explicitly. %s",
		ref, host, fallbackHint(ref))
}

// imageRef is a parsed image reference.
type imageRef struct {
	name   string // familiar name, e.g. "myapp" or "registry:5000/team/myapp"
	tag    string // "latest" when none is given
	digest string
}

func parseImage(s string) (imageRef, bool) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return imageRef{}, false
	}
	r := imageRef{name: reference.FamiliarName(named)}
	if d, ok := named.(reference.Digested); ok {
		r.digest = d.Digest().String()
	}
	if t, ok := named.(reference.Tagged); ok {
		r.tag = t.Tag()
	} else if r.digest == "" {
		r.tag = "latest"
	}
	return r, true
}

// sameImage reports whether a and b name the same image: same repository
// and tag; when both are pinned by digest, the digests must match too.
func sameImage(a, b string) bool {
	ra, okA := parseImage(a)
	rb, okB := parseImage(b)
	if !okA || !okB {
		return a == b
	}
	if ra.name != rb.name {
		return false
	}
	if ra.digest != "" && rb.digest != "" {
		return ra.digest == rb.digest
	}
	return ra.tag == rb.tag
}

// withoutDigest drops a digest that swarm may have pinned, for display.
func withoutDigest(s string) string {
	r, ok := parseImage(s)
	if !ok || r.tag == "" {
		return s
	}
	return r.name + ":" + r.tag
}

// revisionFor names an image as a revision: the tag when the repository
// is the current one ("v1"), otherwise the whole reference.
func revisionFor(ref, currentRepo string, at time.Time) platforms.Revision {
	r, ok := parseImage(ref)
	id := withoutDigest(ref)
	if ok && r.name == currentRepo && r.tag != "" {
		id = r.tag
	}
	return platforms.Revision{ID: id, Artifact: ref, CreatedAt: at}
}

// targetImage turns a rollback target into an image reference: the
// artifact when set, else the ID, taken as a tag of the current repository
// when it is a bare tag.
func targetImage(to platforms.Revision, current string) (string, error) {
	if to.Artifact != "" {
		return to.Artifact, nil
	}
	if to.ID == "" {
		return "", platforms.Userf(errors.New("empty rollback target"), "no target image given")
	}
	if strings.ContainsAny(to.ID, ":/@") {
		return to.ID, nil
	}
	cur, ok := parseImage(current)
	if !ok {
		return "", platforms.Userf(fmt.Errorf("current image %q: unparsable", current), "cannot tell the repository of the current image %s; give the full image reference", current)
	}
	ref := cur.name + ":" + to.ID
	if _, ok := parseImage(ref); !ok {
		return "", platforms.Userf(fmt.Errorf("target %q: invalid tag", to.ID), "%q is not a valid image tag", to.ID)
	}
	return ref, nil
}

// localRevisions lists the engine's images of repo, newest first.
func localRevisions(ctx context.Context, api imageLister, repo string) ([]platforms.Revision, error) {
	res, err := api.ImageList(ctx, client.ImageListOptions{Filters: make(client.Filters).Add("reference", repo)})
	if err != nil {
		return nil, err
	}
	items := slices.Clone(res.Items)
	slices.SortStableFunc(items, func(a, b image.Summary) int { return cmp.Compare(b.Created, a.Created) })
	var out []platforms.Revision
	for _, img := range items {
		for _, tag := range img.RepoTags {
			if r, ok := parseImage(tag); ok && r.name == repo {
				out = append(out, revisionFor(tag, repo, time.Unix(img.Created, 0)))
			}
		}
	}
	return out, nil
}

type imageLister interface {
	ImageList(ctx context.Context, options client.ImageListOptions) (client.ImageListResult, error)
}

// mergeHistory builds a newest-first history around current: local
// images built after the current one (not deployed yet, so never a
// rollback target) first, then current, then the known revisions in the
// order given (e.g. the previous spec, rollbot's record), then the older
// local images, without repeating an image.
func mergeHistory(current platforms.Revision, currentBuilt time.Time, local []platforms.Revision, known ...[]platforms.Revision) []platforms.Revision {
	seen := []string{current.Artifact}
	add := func(dst []platforms.Revision, r platforms.Revision) []platforms.Revision {
		if slices.ContainsFunc(seen, func(s string) bool { return sameImage(s, r.Artifact) }) {
			return dst
		}
		seen = append(seen, r.Artifact)
		return append(dst, r)
	}
	var newer, older []platforms.Revision
	for _, r := range local {
		if !currentBuilt.IsZero() && r.CreatedAt.After(currentBuilt) {
			newer = add(newer, r)
		}
	}
	for _, list := range known {
		for _, r := range list {
			older = add(older, r)
		}
	}
	for _, r := range local {
		older = add(older, r)
	}
	return append(append(newer, current), older...)
}

// isNotFound reports an engine 404.
func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

// envHost is the host used when the config names none.
func envHost() string {
	if h := os.Getenv(client.EnvOverrideHost); h != "" {
		return h
	}
	return client.DefaultDockerHost
}

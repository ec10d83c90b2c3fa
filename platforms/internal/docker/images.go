package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/client"

	"rollbot/platforms"
)

// Ref is a parsed image reference.
type Ref struct {
	Name   string // familiar name, e.g. "myapp" or "registry:5000/team/myapp"
	Tag    string // "latest" when neither tag nor digest is given
	Digest string
}

// ParseImage parses an image reference; false when it is not one.
func ParseImage(s string) (Ref, bool) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Ref{}, false
	}
	r := Ref{Name: reference.FamiliarName(named)}
	if d, ok := named.(reference.Digested); ok {
		r.Digest = d.Digest().String()
	}
	if t, ok := named.(reference.Tagged); ok {
		r.Tag = t.Tag()
	} else if r.Digest == "" {
		r.Tag = "latest"
	}
	return r, true
}

// Repo is the familiar repository name of an image reference, "" when it
// does not parse.
func Repo(s string) string {
	r, _ := ParseImage(s)
	return r.Name
}

// ValidImage is the check of an image a user names explicitly.
func ValidImage(s string) error {
	if _, ok := ParseImage(s); !ok {
		return platforms.Userf(fmt.Errorf("image %q: invalid reference", s), "%q is not a valid image reference", s)
	}
	return nil
}

// SameImage reports whether a and b name the same image: same repository
// and tag; when both are pinned by digest, the digests must match too.
func SameImage(a, b string) bool {
	ra, okA := ParseImage(a)
	rb, okB := ParseImage(b)
	if !okA || !okB {
		return a == b
	}
	if ra.Name != rb.Name {
		return false
	}
	if ra.Digest != "" && rb.Digest != "" {
		return ra.Digest == rb.Digest
	}
	return ra.Tag == rb.Tag
}

// WithoutDigest drops a digest that swarm may have pinned, for display.
func WithoutDigest(s string) string {
	r, ok := ParseImage(s)
	if !ok || r.Tag == "" {
		return s
	}
	return r.Name + ":" + r.Tag
}

// RevisionFor names an image as a revision: the tag when the repository
// is the current one ("v1"), otherwise the whole reference.
func RevisionFor(ref, currentRepo string, at time.Time) platforms.Revision {
	r, ok := ParseImage(ref)
	id := WithoutDigest(ref)
	if ok && r.Name == currentRepo && r.Tag != "" {
		id = r.Tag
	}
	return platforms.Revision{ID: id, Artifact: ref, CreatedAt: at}
}

// TargetImage turns a rollback target into an image reference: the
// artifact when set, else the ID, taken as a tag of the current image's
// repository when it is a bare tag.
func TargetImage(to platforms.Revision, current string) (string, error) {
	if to.Artifact != "" {
		return to.Artifact, nil
	}
	if to.ID == "" {
		return "", platforms.Userf(errors.New("empty rollback target"), "no target image given")
	}
	if strings.ContainsAny(to.ID, ":/@") {
		return to.ID, nil
	}
	cur, ok := ParseImage(current)
	if !ok {
		return "", platforms.Userf(fmt.Errorf("current image %q: unparsable", current), "cannot tell the repository of the current image %s; give the full image reference", current)
	}
	ref := cur.Name + ":" + to.ID
	if _, ok := ParseImage(ref); !ok {
		return "", platforms.Userf(fmt.Errorf("target %q: invalid tag", to.ID), "%q is not a valid image tag", to.ID)
	}
	return ref, nil
}

// History assembles the newest-first history of a service whose current
// revision is current (its Artifact the image reference): the revisions
// the platform itself knows (e.g. swarm's previous spec), rollbot's
// record, and the engine's local images of the same repository (see
// MergeHistory for the order). builtRef is what to inspect for the build
// time of the current image: its ID when known, else the reference.
func (e Engine) History(ctx context.Context, api ImageAPI, current platforms.Revision, builtRef string, known ...[]platforms.Revision) ([]platforms.Revision, error) {
	if e.Record != nil {
		rec, err := e.Record.Deployed(ctx, e.RecordKey)
		if err != nil {
			return nil, fmt.Errorf("deployment record of %s: %w", e.RecordKey, err)
		}
		known = append(known, rec)
	}
	var local []platforms.Revision
	var built time.Time
	if repo := Repo(current.Artifact); repo != "" {
		var err error
		if local, err = LocalRevisions(ctx, api, repo); err != nil {
			return nil, e.Err(err, "list images of "+repo)
		}
		if img, err := api.ImageInspect(ctx, builtRef); err == nil {
			built, _ = time.Parse(time.RFC3339Nano, img.Created)
		}
	}
	return MergeHistory(current, built, local, known...), nil
}

// LocalRevisions lists the engine's images of repo, newest first.
func LocalRevisions(ctx context.Context, api ImageAPI, repo string) ([]platforms.Revision, error) {
	res, err := api.ImageList(ctx, client.ImageListOptions{Filters: make(client.Filters).Add("reference", repo)})
	if err != nil {
		return nil, err
	}
	items := slices.Clone(res.Items)
	slices.SortStableFunc(items, func(a, b image.Summary) int { return cmp.Compare(b.Created, a.Created) })
	var out []platforms.Revision
	for _, img := range items {
		for _, tag := range img.RepoTags {
			if r, ok := ParseImage(tag); ok && r.Name == repo {
				out = append(out, RevisionFor(tag, repo, time.Unix(img.Created, 0)))
			}
		}
	}
	return out, nil
}

// MergeHistory builds a newest-first history around current: local
// images built after the current one (not deployed yet, so never a
// rollback target) first, then current, then the known revisions in the
// order given (e.g. the previous spec, rollbot's record), then the older
// local images, without repeating an image.
func MergeHistory(current platforms.Revision, currentBuilt time.Time, local []platforms.Revision, known ...[]platforms.Revision) []platforms.Revision {
	seen := []string{current.Artifact}
	add := func(dst []platforms.Revision, r platforms.Revision) []platforms.Revision {
		if slices.ContainsFunc(seen, func(s string) bool { return SameImage(s, r.Artifact) }) {
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

// Package registry marks a bad image DO_NOT_DEPLOY in its OCI registry
// (runbook §6: "remove the bad image from the registry or mark it as
// deprecated"), with oras-go: an artifact of rollbot's own artifactType
// whose subject is the bad image's manifest, carrying who marked it, when,
// in which incident and why. Registries with the OCI referrers API list it
// there; on the others oras-go keeps the referrers index under the
// fallback tag "sha256-<digest>" (the referrers tag schema), which every
// OCI client reads the same way. Optionally (delete_tag) the bad image's
// tag is deleted too.
//
// Credentials come from environment variables the config names, else from
// the docker config (DOCKER_CONFIG, ~/.docker/config.json, credential
// helpers); they are never logged and never part of an error shown to
// users.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"

	"rollbot/platforms"
	"rollbot/platforms/internal/neterr"
)

// ArtifactType is the artifactType of rollbot's DO_NOT_DEPLOY marks.
const ArtifactType = "application/vnd.rollbot.do-not-deploy.v1+json"

// The mark's annotations.
const (
	AnnotationIncident = "io.rollbot.incident"
	AnnotationWho      = "io.rollbot.who"
	AnnotationWhen     = "io.rollbot.when" // RFC 3339
	AnnotationReason   = "io.rollbot.reason"
	AnnotationService  = "io.rollbot.service"
)

// Config is services.<name>.registry.
type Config struct {
	// Repository is where the service's images live
	// ("registry.example.com/team/app"); the bad image's tag or digest is
	// looked up there. Default: the repository of the image reference the
	// platform reports.
	Repository string `yaml:"repository"`
	// PlainHTTP talks HTTP instead of HTTPS (a registry on localhost).
	PlainHTTP bool `yaml:"plain_http"`
	// DeleteTag also deletes the bad image's tag. The approver confirms it
	// with the rollback: the confirmation says so.
	DeleteTag bool `yaml:"delete_tag"`
	// UsernameEnv and PasswordEnv name environment variables with the
	// registry credentials; unset, the docker config is used.
	UsernameEnv string `yaml:"username_env"`
	PasswordEnv string `yaml:"password_env"`
	// DockerConfig is the docker config.json to read credentials from
	// (default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json).
	DockerConfig string `yaml:"docker_config"`
	// Timeout bounds each registry request (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

// Validate checks the config; errors name the field.
func (c Config) Validate() error {
	var errs []error
	if c.Repository != "" {
		if strings.ContainsAny(c.Repository, "@ ") || !strings.Contains(c.Repository, "/") {
			errs = append(errs, errors.New("repository: a repository like registry.example.com/team/app, without tag or digest"))
		}
	}
	if (c.UsernameEnv == "") != (c.PasswordEnv == "") {
		errs = append(errs, errors.New("username_env, password_env: set both (or neither, for the docker config)"))
	}
	if c.Timeout < 0 {
		errs = append(errs, errors.New("timeout: must not be negative"))
	}
	return errors.Join(errs...)
}

// Marker marks images in one service's registry.
type Marker struct {
	conf   Config
	client *auth.Client
	log    *slog.Logger
}

var _ platforms.Registry = (*Marker)(nil)

// New builds a Marker. getenv reads the credential variables.
func New(conf Config, getenv func(string) string, log *slog.Logger) (*Marker, error) {
	if err := conf.Validate(); err != nil {
		return nil, err
	}
	if conf.Timeout <= 0 {
		conf.Timeout = 10 * time.Second
	}
	var cred auth.CredentialFunc
	if conf.UsernameEnv != "" {
		user, pass := getenv(conf.UsernameEnv), getenv(conf.PasswordEnv)
		cred = func(context.Context, string) (auth.Credential, error) {
			return auth.Credential{Username: user, Password: pass}, nil
		}
	} else {
		var store credentials.Store
		var err error
		if conf.DockerConfig != "" {
			store, err = credentials.NewStore(conf.DockerConfig, credentials.StoreOptions{})
		} else {
			store, err = credentials.NewStoreFromDocker(credentials.StoreOptions{})
		}
		if err != nil {
			return nil, fmt.Errorf("docker_config: %w", err)
		}
		cred = credentials.Credential(store)
	}
	client := &auth.Client{
		Client:     &http.Client{Transport: retry.NewTransport(http.DefaultTransport), Timeout: conf.Timeout},
		Cache:      auth.NewCache(),
		Credential: cred,
	}
	client.SetUserAgent("rollbot")
	return &Marker{conf: conf, client: client, log: log}, nil
}

// Target implements platforms.Registry.
func (m *Marker) Target() string {
	if m.conf.Repository != "" {
		return m.conf.Repository
	}
	return "the image's registry"
}

// Plan implements platforms.Registry.
func (m *Marker) Plan(image string) string {
	ref, err := m.reference(image)
	if err != nil {
		return "mark `" + image + "` DO_NOT_DEPLOY in its registry (" + err.Error() + ")"
	}
	p := "mark the image DO_NOT_DEPLOY in `" + ref.repo + "`"
	if m.conf.DeleteTag && ref.tag != "" {
		p += " and delete its tag `" + ref.tag + "`"
	}
	return p
}

// imageRef is a bad image as the registry knows it.
type imageRef struct {
	repo   string // "127.0.0.1:5000/myapp"
	tag    string // "v3", or ""
	digest string // "sha256:…", or ""
}

func (r imageRef) reference() string {
	if r.digest != "" {
		return r.digest
	}
	return r.tag
}

// reference splits image into repository, tag and digest; the configured
// repository replaces the image's own.
func (m *Marker) reference(image string) (imageRef, error) {
	rest, digest, _ := strings.Cut(image, "@")
	var r imageRef
	r.digest = digest
	if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i+1:], "/") {
		r.repo, r.tag = rest[:i], rest[i+1:]
	} else {
		r.repo = rest
	}
	if m.conf.Repository != "" {
		r.repo = m.conf.Repository
	}
	if r.tag == "" && r.digest == "" {
		return r, fmt.Errorf("%q has neither a tag nor a digest", image)
	}
	if !strings.Contains(r.repo, "/") || !strings.ContainsAny(strings.Split(r.repo, "/")[0], ".:") && strings.Split(r.repo, "/")[0] != "localhost" {
		return r, fmt.Errorf("%q does not name its registry; set registry.repository", image)
	}
	return r, nil
}

func (m *Marker) repository(ref imageRef) (*remote.Repository, error) {
	repo, err := remote.NewRepository(ref.repo)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", ref.repo, err)
	}
	repo.PlainHTTP = m.conf.PlainHTTP
	repo.Client = m.client
	return repo, nil
}

// MarkImage implements platforms.Registry.
func (m *Marker) MarkImage(ctx context.Context, image string, mark platforms.ImageMark) (platforms.ImageMarkResult, error) {
	ref, err := m.reference(image)
	if err != nil {
		return platforms.ImageMarkResult{}, platforms.Userf(err, "cannot mark %s in a registry: %s", image, err.Error())
	}
	repo, err := m.repository(ref)
	if err != nil {
		return platforms.ImageMarkResult{}, platforms.Userf(err, "cannot mark %s: %q is not a registry repository", image, ref.repo)
	}
	res := platforms.ImageMarkResult{Repository: ref.repo}
	desc, err := repo.Resolve(ctx, ref.reference())
	if err != nil {
		return res, m.userError(ctx, err, ref, "look up "+image)
	}
	res.Digest = desc.Digest.String()

	// A mark of this incident already there (made before a takeover) is
	// not made twice.
	err = repo.Referrers(ctx, desc, ArtifactType, func(refs []ocispec.Descriptor) error {
		for _, r := range refs {
			if r.Annotations[AnnotationIncident] == mark.Incident && res.Referrer == "" {
				res.Referrer, res.Existing = r.Digest.String(), true
			}
		}
		return nil
	})
	if err != nil {
		return res, m.userError(ctx, err, ref, "list the marks of "+image)
	}
	if !res.Existing {
		at := mark.At
		if at.IsZero() {
			at = time.Now()
		}
		ann := map[string]string{
			AnnotationIncident:        mark.Incident,
			AnnotationWho:             mark.By,
			AnnotationWhen:            at.UTC().Format(time.RFC3339),
			AnnotationService:         mark.Service,
			ocispec.AnnotationCreated: at.UTC().Format(time.RFC3339),
		}
		if mark.Reason != "" {
			ann[AnnotationReason] = mark.Reason
		}
		md, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, ArtifactType, oras.PackManifestOptions{
			Subject: &desc, ManifestAnnotations: ann,
		})
		if err != nil {
			return res, m.userError(ctx, err, ref, "push the DO_NOT_DEPLOY mark of "+image)
		}
		res.Referrer = md.Digest.String()
		m.log.Info("registry mark pushed", "op", "registry_mark", "repository", ref.repo, "digest", res.Digest, "referrer", res.Referrer, "incident", mark.Incident)
	}
	res.Via = "referrers API"
	fallback := strings.Replace(res.Digest, ":", "-", 1)
	if _, err := repo.Resolve(ctx, fallback); err == nil {
		res.Via = "fallback tag " + fallback
	}
	scheme := "https"
	if m.conf.PlainHTTP {
		scheme = "http"
	}
	host, path, _ := strings.Cut(ref.repo, "/")
	res.Link = (&url.URL{Scheme: scheme, Host: host, Path: "/v2/" + path + "/manifests/" + res.Referrer}).String()

	if m.conf.DeleteTag && ref.tag != "" {
		if err := m.deleteTag(ctx, repo, ref, desc); err != nil {
			return res, err
		}
		res.TagDeleted = ref.tag
	}
	return res, nil
}

// deleteTag deletes ref.tag: by tag where the registry supports it (the
// other tags of the image stay), else by digest when no other tag points
// at the image. A tag already gone is not an error.
func (m *Marker) deleteTag(ctx context.Context, repo *remote.Repository, ref imageRef, desc ocispec.Descriptor) error {
	cur, err := repo.Resolve(ctx, ref.tag)
	if errors.Is(err, errdef.ErrNotFound) {
		return nil
	}
	if err != nil {
		return m.userError(ctx, err, ref, "look up tag "+ref.tag)
	}
	if cur.Digest != desc.Digest {
		return platforms.Userf(nil, "the DO_NOT_DEPLOY mark is made, but tag `%s` of %s now points at another image (%s), so rollbot did not delete it", ref.tag, ref.repo, cur.Digest)
	}
	u := repoURL(m.conf.PlainHTTP, ref) + "/manifests/" + url.PathEscape(ref.tag)
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	if err != nil {
		return err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return m.userError(ctx, err, ref, "delete tag "+ref.tag)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNotFound:
		m.log.Info("registry tag deleted", "op", "registry_delete_tag", "repository", ref.repo, "tag", ref.tag, "by", "tag")
		return nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return m.userError(ctx, &neterr.StatusError{Code: resp.StatusCode}, ref, "delete tag "+ref.tag)
	}
	// The registry cannot delete a tag alone (distribution before v3
	// answers 400/405 UNSUPPORTED): delete the manifest, if that tag is
	// its only one.
	others, err := otherTags(ctx, repo, ref.tag, desc)
	if err != nil {
		return m.userError(ctx, err, ref, "list the tags of "+ref.repo)
	}
	if len(others) > 0 {
		return platforms.Userf(nil, "the DO_NOT_DEPLOY mark is made, but %s cannot delete a tag alone and tags %s point at the same image, so rollbot deleted nothing; delete `%s` by hand", ref.repo, strings.Join(others, ", "), ref.tag)
	}
	if err := repo.Delete(ctx, desc); err != nil {
		return m.userError(ctx, err, ref, "delete "+ref.tag)
	}
	m.log.Info("registry tag deleted", "op", "registry_delete_tag", "repository", ref.repo, "tag", ref.tag, "by", "digest", "status_by_tag", resp.StatusCode)
	return nil
}

// otherTags lists the tags other than tag (and the referrers fallback
// tags) that point at desc.
func otherTags(ctx context.Context, repo *remote.Repository, tag string, desc ocispec.Descriptor) ([]string, error) {
	var out []string
	err := repo.Tags(ctx, "", func(tags []string) error {
		for _, t := range tags {
			if t == tag || strings.HasPrefix(t, "sha256-") {
				continue
			}
			d, err := repo.Resolve(ctx, t)
			if err != nil {
				return err
			}
			if d.Digest == desc.Digest {
				out = append(out, t)
			}
		}
		return nil
	})
	return out, err
}

func repoURL(plain bool, ref imageRef) string {
	scheme := "https"
	if plain {
		scheme = "http"
	}
	host, path, _ := strings.Cut(ref.repo, "/")
	return scheme + "://" + host + "/v2/" + path
}

// userError says what went wrong with the registry in words a user can
// act on; the cause (which never carries credentials: oras-go does not put
// them in errors) goes to the log.
func (m *Marker) userError(ctx context.Context, err error, ref imageRef, what string) error {
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		err = fmt.Errorf("%w (%w)", &neterr.StatusError{Code: er.StatusCode}, err)
	}
	host, _, _ := strings.Cut(ref.repo, "/")
	call := neterr.Call{Peer: "the registry " + host, What: what, Budget: m.conf.Timeout}
	if f := neterr.Classify(ctx, err); f.Kind == neterr.Unauthorized {
		hint := "check the credentials in the docker config"
		if m.conf.UsernameEnv != "" {
			hint = "check $" + m.conf.UsernameEnv + " and $" + m.conf.PasswordEnv
		}
		return platforms.Userf(err, "the registry %s refused rollbot's credentials (HTTP %d) to %s; %s", host, f.Code, what, hint)
	}
	if errors.Is(err, errdef.ErrNotFound) || (er != nil && er.StatusCode == http.StatusNotFound) {
		return platforms.Userf(err, "%s is not in the registry %s (%s)", ref.repo+":"+ref.reference(), host, what)
	}
	if msg, ok := call.Message(ctx, err); ok {
		return platforms.Userf(err, "could not %s: %s", what, msg)
	}
	return fmt.Errorf("%s in %s: %w", what, ref.repo, err)
}

package dockertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// The labels docker-compose puts on a project's containers.
const (
	LabelProject = "com.docker.compose.project"
	LabelService = "com.docker.compose.service"
)

// Project is a docker-compose project in a temp dir for a test.
type Project struct {
	t    testing.TB
	cli  *client.Client
	Name string // the project name (-p), random
	Dir  string // the project directory
	File string // Dir/docker-compose.yml
}

// NewProject writes compose as docker-compose.yml in a temp dir. When the
// test ends the project is brought down with its volumes (also the
// anonymous ones a recreate mounted by name, which `down -v` keeps) and
// the test fails if any of its containers is left.
func NewProject(t testing.TB, cli *client.Client, compose string) *Project {
	t.Helper()
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatal("docker-compose is not installed (Debian package docker-compose): ", err)
	}
	p := &Project{t: t, cli: cli, Name: Name("rbt"), Dir: t.TempDir()}
	p.File = filepath.Join(p.Dir, "docker-compose.yml")
	p.Write(compose)
	t.Cleanup(func() {
		ctx := context.Background()
		var volumes []string
		if l, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: p.filter()}); err == nil {
			for _, c := range l.Items {
				for _, m := range c.Mounts {
					if m.Name != "" {
						volumes = append(volumes, m.Name)
					}
				}
			}
		}
		defer func() {
			for _, v := range volumes {
				if _, err := cli.VolumeRemove(ctx, v, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
					t.Errorf("remove volume %s: %v", v, err)
				}
			}
		}()
		cmd := exec.Command("docker-compose", "-p", p.Name, "down", "-v", "--remove-orphans", "-t", "1")
		cmd.Dir = p.Dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker-compose down: %v: %s", err, out)
		}
		l, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: p.filter()})
		if err != nil || len(l.Items) > 0 {
			t.Errorf("containers of %s left after down: %d, %v", p.Name, len(l.Items), err)
		}
	})
	return p
}

func (p *Project) filter() client.Filters {
	return make(client.Filters).Add("label", LabelProject+"="+p.Name)
}

// Write replaces the compose file.
func (p *Project) Write(compose string) {
	p.t.Helper()
	if err := os.WriteFile(p.File, []byte(compose), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// Compose runs docker-compose -p <name> args... in the project directory,
// with env added to the environment; it fails the test when it fails.
func (p *Project) Compose(env []string, args ...string) {
	p.t.Helper()
	cmd := exec.Command("docker-compose", append([]string{"-p", p.Name}, args...)...)
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("docker-compose %v: %v: %s", args, err, out)
	}
}

// Containers lists the containers of a service of the project.
func (p *Project) Containers(svc string) []container.Summary {
	p.t.Helper()
	l, err := p.cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: p.filter().Add("label", LabelService+"="+svc)})
	if err != nil {
		p.t.Fatal(err)
	}
	return l.Items
}

// Container inspects the one container of a service of the project.
func (p *Project) Container(svc string) container.InspectResponse {
	p.t.Helper()
	l := p.Containers(svc)
	if len(l) != 1 {
		p.t.Fatalf("%d containers of %s/%s, want 1", len(l), p.Name, svc)
	}
	in, err := p.cli.ContainerInspect(context.Background(), l[0].ID, client.ContainerInspectOptions{})
	if err != nil {
		p.t.Fatal(err)
	}
	return in.Container
}

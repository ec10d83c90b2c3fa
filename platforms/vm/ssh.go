package vm

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"rollbot/platforms"
	"rollbot/platforms/internal/neterr"
)

type agentAuth struct{ sock string }

func (g agentAuth) method() (ssh.AuthMethod, func(), error) {
	conn, err := net.Dial("unix", g.sock)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to ssh agent: %w", err)
	}
	return ssh.PublicKeysCallback(agent.NewClient(conn).Signers), func() { conn.Close() }, nil
}

func (g agentAuth) describe() string { return "the keys of the SSH agent ($SSH_AUTH_SOCK)" }

// client is one SSH connection to a host.
type client struct {
	host Host
	c    *ssh.Client
}

func (c *client) Close() error { return c.c.Close() }

// dial connects to h, verifying its host key against known_hosts. Errors
// carry a user message saying what is wrong and what to do.
func (a *Adapter) dial(ctx context.Context, h Host) (*client, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()

	method, release, err := a.auth.method()
	if err != nil {
		return nil, platforms.Userf(err, "cannot use the SSH agent to log in to %s; check SSH_AUTH_SOCK", h.Name)
	}
	defer release()

	var mu sync.Mutex
	var keyErr error
	var presented ssh.PublicKey
	checked := false
	cfg := &ssh.ClientConfig{
		User: h.User,
		Auth: []ssh.AuthMethod{method},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			err := a.known(hostname, remote, key)
			mu.Lock()
			checked, presented, keyErr = true, key, err
			mu.Unlock()
			return err
		},
		HostKeyAlgorithms: a.hostKeyAlgorithms(h.Addr),
		Timeout:           a.cfg.Timeout,
	}

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", h.Addr)
	if err != nil {
		f := neterr.Classify(ctx, err)
		if f.Kind == neterr.Unknown {
			return nil, fmt.Errorf("connect to %s (%s): %w", h.Name, h.Addr, err)
		}
		reason := f.Reason(0)
		if f.Kind == neterr.Refused {
			reason += " (is sshd running, is the port right?)"
		}
		return nil, platforms.Userf(err, "cannot reach %s (%s): %s", h.Name, h.Addr, reason)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, h.Addr, cfg)
	stop()
	if err != nil {
		conn.Close()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case keyErr != nil:
			return nil, a.hostKeyError(h, presented, keyErr)
		case checked:
			// The host proved its identity; the login itself was refused.
			return nil, platforms.Userf(err, "SSH login to %s as %s was refused: the host does not accept %s. Add rollbot's public key to %s's authorized_keys there", h.Name, h.User, a.auth.describe(), h.User)
		}
		if reason := neterr.Classify(ctx, err).Reason(0); reason != "" {
			return nil, platforms.Userf(err, "SSH handshake with %s (%s) failed: %s", h.Name, h.Addr, reason)
		}
		return nil, fmt.Errorf("SSH handshake with %s (%s): %w", h.Name, h.Addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return &client{host: h, c: ssh.NewClient(c, chans, reqs)}, nil
}

func (a *Adapter) hostKeyError(h Host, presented ssh.PublicKey, err error) error {
	fp, typ := "?", "?"
	if presented != nil {
		fp, typ = ssh.FingerprintSHA256(presented), presented.Type()
	}
	var revoked *knownhosts.RevokedError
	if errors.As(err, &revoked) {
		return platforms.Userf(err, "refusing to connect to %s (%s): its host key %s is marked revoked in %s", h.Name, h.Addr, fp, a.cfg.KnownHosts)
	}
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) && len(ke.Want) == 0 {
		return platforms.Userf(err, "refusing to connect to %s (%s): its host key is not in %s. Verify out of band that the host's %s key fingerprint is %s (on the host: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then add the key to known_hosts",
			h.Name, h.Addr, a.cfg.KnownHosts, typ, fp)
	}
	if ke != nil {
		var want []string
		for _, k := range ke.Want {
			want = append(want, fmt.Sprintf("%s at line %d", ssh.FingerprintSHA256(k.Key), k.Line))
		}
		return platforms.Userf(err, "HOST KEY MISMATCH for %s (%s): it presented %s %s, but %s has %s. This can be an attack (man in the middle) or a reinstalled host; rollbot will not connect until known_hosts is corrected",
			h.Name, h.Addr, typ, fp, a.cfg.KnownHosts, strings.Join(want, ", "))
	}
	return platforms.Userf(err, "refusing to connect to %s (%s): host key check failed", h.Name, h.Addr)
}

// hostKeyAlgorithms lists the key algorithms known_hosts has for addr, so
// the server is asked for a key we can check (a host with both RSA and
// ed25519 keys, of which only one is listed, would otherwise look like a
// mismatch). nil lets the library choose (the host is unknown anyway).
func (a *Adapter) hostKeyAlgorithms(addr string) []string {
	_, probe, _ := ed25519.GenerateKey(nil)
	signer, err := ssh.NewSignerFromKey(probe)
	if err != nil {
		return nil
	}
	remote, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(a.known(addr, remote, signer.PublicKey()), &ke) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		t := k.Key.Type()
		names := []string{t}
		if t == ssh.KeyAlgoRSA {
			names = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				algos = append(algos, n)
			}
		}
	}
	return algos
}

// cmdError is a remote command that ran and failed.
type cmdError struct {
	host   string
	code   int
	stderr string
}

func (e *cmdError) Error() string {
	return fmt.Sprintf("on %s: exit status %d: %s", e.host, e.code, e.stderr)
}

// tail is the last line(s) of a remote command's stderr, short enough for Slack.
func (e *cmdError) tail() string {
	s := strings.TrimSpace(e.stderr)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 && len(s) > 300 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[len(s)-300:]
	}
	if s == "" {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return s
}

// limited keeps the first max bytes written to it.
type limited struct {
	b   []byte
	max int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// run executes script with `sh -c` on the host (through `sudo -n` when
// privileged and configured) and returns its stdout. A non-zero exit is a
// *cmdError. Bounded by ctx and the per-host timeout.
func (a *Adapter) run(ctx context.Context, c *client, script string, privileged bool) (string, error) {
	stdout := &limited{max: 1 << 20}
	err := a.runTo(ctx, c, script, privileged, stdout)
	return string(stdout.b), err
}

// runTo is run with stdout going to w.
func (a *Adapter) runTo(ctx context.Context, c *client, script string, privileged bool, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	sess, err := c.c.NewSession()
	if err != nil {
		return fmt.Errorf("open session on %s: %w", c.host.Name, err)
	}
	defer sess.Close()
	// Separate buffers: stdout and stderr are copied concurrently.
	stderr := &limited{max: 64 << 10}
	sess.Stdout, sess.Stderr = stdout, stderr
	cmd := "sh -c " + shellQuote(script)
	if privileged && a.cfg.Sudo {
		cmd = "sudo -n " + cmd
	}
	done := make(chan error, 1)
	go func() { done <- sess.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGKILL)
		sess.Close()
		return fmt.Errorf("command on %s: %w", c.host.Name, ctx.Err())
	}
	if err != nil {
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			return &cmdError{host: c.host.Name, code: ee.ExitStatus(), stderr: string(stderr.b)}
		}
		return fmt.Errorf("command on %s: %w", c.host.Name, err)
	}
	return nil
}

// shellQuote single-quotes s for a POSIX shell; an embedded quote becomes
// quote, backslash, quote, quote.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

package handlers

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CommandKind is what a /rollback invocation asks for.
type CommandKind string

const (
	CmdRollback CommandKind = "rollback"
	CmdStatus   CommandKind = "status"
	CmdHistory  CommandKind = "history"
	CmdTimeline CommandKind = "timeline"
	CmdHelp     CommandKind = "help"
	CmdDrill    CommandKind = "drill"  // drill <service> [--env e]: a practice rollback
	CmdDrills   CommandKind = "drills" // drills <service> [--env e]: earlier drills
	CmdUnlock   CommandKind = "unlock"
	CmdAllow    CommandKind = "allow"
	// CmdResumeSync restores the GitOps owner a rollback paused.
	CmdResumeSync CommandKind = "resume-sync"
)

// Command is a parsed /rollback text.
type Command struct {
	Kind     CommandKind
	Service  string
	Env      string // --env <environment>, or the part after @ in service@env
	To       string // --to <revision|tag>
	DryRun   bool
	Reason   string
	Incident string // timeline RB-3
	Markdown bool   // timeline --markdown
	Page     int    // timeline --page N (1-based; 0 means the first)
}

// ParseError is a malformed command; Msg says what to type instead.
type ParseError struct{ Msg string }

func (e *ParseError) Error() string { return e.Msg }

func parseErrorf(format string, args ...any) error {
	return &ParseError{Msg: fmt.Sprintf(format, args...)}
}

const (
	maxCommandText = 1000
	maxReason      = 300
)

var (
	serviceName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	envName     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,30}$`)
	revisionArg = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$`)
	incidentArg = regexp.MustCompile(`^(?i)rb-[0-9]{1,12}$`)
)

// ParseCommand parses the text after /rollback. It accepts Slack's smart
// quotes around --reason, --flag=value and --flag value, and rejects
// anything it does not understand with a message saying what to type.
func ParseCommand(text string) (Command, error) {
	if !utf8.ValidString(text) {
		return Command{}, parseErrorf("the command text is not valid UTF-8")
	}
	if len(text) > maxCommandText {
		return Command{}, parseErrorf("the command text is too long (%d characters, at most %d)", len(text), maxCommandText)
	}
	args, err := splitArgs(text)
	if err != nil {
		return Command{}, err
	}
	if len(args) == 0 {
		return Command{Kind: CmdHelp}, nil
	}
	switch strings.ToLower(args[0]) {
	case "help", "-h", "--help":
		if len(args) > 1 {
			return Command{}, parseErrorf("`help` takes no arguments")
		}
		return Command{Kind: CmdHelp}, nil
	case "status":
		c, err := parseServiceArgs(CmdStatus, args[1:], false, "`/rollback status [service]`, optionally with `--env <environment>`")
		return c, err
	case "history":
		return parseServiceArgs(CmdHistory, args[1:], true, "`/rollback history <service>`, optionally with `--env <environment>`")
	case "drill":
		return parseServiceArgs(CmdDrill, args[1:], true, "`/rollback drill <service>`, optionally with `--env <environment>`")
	case "drills":
		return parseServiceArgs(CmdDrills, args[1:], true, "`/rollback drills <service>`, optionally with `--env <environment>`")
	case "unlock":
		return parseServiceArgs(CmdUnlock, args[1:], true, "`/rollback unlock <service>`, optionally with `--env <environment>` (lifts the deploy lock a rollback left; approvers only)")
	case "allow":
		if len(args) != 3 || !revisionArg.MatchString(args[2]) {
			return Command{}, parseErrorf("usage: `/rollback allow <service> <version>` (lets the cluster run an image marked DO_NOT_DEPLOY again; approvers only)")
		}
		c, err := parseServiceArgs(CmdAllow, args[1:2], true, "`/rollback allow <service> <version>` (lets the cluster run an image marked DO_NOT_DEPLOY again; approvers only)")
		if err != nil {
			return Command{}, err
		}
		c.To = args[2]
		return c, nil
	case "resume-sync":
		return parseServiceArgs(CmdResumeSync, args[1:], true, "`/rollback resume-sync <service>`, optionally with `--env <environment>`")
	case "timeline":
		c := Command{Kind: CmdTimeline}
		const usage = "usage: `/rollback timeline [RB-n] [--page N] [--markdown]`"
		for i := 1; i < len(args); i++ {
			a := args[i]
			switch {
			case a == "--markdown" || a == "--md":
				c.Markdown = true
			case a == "--page" || strings.HasPrefix(a, "--page="):
				v, ok := strings.CutPrefix(a, "--page=")
				if !ok {
					if i+1 >= len(args) {
						return Command{}, parseErrorf("`--page` needs a number; %s", usage)
					}
					i++
					v = args[i]
				}
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > 100000 {
					return Command{}, parseErrorf("`--page` takes a page number like 2 (got %q); %s", v, usage)
				}
				c.Page = n
			case incidentArg.MatchString(a) && c.Incident == "":
				c.Incident = strings.ToUpper(a)
			default:
				return Command{}, parseErrorf("%s (%q is not an incident id like RB-3)", usage, a)
			}
		}
		if c.Page > 0 && c.Markdown {
			return Command{}, parseErrorf("`--markdown` exports the whole timeline: leave out `--page`")
		}
		return c, nil
	}
	return parseRollback(args)
}

// setService sets the service argument, "name" or "name@env".
func (c *Command) setService(a, usage string) error {
	if c.Service != "" {
		return parseErrorf("only one service (got %q and %q); usage: %s", c.Service, a, usage)
	}
	name, env, hasEnv := strings.Cut(a, "@")
	if !serviceName.MatchString(name) {
		return parseErrorf("%q is not a service name (lowercase letters, digits, '.', '_' and '-'); usage: %s", a, usage)
	}
	if hasEnv {
		if err := c.setEnv(env); err != nil {
			return err
		}
	}
	c.Service = name
	return nil
}

// setEnv sets the environment from --env or name@env.
func (c *Command) setEnv(env string) error {
	if !envName.MatchString(env) {
		return parseErrorf("%q is not an environment name (e.g. `--env staging`)", env)
	}
	if c.Env != "" && c.Env != env {
		return parseErrorf("two environments given (%q and %q); name one", c.Env, env)
	}
	c.Env = env
	return nil
}

// parseServiceArgs parses "[service] [--env e]" for the commands that
// take only those.
func parseServiceArgs(kind CommandKind, args []string, need bool, usage string) (Command, error) {
	c := Command{Kind: kind}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			if err := c.setService(a, usage); err != nil {
				return Command{}, err
			}
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.ToLower(name) != "env" {
			return Command{}, parseErrorf("unknown option `%s`; usage: %s", a, usage)
		}
		if !hasVal {
			if i+1 >= len(args) {
				return Command{}, parseErrorf("`--env` needs a value; usage: %s", usage)
			}
			i++
			val = args[i]
		}
		if err := c.setEnv(val); err != nil {
			return Command{}, err
		}
	}
	if c.Service == "" && (need || c.Env != "") {
		return Command{}, parseErrorf("which service? usage: %s", usage)
	}
	return c, nil
}

func parseRollback(args []string) (Command, error) {
	c := Command{Kind: CmdRollback}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			if c.Service != "" {
				return Command{}, parseErrorf("only one service per rollback (got %q and %q); usage: `/rollback <service> [--env <environment>] [--to <revision|tag>] [--dry-run] [--reason \"…\"]`", c.Service, a)
			}
			if err := c.setService(a, "`/rollback <service> [--env <environment>]`"); err != nil {
				return Command{}, err
			}
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		value := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", parseErrorf("`--%s` needs a value", name)
			}
			i++
			return args[i], nil
		}
		switch strings.ToLower(name) {
		case "dry-run", "dryrun", "n":
			if hasVal {
				return Command{}, parseErrorf("`--dry-run` takes no value")
			}
			c.DryRun = true
		case "env":
			v, err := value()
			if err != nil {
				return Command{}, err
			}
			if err := c.setEnv(v); err != nil {
				return Command{}, err
			}
		case "to":
			v, err := value()
			if err != nil {
				return Command{}, err
			}
			if !revisionArg.MatchString(v) {
				return Command{}, parseErrorf("%q is not a revision or tag (e.g. `--to 3` or `--to v1.2.3`)", v)
			}
			c.To = v
		case "reason":
			v, err := value()
			if err != nil {
				return Command{}, err
			}
			v = strings.TrimSpace(v)
			if v == "" {
				return Command{}, parseErrorf("`--reason` is empty; write it in quotes: `--reason \"error rate spike after deploy\"`")
			}
			if utf8.RuneCountInString(v) > maxReason {
				return Command{}, parseErrorf("the reason is too long (at most %d characters)", maxReason)
			}
			c.Reason = v
		default:
			return Command{}, parseErrorf("unknown option `%s`; options are `--env <environment>`, `--to <revision|tag>`, `--dry-run`, `--reason \"…\"`", a)
		}
	}
	if c.Service == "" {
		return Command{}, parseErrorf("which service? usage: `/rollback <service> [--to <revision|tag>] [--dry-run] [--reason \"…\"]`")
	}
	return c, nil
}

// splitArgs splits on white space, honouring "double", 'single' and
// Slack's “smart” quotes.
func splitArgs(s string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		quote rune
		inArg bool
	)
	closing := map[rune]rune{'"': '"', '\'': '\'', '“': '”', '‘': '’', '”': '”'}
	for _, r := range s {
		if unicode.IsControl(r) && !unicode.IsSpace(r) || r == '\r' {
			return nil, parseErrorf("the command contains a control character")
		}
		switch {
		case quote != 0:
			if r == closing[quote] || (quote == '“' && r == '"') {
				quote = 0
				continue
			}
			cur.WriteRune(r)
		case closing[r] != 0:
			quote = r
			inArg = true
		case unicode.IsSpace(r):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if quote != 0 {
		return nil, parseErrorf("a quote is not closed; write the reason as `--reason \"…\"`")
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

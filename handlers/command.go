package handlers

import (
	"fmt"
	"regexp"
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
	// CmdResumeSync restores the GitOps owner a rollback paused.
	CmdResumeSync CommandKind = "resume-sync"
)

// Command is a parsed /rollback text.
type Command struct {
	Kind     CommandKind
	Service  string
	To       string // --to <revision|tag>
	DryRun   bool
	Reason   string
	Incident string // timeline RB-3
	Markdown bool   // timeline --markdown
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
		if len(args) > 2 {
			return Command{}, parseErrorf("usage: `/rollback status [service]`")
		}
		c := Command{Kind: CmdStatus}
		if len(args) == 2 {
			if !serviceName.MatchString(args[1]) {
				return Command{}, parseErrorf("%q is not a service name; usage: `/rollback status [service]`", args[1])
			}
			c.Service = args[1]
		}
		return c, nil
	case "history":
		if len(args) != 2 || !serviceName.MatchString(args[1]) {
			return Command{}, parseErrorf("usage: `/rollback history <service>`")
		}
		return Command{Kind: CmdHistory, Service: args[1]}, nil
	case "resume-sync":
		if len(args) != 2 || !serviceName.MatchString(args[1]) {
			return Command{}, parseErrorf("usage: `/rollback resume-sync <service>`")
		}
		return Command{Kind: CmdResumeSync, Service: args[1]}, nil
	case "timeline":
		c := Command{Kind: CmdTimeline}
		for _, a := range args[1:] {
			switch {
			case a == "--markdown" || a == "--md":
				c.Markdown = true
			case incidentArg.MatchString(a) && c.Incident == "":
				c.Incident = strings.ToUpper(a)
			default:
				return Command{}, parseErrorf("usage: `/rollback timeline [RB-n] [--markdown]` (%q is not an incident id like RB-3)", a)
			}
		}
		return c, nil
	}
	return parseRollback(args)
}

func parseRollback(args []string) (Command, error) {
	c := Command{Kind: CmdRollback}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			if c.Service != "" {
				return Command{}, parseErrorf("only one service per rollback (got %q and %q); usage: `/rollback <service> [--to <revision|tag>] [--dry-run] [--reason \"…\"]`", c.Service, a)
			}
			if !serviceName.MatchString(a) {
				return Command{}, parseErrorf("%q is not a service name (lowercase letters, digits, '.', '_' and '-')", a)
			}
			c.Service = a
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
			return Command{}, parseErrorf("unknown option `%s`; options are `--to <revision|tag>`, `--dry-run`, `--reason \"…\"`", a)
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

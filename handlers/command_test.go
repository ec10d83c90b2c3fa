package handlers

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		text    string
		want    Command
		wantErr string
	}{
		{"", Command{Kind: CmdHelp}, ""},
		{"help", Command{Kind: CmdHelp}, ""},
		{"myapp", Command{Kind: CmdRollback, Service: "myapp"}, ""},
		{"  myapp   --dry-run ", Command{Kind: CmdRollback, Service: "myapp", DryRun: true}, ""},
		{"myapp --to 3", Command{Kind: CmdRollback, Service: "myapp", To: "3"}, ""},
		{"myapp --to=v1.2.3", Command{Kind: CmdRollback, Service: "myapp", To: "v1.2.3"}, ""},
		{`myapp --reason "error spike after 14:02 deploy"`, Command{Kind: CmdRollback, Service: "myapp", Reason: "error spike after 14:02 deploy"}, ""},
		{"myapp --reason “smart quotes from macOS”", Command{Kind: CmdRollback, Service: "myapp", Reason: "smart quotes from macOS"}, ""},
		{"--dry-run myapp", Command{Kind: CmdRollback, Service: "myapp", DryRun: true}, ""},
		{"status", Command{Kind: CmdStatus}, ""},
		{"status myapp", Command{Kind: CmdStatus, Service: "myapp"}, ""},
		{"history myapp", Command{Kind: CmdHistory, Service: "myapp"}, ""},
		{"unlock myapp", Command{Kind: CmdUnlock, Service: "myapp"}, ""},
		{"allow myapp v3", Command{Kind: CmdAllow, Service: "myapp", To: "v3"}, ""},
		{"unlock", Command{}, "usage: `/rollback unlock <service>`"},
		{"allow myapp", Command{}, "usage: `/rollback allow <service> <version>`"},
		{"timeline", Command{Kind: CmdTimeline}, ""},
		{"timeline rb-12 --markdown", Command{Kind: CmdTimeline, Incident: "RB-12", Markdown: true}, ""},
		{"myapp other", Command{}, "only one service"},
		{"MyApp", Command{}, "is not a service name"},
		{"myapp --to", Command{}, "`--to` needs a value"},
		{"myapp --to ;rm -rf", Command{}, "is not a revision or tag"},
		{"myapp --force", Command{}, "unknown option `--force`"},
		{"myapp --dry-run=yes", Command{}, "takes no value"},
		{`myapp --reason "open`, Command{}, "a quote is not closed"},
		{`myapp --reason ""`, Command{}, "`--reason` is empty"},
		{"--dry-run", Command{}, "which service?"},
		{"history", Command{}, "usage: `/rollback history <service>`"},
		{"timeline yesterday", Command{}, "is not an incident id"},
		{"timeline RB-3 --page 2", Command{Kind: CmdTimeline, Incident: "RB-3", Page: 2}, ""},
		{"timeline --page=7", Command{Kind: CmdTimeline, Page: 7}, ""},
		{"timeline RB-3 --page", Command{}, "`--page` needs a number"},
		{"timeline RB-3 --page 0", Command{}, "takes a page number"},
		{"timeline RB-3 --page two", Command{}, "takes a page number"},
		{"timeline RB-3 --page 2 --markdown", Command{}, "leave out `--page`"},
		{"status a b", Command{}, "usage: `/rollback status [service]`"},
		{"myapp\x00", Command{}, "control character"},
		{"myapp --env staging", Command{Kind: CmdRollback, Service: "myapp", Env: "staging"}, ""},
		{"myapp --env=prod --dry-run", Command{Kind: CmdRollback, Service: "myapp", Env: "prod", DryRun: true}, ""},
		{"myapp@staging --to 3", Command{Kind: CmdRollback, Service: "myapp", Env: "staging", To: "3"}, ""},
		{"myapp@staging --env staging", Command{Kind: CmdRollback, Service: "myapp", Env: "staging"}, ""},
		{"status myapp --env prod", Command{Kind: CmdStatus, Service: "myapp", Env: "prod"}, ""},
		{"history myapp@prod", Command{Kind: CmdHistory, Service: "myapp", Env: "prod"}, ""},
		{"drill myapp --env staging", Command{Kind: CmdDrill, Service: "myapp", Env: "staging"}, ""},
		{"drills myapp", Command{Kind: CmdDrills, Service: "myapp"}, ""},
		{"myapp@staging --env prod", Command{}, "two environments given"},
		{"myapp --env", Command{}, "`--env` needs a value"},
		{"myapp --env Prod!", Command{}, "is not an environment name"},
		{"status --env prod", Command{}, "which service?"},
		{"drill", Command{}, "usage: `/rollback drill <service>`"},
		{"drills myapp --to 3", Command{}, "unknown option `--to`"},
		{strings.Repeat("a", 2000), Command{}, "too long"},
		{"myapp --reason " + strings.Repeat("x", 400), Command{}, "reason is too long"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			got, err := ParseCommand(tt.text)
			if tt.wantErr != "" {
				var pe *ParseError
				if !errors.As(err, &pe) || !strings.Contains(pe.Msg, tt.wantErr) {
					t.Fatalf("ParseCommand(%q) error = %v; want a ParseError containing %q", tt.text, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseCommand(%q) = %+v, %v; want %+v", tt.text, got, err, tt.want)
			}
		})
	}
}

// FuzzParseCommand: any text parses to a valid command or a ParseError
// with a message for the user; never a panic, never an unvalidated field.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"", "myapp", "myapp --to 3 --dry-run", `myapp --reason "x y"`, "timeline RB-1 --markdown",
		"status myapp", "history myapp", "myapp --reason “a”", "--to=3 myapp", `"`, "myapp --to=v1:2@sha256"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseCommand(text)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Msg == "" {
				t.Fatalf("ParseCommand(%q) returned a non-user error %v", text, err)
			}
			return
		}
		switch c.Kind {
		case CmdRollback:
			if !serviceName.MatchString(c.Service) {
				t.Fatalf("service %q escaped validation", c.Service)
			}
			if c.To != "" && !revisionArg.MatchString(c.To) {
				t.Fatalf("--to %q escaped validation", c.To)
			}
			if !utf8.ValidString(c.Reason) || strings.ContainsAny(c.Reason, "\x00\r") || utf8.RuneCountInString(c.Reason) > maxReason {
				t.Fatalf("reason %q escaped validation", c.Reason)
			}
		case CmdHistory:
			if !serviceName.MatchString(c.Service) {
				t.Fatalf("service %q escaped validation", c.Service)
			}
		case CmdStatus, CmdTimeline, CmdHelp:
		default:
			t.Fatalf("unknown kind %q", c.Kind)
		}
	})
}

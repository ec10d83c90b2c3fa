package handlers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ServiceKey is the key of a service in an environment: "myapp@staging",
// or just the name when the service has no environments. It is also what
// a user may type instead of `myapp --env staging`.
func ServiceKey(name, env string) string {
	if env == "" {
		return name
	}
	return name + "@" + env
}

// BaseName is the name a user types for the service, without its environment.
func (s *Service) BaseName() string {
	name, _, _ := strings.Cut(s.Name, "@")
	return name
}

// channels are where the service answers.
func (e *Engine) channelsOf(s *Service) []string {
	if len(s.Channels) > 0 {
		return s.Channels
	}
	return e.opt.IncidentChannels
}

// channelIn reports whether a channel (id, and name when Slack sent it)
// is one of list; an empty list means any channel.
func channelIn(list []string, id, name string) bool {
	if len(list) == 0 {
		return true
	}
	for _, c := range list {
		c = strings.TrimPrefix(c, "#")
		if c == id || (name != "" && c == name) {
			return true
		}
	}
	return false
}

// visible are the services bound to a channel, by key.
func (e *Engine) visible(id, name string) []*Service {
	var out []*Service
	for _, s := range e.services {
		if channelIn(e.channelsOf(s), id, name) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// allChannels is every channel where some service answers.
func (e *Engine) allChannels() []string {
	var out []string
	for _, s := range e.services {
		for _, c := range e.channelsOf(s) {
			if !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	sort.Strings(out)
	return out
}

// names lists services for users: "myapp", "myapp@staging".
func names(svcs []*Service) []string {
	out := make([]string, len(svcs))
	for i, s := range svcs {
		out[i] = s.Name
	}
	return out
}

func baseNames(svcs []*Service) []string {
	var out []string
	for _, s := range svcs {
		if !slices.Contains(out, s.BaseName()) {
			out = append(out, s.BaseName())
		}
	}
	return out
}

// resolve finds the one service a command names among those the channel
// sees. It never guesses: a name defined in several environments here
// gets a message listing them, with the command to type for each; a name
// bound to another channel says where it answers.
func (e *Engine) resolve(ctx context.Context, sc SlashCommand, cmd Command, visible []*Service) (*Service, bool) {
	var same []*Service // visible here under this name, any environment
	for _, s := range visible {
		if s.BaseName() == cmd.Service {
			same = append(same, s)
		}
	}
	var match []*Service
	for _, s := range same {
		if cmd.Env == "" || s.Env == cmd.Env {
			match = append(match, s)
		}
	}
	say := func(m Msg) (*Service, bool) {
		e.ephemeral(ctx, sc.ChannelID, sc.UserID, m)
		return nil, false
	}
	switch {
	case len(match) == 1:
		// One definition of the name in this channel (maybe one of its
		// environments): not ambiguous here.
		return match[0], true
	case len(match) > 1:
		return say(ambiguousMsg(cmd.Service, sc.Text, envsOf(match)))
	}
	elsewhere := e.channelsFor(cmd.Service, cmd.Env)
	if len(same) > 0 { // known here, not in that environment
		t := fmt.Sprintf("`%s` has no environment `%s` in this channel; here it has %s.", cmd.Service, cmd.Env, codeList(envsOf(same)))
		if len(elsewhere) > 0 {
			t += " `" + ServiceKey(cmd.Service, cmd.Env) + "` is run in " + channelList(elsewhere) + "."
		}
		return say(errorMsg(t + " Nothing was done."))
	}
	if len(elsewhere) > 0 {
		what := "`" + ServiceKey(cmd.Service, cmd.Env) + "`"
		return say(errorMsg(what + " is not handled in this channel; its team runs it in " + channelList(elsewhere) + ". Run the command there."))
	}
	bases := baseNames(visible)
	return say(unknownServiceMsg(ServiceKey(cmd.Service, cmd.Env), suggest(cmd.Service, bases), names(visible)))
}

// channelsFor are the channels of the services with this name (and
// environment, when given).
func (e *Engine) channelsFor(name, env string) []string {
	var out []string
	for _, s := range e.services {
		if s.BaseName() == name && (env == "" || s.Env == env) {
			for _, c := range e.channelsOf(s) {
				if !slices.Contains(out, c) {
					out = append(out, c)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func envsOf(svcs []*Service) []string {
	var out []string
	for _, s := range svcs {
		out = append(out, s.Env)
	}
	sort.Strings(out)
	return out
}

// withEnv is the command text with --env env added.
func withEnv(text, env string) string {
	return strings.TrimSpace(text) + " --env " + env
}

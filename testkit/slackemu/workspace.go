package slackemu

import (
	"sort"
	"strings"
)

// User is a member of the seeded workspace.
type User struct {
	ID          string
	Name        string // handle: alice
	RealName    string // Alice Adams
	DisplayName string
	Title       string
	TZ          string
	TZLabel     string
	TZOffset    int // seconds east of UTC
	IsBot       bool
	Color       string // avatar colour on the page
}

// Group is a user group (@oncall).
type Group struct {
	ID      string
	Handle  string
	Name    string
	Members []string
}

// Channel is a conversation of the workspace.
type Channel struct {
	ID        string
	Name      string // without '#'; empty for a DM
	Topic     string
	Purpose   string
	IsIM      bool
	IMUser    string // the human in a DM with the bot
	BotMember bool
}

var seedUsers = []User{
	{ID: BotUserID, Name: "rollbot", RealName: "rollbot", DisplayName: "rollbot", IsBot: true, TZ: "UTC", TZLabel: "Coordinated Universal Time", Color: "#4a154b"},
	{ID: UserAlice, Name: "alice", RealName: "Alice Adams", DisplayName: "alice", Title: "SRE, on-call", TZ: "Europe/Paris", TZLabel: "Central European Time", TZOffset: 3600, Color: "#2bac76"},
	{ID: UserBob, Name: "bob", RealName: "Bob Brown", DisplayName: "bob", Title: "SRE, on-call", TZ: "America/New_York", TZLabel: "Eastern Standard Time", TZOffset: -18000, Color: "#1d9bd1"},
	{ID: UserDana, Name: "dana", RealName: "Dana Diaz", DisplayName: "dana", Title: "Database administrator", TZ: "Europe/London", TZLabel: "Greenwich Mean Time", Color: "#e8912d"},
	{ID: UserErin, Name: "erin", RealName: "Erin Evans", DisplayName: "erin", Title: "Database administrator", TZ: "Asia/Tokyo", TZLabel: "Japan Standard Time", TZOffset: 32400, Color: "#cd2553"},
	{ID: UserEve, Name: "eve", RealName: "Eve Ellis", DisplayName: "eve", Title: "Product manager", TZ: "America/Los_Angeles", TZLabel: "Pacific Standard Time", TZOffset: -28800, Color: "#8b6cc1"},
}

var seedGroups = []Group{
	{ID: GroupOnCall, Handle: "oncall", Name: "On-call engineers", Members: []string{UserAlice, UserBob}},
	{ID: GroupDBA, Handle: "dba", Name: "Database administrators", Members: []string{UserDana, UserErin}},
}

var seedChannels = []Channel{
	{ID: ChannelIncident, Name: "incident-rollbacks", Topic: "Rollbacks in progress. Use /rollback <service>", Purpose: "Coordinate deployment rollbacks", BotMember: true},
	{ID: ChannelGeneral, Name: "general", Topic: "Company-wide announcements", Purpose: "General chatter", BotMember: true},
	{ID: ChannelTeamWeb, Name: "web-incidents", Topic: "Web team incidents", Purpose: "Rollbacks of the web team's services", BotMember: true},
	{ID: ChannelTeamPay, Name: "payments-incidents", Topic: "Payments team incidents", Purpose: "Rollbacks of the payments team's services", BotMember: true},
}

// Users returns the seeded users, the bot first.
func (s *Server) Users() []User { return append([]User(nil), seedUsers...) }

// Groups returns the seeded user groups.
func (s *Server) Groups() []Group {
	out := make([]Group, len(seedGroups))
	for i, g := range seedGroups {
		g.Members = append([]string(nil), g.Members...)
		out[i] = g
	}
	return out
}

func userByID(id string) (User, bool) {
	for _, u := range seedUsers {
		if u.ID == id {
			return u, true
		}
	}
	return User{}, false
}

func userByName(name string) (User, bool) {
	for _, u := range seedUsers {
		if strings.EqualFold(u.Name, name) {
			return u, true
		}
	}
	return User{}, false
}

func groupByID(id string) (Group, bool) {
	for _, g := range seedGroups {
		if g.ID == id {
			return g, true
		}
	}
	return Group{}, false
}

func groupByHandle(h string) (Group, bool) {
	for _, g := range seedGroups {
		if strings.EqualFold(g.Handle, h) {
			return g, true
		}
	}
	return Group{}, false
}

// userName is the handle of id, or id itself when unknown.
func userName(id string) string {
	if u, ok := userByID(id); ok {
		return u.Name
	}
	return id
}

// dmChannelID is the ID of the bot's DM with a user.
func dmChannelID(userID string) string { return "D" + strings.TrimPrefix(userID, "U") }

// channelByID finds a seeded channel or a DM opened so far (callers hold
// s.mu when dms may change).
func (st *store) channelByID(id string) (Channel, bool) {
	for _, c := range seedChannels {
		if c.ID == id {
			return c, true
		}
	}
	c, ok := st.dms[id]
	return c, ok
}

// resolveChannel maps a channel argument (ID, name, #name, or a user ID
// for a DM) to a channel, opening the DM if needed.
func (st *store) resolveChannel(arg string) (Channel, bool) {
	if c, ok := st.channelByID(arg); ok {
		return c, true
	}
	name := strings.TrimPrefix(arg, "#")
	for _, c := range seedChannels {
		if c.Name == name {
			return c, true
		}
	}
	if u, ok := userByID(arg); ok && !u.IsBot {
		c := Channel{ID: dmChannelID(u.ID), IsIM: true, IMUser: u.ID, BotMember: true}
		st.dms[c.ID] = c
		return c, true
	}
	return Channel{}, false
}

// channelsFor lists the channels a user sees in the sidebar.
func (st *store) channelsFor(userID string) []Channel {
	out := append([]Channel(nil), seedChannels...)
	var dms []Channel
	for _, c := range st.dms {
		if c.IMUser == userID {
			dms = append(dms, c)
		}
	}
	sort.Slice(dms, func(i, j int) bool { return dms[i].ID < dms[j].ID })
	return append(out, dms...)
}

// slackUser is the users.info shape of u.
func slackUser(u User) map[string]any {
	first, last, _ := strings.Cut(u.RealName, " ")
	profile := map[string]any{
		"real_name":               u.RealName,
		"real_name_normalized":    u.RealName,
		"display_name":            u.DisplayName,
		"display_name_normalized": u.DisplayName,
		"first_name":              first,
		"last_name":               last,
		"title":                   u.Title,
		"status_text":             "",
		"status_emoji":            "",
		"team":                    TeamID,
		"avatar_hash":             "emulator",
	}
	if !u.IsBot {
		profile["email"] = u.Name + "@acme.example"
	} else {
		profile["bot_id"] = BotID
		profile["api_app_id"] = AppID
		profile["always_active"] = true
	}
	return map[string]any{
		"id":                  u.ID,
		"team_id":             TeamID,
		"name":                u.Name,
		"deleted":             false,
		"color":               strings.TrimPrefix(u.Color, "#"),
		"real_name":           u.RealName,
		"tz":                  u.TZ,
		"tz_label":            u.TZLabel,
		"tz_offset":           u.TZOffset,
		"profile":             profile,
		"is_admin":            false,
		"is_owner":            false,
		"is_primary_owner":    false,
		"is_restricted":       false,
		"is_ultra_restricted": false,
		"is_bot":              u.IsBot,
		"is_app_user":         false,
		"updated":             1700000000,
		"locale":              "en-US",
	}
}

// slackChannel is the conversations.info shape of c.
func slackChannel(c Channel) map[string]any {
	members := len(seedUsers)
	if c.IsIM {
		return map[string]any{
			"id": c.ID, "created": 1700000000, "is_im": true, "is_org_shared": false,
			"user": c.IMUser, "is_user_deleted": false, "priority": 0,
		}
	}
	return map[string]any{
		"id":                         c.ID,
		"name":                       c.Name,
		"name_normalized":            c.Name,
		"is_channel":                 true,
		"is_group":                   false,
		"is_im":                      false,
		"is_mpim":                    false,
		"is_private":                 false,
		"is_archived":                false,
		"is_general":                 c.ID == ChannelGeneral,
		"is_shared":                  false,
		"is_ext_shared":              false,
		"is_org_shared":              false,
		"is_member":                  c.BotMember,
		"created":                    1700000000,
		"creator":                    UserAlice,
		"unlinked":                   0,
		"context_team_id":            TeamID,
		"num_members":                members,
		"topic":                      map[string]any{"value": c.Topic, "creator": UserAlice, "last_set": 1700000000},
		"purpose":                    map[string]any{"value": c.Purpose, "creator": UserAlice, "last_set": 1700000000},
		"previous_names":             []string{},
		"shared_team_ids":            []string{TeamID},
		"pending_shared":             []string{},
		"pending_connected_team_ids": []string{},
	}
}

func slackGroup(g Group) map[string]any {
	return map[string]any{
		"id": g.ID, "team_id": TeamID, "is_usergroup": true, "name": g.Name, "handle": g.Handle,
		"description": g.Name, "is_external": false, "date_create": 1700000000, "date_update": 1700000000,
		"date_delete": 0, "auto_type": nil, "created_by": UserAlice, "updated_by": UserAlice,
		"deleted_by": nil, "prefs": map[string]any{"channels": []string{}, "groups": []string{}},
		"users": g.Members, "user_count": len(g.Members),
	}
}

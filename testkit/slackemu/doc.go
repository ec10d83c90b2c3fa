// Package slackemu is a local Slack-compatible server for tests and for the
// no-workspace demo. It is a development tool: the production bot must not
// import it (only the `rollbot demo` command does).
//
// # Talking to it
//
// The unmodified slack-go client works against it:
//
//	s, _ := slackemu.New(slackemu.Options{})
//	api := slack.New(slackemu.BotToken,
//		slack.OptionAPIURL(s.APIURL()), slack.OptionAppLevelToken(slackemu.AppToken))
//	client := socketmode.New(api)
//
// Web API methods: auth.test, api.test, apps.connections.open,
// chat.postMessage / postEphemeral / update / delete / scheduleMessage /
// deleteScheduledMessage / getPermalink, conversations.info / history /
// replies / members, users.info / list / lookupByEmail, usergroups.list,
// usergroups.users.list, reactions.add / remove, team.info, bots.info,
// views.open / push / update, and Slack's file upload flow:
// files.getUploadURLExternal, the POST to the upload URL it returns,
// files.completeUploadExternal (the file is shared in a message of the
// channel or thread, shown on the page as a card with its first lines and
// a link to its content; Server.Files lists them). Others answer
// unknown_method.
//
// Tokens are checked as Slack does: a form field "token", a query parameter
// or "Authorization: Bearer"; no token → not_authed, another token →
// invalid_auth, BotToken on apps.connections.open or AppToken anywhere else
// → not_allowed_token_type. Errors are HTTP 200 {"ok":false,"error":…};
// rate limits are HTTP 429 with Retry-After in whole seconds.
//
// Block Kit is validated against Slack's limits (50 blocks per message,
// 100 per modal, section text 3000, 10 fields of 2000, header 150, button
// text 75 / value 2000, 25 action elements, 10 context elements, confirm
// title 100 / text 300, one table per message of ≤ 100 rows × ≤ 20 cells,
// unique block_ids, known block and element types) and refused with
// invalid_blocks (chat.*) or invalid_arguments (views.*), with Slack-style
// messages "[ERROR] … [json-pointer:/blocks/3/text/text]" in
// response_metadata.messages. Missing block_ids and action_ids are
// assigned. Message ts values are Slack-shaped ("1716212345.000123") and
// strictly increasing. Plain-text objects with "emoji": false show
// :shortcodes: literally, as in Slack.
//
// # Socket Mode
//
// apps.connections.open hands out one-use ws:// URLs; up to 10 connections
// of the app at once (more are refused at apps.connections.open with
// too_many_websockets, as Slack does). Each connection gets hello, then
// websocket PINGs every PingInterval. Each envelope goes to ONE connection,
// round-robin. Acks are awaited for AckTimeout (Slack's 3 s): a slash
// command, block action or view submission that is not acked fails with
// ErrNotAcked (Slack shows the user an error); an events_api envelope is
// redelivered up to MaxRedeliveries times with a new envelope_id,
// retry_attempt 1, 2, 3 and retry_reason "timeout", the payload (and its
// event_id) unchanged, each time to another connection than the previous
// attempt when another one is open. A connection that closes after an
// envelope was written to it and before its ack loses that envelope: it is
// redelivered at once to another connection (a slash command or
// interaction only within its ack window, counted from the first copy).
//
// Faults: DuplicateNextEnvelope and DuplicateEnvelopes send one or every
// envelope twice, to two different connections, under different
// envelope_ids with the same payload; either ack counts.
// DropAfterNextEnvelope(conn) delivers the next envelope to connection
// conn (ConnectionIDs) and closes it right after, before any ack.
// DropConnections closes every socket without a close frame;
// RefreshConnections sends disconnect/refresh_requested. Deliveries lists
// every envelope copy with its connection, retry fields and whether it was
// acked or lost.
//
// # Acting as people
//
// SlashCommand, ClickButton (the block_actions payload is built from the
// stored message as Slack builds it: user, team, channel, container,
// message — omitted for ephemeral messages, as Slack does — state,
// response_url, trigger_id, actions with block_id, action_id, value, text,
// style, action_ts; a confirm dialog counts as accepted), SubmitView (the
// client-side checks of required fields and min/max length come first and
// return a ViewAck with FromClient set; the app's response_action is then
// applied: errors are kept on the view, update / push / clear / close),
// CloseView (view_closed when notify_on_close), PostUserMessage (an
// app_mention event when the text mentions <@U0ROLLBOT>) and SendEvent.
// Every interaction hands out a trigger_id (usable once, for TriggerTTL)
// and a response_url served by the emulator (five uses in 30 minutes;
// replace_original, delete_original, response_type in_channel or the
// default ephemeral). A slash command's ack payload with text or blocks is
// posted like a response_url reply.
//
// Messages, Message, WaitForMessage, Views, CurrentView, WaitForView,
// Scheduled, Calls and CallsTo read the state; messages keep their current
// state (Edited, Deleted, Reactions). Scheduled messages are posted by the
// server when their time comes.
//
// # The page
//
// PageURL serves a channel view that looks like Slack: the Block Kit
// blocks rendered (header, section with text, fields and accessory,
// context, divider, actions with primary and danger buttons and their
// confirm dialogs, image placeholders, input, rich_text, table, markdown),
// mrkdwn (bold, italic, strike, code, pre, quotes, links, user, group and
// channel mentions, dates, emoji shortcodes), threads shown under their
// parent, ephemeral messages marked "Only visible to you" (other people's
// ephemeral messages show as a one-line note), reactions, scheduled
// messages, an "acting as" picker (?as=U0BOB), a composer that sends
// /commands and messages as that person, and modals with inline errors.
// It updates live over server-sent events. A banner says it is an
// emulator.
package slackemu

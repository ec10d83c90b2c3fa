package slackemu

import (
	"regexp"
	"strconv"
	"strings"
)

// emoji maps Slack shortcodes to Unicode; unknown codes stay as text.
var emoji = map[string]string{
	"white_check_mark": "✅", "heavy_check_mark": "✔️", "ballot_box_with_check": "☑️", "x": "❌",
	"negative_squared_cross_mark": "❎", "heavy_multiplication_x": "✖️", "warning": "⚠️",
	"hourglass_flowing_sand": "⏳", "hourglass": "⌛", "stopwatch": "⏱️", "timer_clock": "⏲️",
	"alarm_clock": "⏰", "rotating_light": "🚨", "rocket": "🚀", "rewind": "⏪", "fast_forward": "⏩",
	"arrows_counterclockwise": "🔄", "arrows_clockwise": "🔃", "repeat": "🔁", "recycle": "♻️",
	"leftwards_arrow_with_hook": "↩️", "arrow_right_hook": "↪️", "back": "🔙", "arrow_right": "➡️",
	"arrow_left": "⬅️", "arrow_up": "⬆️", "arrow_down": "⬇️", "arrow_forward": "▶️",
	"double_vertical_bar": "⏸️", "black_square_for_stop": "⏹️", "stop_button": "⏹️",
	"no_entry": "⛔", "no_entry_sign": "🚫", "octagonal_sign": "🛑", "stop_sign": "🛑",
	"red_circle": "🔴", "large_green_circle": "🟢", "green_circle": "🟢", "large_yellow_circle": "🟡",
	"yellow_circle": "🟡", "large_orange_circle": "🟠", "orange_circle": "🟠", "large_blue_circle": "🔵",
	"blue_circle": "🔵", "white_circle": "⚪", "black_circle": "⚫", "large_purple_circle": "🟣",
	"eyes": "👀", "+1": "👍", "thumbsup": "👍", "-1": "👎", "thumbsdown": "👎", "tada": "🎉",
	"fire": "🔥", "bulb": "💡", "lock": "🔒", "unlock": "🔓", "key": "🔑", "mag": "🔍", "mag_right": "🔎",
	"chart_with_upwards_trend": "📈", "chart_with_downwards_trend": "📉", "bar_chart": "📊",
	"memo": "📝", "pencil": "📝", "pencil2": "✏️", "clipboard": "📋", "pushpin": "📌", "link": "🔗",
	"bell": "🔔", "no_bell": "🔕", "hammer_and_wrench": "🛠️", "wrench": "🔧", "hammer": "🔨",
	"gear": "⚙️", "package": "📦", "floppy_disk": "💾", "card_file_box": "🗃️", "file_cabinet": "🗄️",
	"robot_face": "🤖", "bust_in_silhouette": "👤", "busts_in_silhouette": "👥",
	"information_source": "ℹ️", "question": "❓", "grey_question": "❔", "exclamation": "❗",
	"heavy_exclamation_mark": "❗", "grey_exclamation": "❕", "bangbang": "‼️",
	"speech_balloon": "💬", "thought_balloon": "💭", "point_right": "👉", "point_left": "👈",
	"point_up": "☝️", "point_down": "👇", "construction": "🚧", "sos": "🆘", "skull": "💀",
	"boom": "💥", "zap": "⚡", "sparkles": "✨", "star": "⭐", "star2": "🌟", "heart": "❤️",
	"smile": "😄", "slightly_smiling_face": "🙂", "thinking_face": "🤔", "sweat_smile": "😅",
	"grimacing": "😬", "scream": "😱", "sob": "😭", "joy": "😂", "wink": "😉", "sunglasses": "😎",
	"ok_hand": "👌", "pray": "🙏", "clap": "👏", "wave": "👋", "raised_hands": "🙌", "muscle": "💪",
	"100": "💯", "heavy_plus_sign": "➕", "heavy_minus_sign": "➖", "traffic_light": "🚥",
	"vertical_traffic_light": "🚦", "calendar": "📆", "date": "📅", "spiral_calendar_pad": "🗓️",
	"inbox_tray": "📥", "outbox_tray": "📤", "dart": "🎯", "shield": "🛡️", "radio_button": "🔘",
	"twisted_rightwards_arrows": "🔀", "checkered_flag": "🏁", "triangular_flag_on_post": "🚩",
	"beetle": "🐞", "bug": "🐛", "cloud": "☁️", "sunny": "☀️", "thermometer": "🌡️",
	"mega": "📣", "loudspeaker": "📢", "bookmark": "🔖", "page_facing_up": "📄", "scroll": "📜",
	"books": "📚", "computer": "💻", "desktop_computer": "🖥️", "globe_with_meridians": "🌐",
	"satellite": "📡", "electric_plug": "🔌", "battery": "🔋", "broom": "🧹", "test_tube": "🧪",
	"microscope": "🔬", "ok": "🆗", "new": "🆕", "up": "🆙", "cool": "🆒", "free": "🆓",
	"large_red_square": "🟥", "red_square": "🟥", "green_square": "🟩", "large_green_square": "🟩",
	"yellow_square": "🟨", "large_yellow_square": "🟨", "white_large_square": "⬜",
	"black_large_square": "⬛", "small_red_triangle": "🔺", "small_red_triangle_down": "🔻",
	"small_orange_diamond": "🔸", "small_blue_diamond": "🔹", "large_orange_diamond": "🔶",
	"large_blue_diamond": "🔷", "heavy_dollar_sign": "💲", "moneybag": "💰", "crystal_ball": "🔮",
	"mailbox": "📫", "envelope": "✉️", "email": "📧", "telephone_receiver": "📞", "phone": "☎️",
	"pager": "📟", "hourglass_done": "⌛", "clock": "🕐", "clock1": "🕐", "clock3": "🕒", "clock9": "🕘",
	"spiral_note_pad": "🗒️", "label": "🏷️", "shipit": "🐿️", "squirrel": "🐿️", "anchor": "⚓",
	"ship": "🚢", "whale": "🐳", "snake": "🐍", "turtle": "🐢", "snail": "🐌", "ambulance": "🚑",
	"fire_engine": "🚒", "police_car": "🚓", "rotating_light_red": "🚨", "see_no_evil": "🙈",
	"face_with_monocle": "🧐", "partying_face": "🥳", "relieved": "😌", "disappointed": "😞",
	"confused": "😕", "neutral_face": "😐", "raised_hand": "✋", "hand": "✋", "v": "✌️",
	"handshake": "🤝", "trophy": "🏆", "medal": "🏅", "gift": "🎁", "balloon": "🎈",
	"white_flag": "🏳️", "black_flag": "🏴", "hourglass_not_done": "⏳", "arrow_double_down": "⏬",
	"arrow_double_up": "⏫", "arrow_up_small": "🔼", "arrow_down_small": "🔽", "left_right_arrow": "↔️",
	"arrow_upper_right": "↗️", "arrow_lower_right": "↘️", "heavy_division_sign": "➗",
	"infinity": "♾️", "copyright": "©️", "registered": "®️", "tm": "™️", "hash": "#️⃣",
	"one": "1️⃣", "two": "2️⃣", "three": "3️⃣", "four": "4️⃣", "five": "5️⃣", "keycap_ten": "🔟",
}

var emojiRE = regexp.MustCompile(`:([a-z0-9_+\-]+):(?::skin-tone-[2-6]:)?`)

// replaceEmoji turns known :shortcodes: in escaped text into Unicode
// spans, passed through wrap (a placeholder maker) when not nil.
func replaceEmoji(s string, wrap func(string) string) string {
	if !strings.Contains(s, ":") {
		return s
	}
	return emojiRE.ReplaceAllStringFunc(s, func(m string) string {
		name := emojiRE.FindStringSubmatch(m)[1]
		e, ok := emoji[name]
		if !ok {
			return m
		}
		out := `<span class="emoji" title=":` + name + `:">` + e + `</span>`
		if wrap != nil {
			return wrap(out)
		}
		return out
	})
}

// emojiHTML renders a rich_text emoji element (name, optional unicode hex).
func emojiHTML(name, unicode string) string {
	if e, ok := emoji[name]; ok {
		return `<span class="emoji" title=":` + escape(name) + `:">` + e + `</span>`
	}
	if unicode != "" {
		var b strings.Builder
		for _, part := range strings.Split(unicode, "-") {
			if r, err := strconv.ParseInt(part, 16, 32); err == nil {
				b.WriteRune(rune(r))
			}
		}
		if b.Len() > 0 {
			return `<span class="emoji" title=":` + escape(name) + `:">` + b.String() + `</span>`
		}
	}
	return ":" + escape(name) + ":"
}

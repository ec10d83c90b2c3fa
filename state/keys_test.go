package state

import "testing"

func TestKeysShareOneHashTag(t *testing.T) {
	for _, tc := range []struct{ prefix, want string }{
		{"", "{rollbot}:lock:web"},
		{"rollbot", "{rollbot}:lock:web"},
		{"prod-eu", "{prod-eu}:lock:web"},
		{"a{b}c", "{abc}:lock:web"}, // inner braces would make the tag "b" alone
		{"}x", "{x}:lock:web"},      // a leading } would make an empty tag: no tag at all
		{"{}", "{rollbot}:lock:web"},
	} {
		s := New(nil, tc.prefix)
		if got := s.key("lock", "web"); got != tc.want {
			t.Errorf("prefix %q: key = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

package state

import "testing"

// A pipeline names a version its own way; each form finds the mark.
func TestMarkMatches(t *testing.T) {
	m := Mark{Artifact: "reg.example.com:5000/team/app:v1.5.0", Revision: "7", Digest: "sha256:abc123"}
	for _, c := range []struct {
		version string
		want    bool
	}{
		{"reg.example.com:5000/team/app:v1.5.0", true},
		{"v1.5.0", true},
		{"7", true},
		{"sha256:abc123", true},
		{"reg.example.com:5000/team/app@sha256:abc123", true},
		{" v1.5.0 ", true},
		{"v1.5", false},
		{"5000/team/app:v1.5.0", false},
		{"", false},
		{"sha256:abc", false},
	} {
		if got := MarkMatches(m, c.version); got != c.want {
			t.Errorf("MarkMatches(%q) = %v, want %v", c.version, got, c.want)
		}
	}
	if !MarkMatches(Mark{Artifact: "app@sha256:ff"}, "sha256:ff") {
		t.Error("a digest in the marked reference is not matched")
	}
}

func TestImageTag(t *testing.T) {
	for ref, want := range map[string]string{
		"app:v3": "v3", "reg:5000/app:v3": "v3", "reg:5000/app": "", "app": "", "reg/app:v3@sha256:00": "v3", "reg/app@sha256:00": "",
	} {
		if got := ImageTag(ref); got != want {
			t.Errorf("ImageTag(%q) = %q, want %q", ref, got, want)
		}
	}
}

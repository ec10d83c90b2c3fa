package platforms

import "testing"

func TestLastKnownGood(t *testing.T) {
	v := func(id, art string) Revision { return Revision{ID: id, Artifact: art} }
	bad := v("2", "app:v2")
	bad.DoNotDeploy = true
	failed := v("2", "app:v2")
	failed.Unusable = "Helm revision 2 failed"
	tests := []struct {
		name    string
		history []Revision
		current Revision
		marked  map[string]bool
		want    string
		ok      bool
	}{
		{"n-1", []Revision{v("3", "app:v3"), v("2", "app:v2"), v("1", "app:v1")}, v("3", "app:v3"), nil, "2", true},
		{"skips platform mark", []Revision{v("3", "app:v3"), bad, v("1", "app:v1")}, v("3", "app:v3"), nil, "1", true},
		{"skips unusable", []Revision{v("3", "app:v3"), failed, v("1", "app:v1")}, v("3", "app:v3"), nil, "1", true},
		{"skips rollbot mark", []Revision{v("3", "app:v3"), v("2", "app:v2"), v("1", "app:v1")}, v("3", "app:v3"), map[string]bool{"app:v2": true}, "1", true},
		{"skips same artifact", []Revision{v("3", "app:v3"), v("2", "app:v3"), v("1", "app:v1")}, v("3", "app:v3"), nil, "1", true},
		{"nothing older", []Revision{v("1", "app:v1")}, v("1", "app:v1"), nil, "", false},
		{"current not newest", []Revision{v("4", "app:v4"), v("3", "app:v3"), v("1", "app:v1")}, v("3", "app:v3"), nil, "1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := LastKnownGood(tt.history, tt.current, func(r Revision) bool { return tt.marked[r.Artifact] })
			if ok != tt.ok || got.ID != tt.want {
				t.Fatalf("LastKnownGood = %q,%v; want %q,%v", got.ID, ok, tt.want, tt.ok)
			}
		})
	}
}

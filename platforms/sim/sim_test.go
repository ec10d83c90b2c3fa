package sim

import (
	"testing"

	"rollbot/testkit/platformtest"
)

func TestContract(t *testing.T) {
	s, err := New("myapp", Config{Versions: []Version{{Artifact: "app:v1"}, {Artifact: "app:v2", Bad: true}}})
	if err != nil {
		t.Fatal(err)
	}
	platformtest.Contract(t, platformtest.Env{Platform: s, Good: "app:v1", Bad: "app:v2"})
}

package state

import "strings"

// hashTag returns "{prefix}", the Redis Cluster hash tag that starts
// every key. Braces inside the prefix are dropped, so the tag is always
// the whole prefix and never empty: Cluster hashes only what is between
// the first { and the next }, and hashes the whole key when that is
// empty, which would scatter the keys over slots.
func hashTag(prefix string) string {
	tag := strings.NewReplacer("{", "", "}", "").Replace(prefix)
	if tag == "" {
		tag = "rollbot"
	}
	return "{" + tag + "}"
}

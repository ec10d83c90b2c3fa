package state_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/state"
	"rollbot/testkit/redistest"
)

func TestParseRedisURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		mode state.Mode
		desc string // String(): what check and the start message say
	}{
		{"redis://127.0.0.1:6379/0", state.Single, "single server tcp 127.0.0.1:6379, db 0"},
		{"rediss://:s3cret-pw@redis.example:6380/2", state.Single, "single server tcp redis.example:6380, db 2"},
		{"redis://redis", state.Single, "single server tcp redis:6379, db 0"},
		{"redis://redis:6379/0?dial_timeout=3s&pool_size=4", state.Single, "single server tcp redis:6379, db 0"},
		{"unix:///run/redis/redis.sock?db=3", state.Single, "single server unix /run/redis/redis.sock, db 3"},
		{"redis://:s3cret-pw@s1:26379/1?master_name=mymaster&addr=s2:26379&addr=s3:26379&password=s3cret-pw", state.Sentinel,
			"Sentinel master mymaster via s1:26379,s2:26379,s3:26379, db 1"},
		{"rediss://s1:26379?master_name=mymaster", state.Sentinel, "Sentinel master mymaster via s1:26379, db 0"},
		{"redis+cluster://:s3cret-pw@n1:7000?addr=n2:7001&addr=n3:7002", state.Cluster, "Cluster via n1:7000,n2:7001,n3:7002"},
		{"rediss+cluster://n1:7000/0", state.Cluster, "Cluster via n1:7000"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			u, err := state.ParseRedisURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if u.Mode != tc.mode || u.String() != tc.desc {
				t.Fatalf("= %s, %q; want %s, %q", u.Mode, u.String(), tc.mode, tc.desc)
			}
			if strings.Contains(u.String(), "cret") {
				t.Fatalf("String() shows the password: %s", u)
			}
			c, err := state.Connect(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, isCluster := c.(*redis.ClusterClient)
			if isCluster != (tc.mode == state.Cluster) {
				t.Fatalf("Connect made a %T for %s", c, tc.mode)
			}
		})
	}
}

func TestParseRedisURLNamesTheBadPart(t *testing.T) {
	for _, tc := range []struct {
		url, part, says string
	}{
		{"", "URL", "empty"},
		{"   ", "URL", "empty"},
		{"localhost:6379", "scheme", `missing ("localhost" reads as a scheme)`},
		{"ftp://h:6379", "scheme", `"ftp" is not one`},
		{"http://:s3cret-pw@h:6379/0", "scheme", `"http"`},
		{"redis//:s3cret-pw@h:6379", "scheme", "missing"},
		{"redis://:s3cret-pw@h:notaport/0", "host/port", "not host:port"},
		{"redis://:s3cret-pw@h:99999/0", "host/port", `"99999" is not a port`},
		{"redis://:s3cret-pw@:6379/0", "host/port", "no host"},
		{"unix://", "host/port", "socket path"},
		{"redis://:s3cret-pw@h:6379/first", "db number", "not /<db number>"},
		{"redis://:s3cret-pw@h:6379/0/1", "db number", "/<db number>"},
		{"redis://:s3cret-pw@h:6379/-1", "db number", "not /<db number>"},
		{"redis://:s3cret-pw@h:6379?db=one", "db number", "db="},
		{"redis+cluster://:s3cret-pw@n1:7000/1", "db number", "only database 0"},
		{"redis+cluster://n1:7000?db=2", "db number", "only database 0"},
		{"redis://:s3cret-pw@h:26379/0?master_name=", "master name", "not empty"},
		{"redis://h:26379/0?master_name=a&master_name=b", "master name", "once"},
		{"unix:///s.sock?master_name=m", "master name", "not unix://"},
		{"redis+cluster://n1:7000?master_name=m", "master name", "Sentinel"},
		{"redis://:s3cret-pw@h:6379/0?addr=h2:6379", "addr", "master_name= for Sentinel, or use redis+cluster://"},
		{"redis://h:26379?master_name=m&addr=h2", "addr", `"h2": not host:port`},
		{"redis+cluster://n1:7000?addr=n2:0", "addr", "not a port"},
		{"redis://:s3cret-pw@h:6379/0?dial_timeout=soon", "query option", "dial_timeout"},
		{"redis://:s3cret-pw@h:6379/0?bogus=1", "query option", "bogus"},
		{"redis://h:26379?master_name=m&password=s3cret-pw&bogus=1", "query option", "bogus"},
		{"redis+cluster://:s3cret-pw@n1:7000?pool_size=many", "query option", "pool_size"},
		// a password option value that go-redis would quote back
		{"redis://:s3cret-pw@h:6379/0?dial_timeout=s3cret-pw", "query option", "dial_timeout"},
		// unencoded / ? # in a password scramble the URL: named, not quoted
		{"redis://user:s3/cret-pw@h:6379/0", "host/port", "percent-encode"},
		{"redis://user:12/s3cret-pw@h:6379", "db number", "%2F"},
		{"redis://user:s3cret#pw@h:6379", "user:password", "percent-encode"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := state.ParseRedisURL(tc.url)
			var ue *state.URLError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v (%T); want a *state.URLError", err, err)
			}
			if ue.Part != tc.part || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %q (part %q); want part %q saying %q", err, ue.Part, tc.part, tc.says)
			}
			if !strings.HasPrefix(err.Error(), "REDIS_URL "+tc.part+": ") {
				t.Fatalf("err = %q; want it to start with the variable and the part", err)
			}
			if strings.Contains(err.Error(), "cret") {
				t.Fatalf("err = %q shows (part of) the password", err)
			}
			if _, cerr := state.Connect(tc.url); cerr == nil || cerr.Error() != err.Error() {
				t.Fatalf("Connect err = %v; want the same as ParseRedisURL", cerr)
			}
		})
	}
}

func TestRedisURLSecrets(t *testing.T) {
	got := state.RedisURLSecrets("redis://u:p%40ss@s1:26379?master_name=m&password=master-pw")
	for _, want := range []string{"p@ss", "master-pw"} {
		if !slices.Contains(got, want) {
			t.Errorf("RedisURLSecrets = %q; lacks %q", got, want)
		}
	}
	if got := state.RedisURLSecrets("redis://h:6379/0"); len(got) != 0 {
		t.Errorf("no password, secrets = %q", got)
	}
}

// TestConnectReachesEachDeployment connects by each kind of URL to a
// real deployment and writes through it.
func TestConnectReachesEachDeployment(t *testing.T) {
	for name, url := range map[string]string{
		"single":   redistest.URL(t),
		"sentinel": redistest.Sentinel(t).URL,
		"cluster":  redistest.Cluster(t).URL,
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := state.Connect(url)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			k := "{connect-test}:" + name
			if err := c.Set(ctx, k, name, 0).Err(); err != nil {
				t.Fatal(err)
			}
			if v, err := c.Get(ctx, k).Result(); err != nil || v != name {
				t.Fatalf("Get = %q, %v", v, err)
			}
		})
	}
}

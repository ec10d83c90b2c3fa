package state

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Mode is the kind of Redis deployment a REDIS_URL names.
type Mode string

const (
	Single   Mode = "single server"
	Sentinel Mode = "Sentinel"
	Cluster  Mode = "Cluster"
)

// RedisURL is a parsed REDIS_URL: which deployment it names and the
// go-redis options to reach it. Exactly one of the option fields is set.
type RedisURL struct {
	Mode     Mode
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// URLError says which part of a REDIS_URL is wrong. It never holds the
// URL itself, so it never holds a password.
type URLError struct {
	Part string // "scheme", "user:password", "host/port", "db number", "master name", "addr", "query option", "URL"
	Msg  string
}

func (e *URLError) Error() string { return "REDIS_URL " + e.Part + ": " + e.Msg }

func urlErr(part, format string, args ...any) error {
	return &URLError{Part: part, Msg: fmt.Sprintf(format, args...)}
}

const schemes = "redis://, rediss://, unix:// (one server), redis:// or rediss:// with ?master_name= (Sentinel), redis+cluster:// or rediss+cluster:// (Cluster)"

// ParseRedisURL reads a REDIS_URL without contacting Redis. The forms
// are those of go-redis's ParseURL, ParseFailoverURL and ParseClusterURL:
//
//	redis://[user:pass@]host[:port][/db]                one server (rediss:// for TLS)
//	unix://[user:pass@]/path/to/redis.sock[?db=N]       one server on a Unix socket
//	redis://[user:pass@]host:port[/db]?master_name=NAME&addr=host2:port&addr=host3:port
//	                                                    Sentinel: host:port and each addr= are
//	                                                    sentinels; user:pass authenticates to the
//	                                                    sentinels, password= (and username=) to
//	                                                    the master and replicas
//	redis+cluster://[user:pass@]host:port?addr=host2:port&addr=host3:port
//	                                                    Cluster: the seed nodes (rediss+cluster:// for TLS)
//
// go-redis's other query options (dial_timeout=3s, pool_size=…) apply to
// every form. An error is a *URLError that names the wrong part and
// never repeats the password.
func ParseRedisURL(raw string) (_ *RedisURL, err error) {
	if strings.TrimSpace(raw) == "" {
		return nil, urlErr("URL", "empty; use %s", schemes)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error quotes the URL (and so the password): say
		// which part instead.
		return nil, parseFailure(raw)
	}
	secrets := urlSecrets(u)
	defer func() {
		// Messages quote only parts that are not the password, unless a
		// password with unencoded / ? # scrambled the URL: scrub anyway.
		var ue *URLError
		if errors.As(err, &ue) {
			for _, s := range secrets {
				ue.Msg = strings.ReplaceAll(ue.Msg, s, "xxxxx")
			}
		}
	}()
	q := u.Query()
	master, sentinel := q["master_name"]
	cluster := false
	scheme := u.Scheme
	switch scheme {
	case "redis", "rediss", "unix":
	case "redis+cluster", "rediss+cluster":
		cluster = true
		scheme = strings.TrimSuffix(scheme, "+cluster")
	case "":
		return nil, urlErr("scheme", "missing; use %s", schemes)
	default:
		if u.Opaque != "" {
			// "redis:6379" or "localhost:6379": a host:port without scheme
			return nil, urlErr("scheme", "missing (%q reads as a scheme); write redis://host:port, or use %s", u.Scheme, schemes)
		}
		return nil, urlErr("scheme", "%q is not one rollbot knows; use %s", u.Scheme, schemes)
	}
	if sentinel {
		switch {
		case cluster:
			return nil, urlErr("master name", "master_name= is for Sentinel; a redis+cluster:// URL takes none")
		case scheme == "unix":
			return nil, urlErr("master name", "master_name= is for Sentinel, which is reached over TCP (redis:// or rediss://), not unix://")
		case len(master) != 1 || strings.TrimSpace(master[0]) == "":
			return nil, urlErr("master name", "master_name= must be given once, not empty (the name in the sentinels' `sentinel monitor` line)")
		}
	}
	if _, ok := q["addr"]; ok && !sentinel && !cluster {
		return nil, urlErr("addr", "addr= lists more sentinels or cluster nodes: add master_name= for Sentinel, or use redis+cluster:// for Cluster")
	}
	for _, a := range q["addr"] {
		if err := checkHostPort(a); err != nil {
			return nil, urlErr("addr", "%q: %v (want host:port)", a, err)
		}
	}

	if scheme == "unix" {
		if strings.TrimSpace(u.Path) == "" {
			return nil, urlErr("host/port", "unix:// needs the socket path, e.g. unix:///run/redis/redis.sock")
		}
	} else {
		if u.Hostname() == "" {
			return nil, urlErr("host/port", "no host (e.g. redis://redis:6379/0)")
		}
		if p := u.Port(); p != "" {
			if err := checkPort(p); err != nil {
				return nil, urlErr("host/port", "port %v", err)
			}
		}
		if err := checkDB(u.Path, cluster); err != nil {
			return nil, err
		}
	}
	if v, ok := q["db"]; ok {
		if cluster {
			return nil, urlErr("db number", "Redis Cluster has only database 0; remove db=")
		}
		if n, err := strconv.Atoi(v[len(v)-1]); err != nil || n < 0 {
			return nil, urlErr("db number", "db= is not a database number (0, 1, …)")
		}
	}

	out := &RedisURL{}
	switch {
	case cluster:
		c := *u
		c.Scheme = scheme
		c.Path = "" // "/" or "/0", checked above; ParseClusterURL ignores it anyway
		out.Mode = Cluster
		out.cluster, err = redis.ParseClusterURL(c.String())
	case sentinel:
		out.Mode = Sentinel
		out.failover, err = redis.ParseFailoverURL(raw)
	default:
		out.Mode = Single
		out.single, err = redis.ParseURL(raw)
	}
	if err != nil {
		// What is left for go-redis to reject is the query options
		// (unknown name, bad number or duration); its message names the
		// option.
		return nil, urlErr("query option", "%s", strings.TrimPrefix(err.Error(), "redis: "))
	}
	return out, nil
}

// Client returns a go-redis client for the URL; it does not contact
// Redis until the first command.
func (r *RedisURL) Client() redis.UniversalClient {
	switch r.Mode {
	case Sentinel:
		return redis.NewFailoverClient(r.failover)
	case Cluster:
		return redis.NewClusterClient(r.cluster)
	}
	return redis.NewClient(r.single)
}

// String describes the deployment without credentials, for messages:
// "Sentinel master mymaster via 127.0.0.1:26379,127.0.0.1:26380".
func (r *RedisURL) String() string {
	switch r.Mode {
	case Sentinel:
		return fmt.Sprintf("Sentinel master %s via %s, db %d", r.failover.MasterName, strings.Join(r.failover.SentinelAddrs, ","), r.failover.DB)
	case Cluster:
		return "Cluster via " + strings.Join(r.cluster.Addrs, ",")
	}
	return fmt.Sprintf("single server %s %s, db %d", r.single.Network, r.single.Addr, r.single.DB)
}

// Connect parses a REDIS_URL (see ParseRedisURL) and returns one client
// for whichever deployment it names. It does not contact Redis: the
// caller pings, so an unreachable Redis is reported as such.
func Connect(raw string) (redis.UniversalClient, error) {
	r, err := ParseRedisURL(raw)
	if err != nil {
		return nil, err
	}
	return r.Client(), nil
}

// RedisURLSecrets returns the passwords in a REDIS_URL (the userinfo
// one and, for Sentinel, password= and sentinel_password=), for log
// redaction. A URL that does not parse yields nothing.
func RedisURLSecrets(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	return urlSecrets(u)
}

func urlSecrets(u *url.URL) []string {
	var out []string
	if u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			out = append(out, p, url.QueryEscape(p), url.PathEscape(p))
		}
	}
	for _, k := range []string{"password", "sentinel_password"} {
		for _, v := range u.Query()[k] {
			if v != "" {
				out = append(out, v, url.QueryEscape(v))
			}
		}
	}
	return out
}

// parseFailure names the part of a URL that net/url refused, without
// quoting it.
func parseFailure(raw string) error {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return urlErr("scheme", "missing \"scheme://\"; use %s", schemes)
	}
	for _, r := range scheme {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.') {
			return urlErr("scheme", "not a URL scheme; use %s", schemes)
		}
	}
	authority, _, _ := strings.Cut(rest, "/")
	authority, _, _ = strings.Cut(authority, "?")
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		if _, err := url.Parse(scheme + "://x@" + authority[i+1:]); err != nil {
			return urlErr("host/port", "not host:port (e.g. redis:6379)")
		}
		return urlErr("user:password", "does not parse; percent-encode characters such as / ? # @ : %% in the password")
	}
	return urlErr("host/port", "not host:port (e.g. redis:6379); if the URL has a password, percent-encode characters such as / ? # @ in it")
}

func checkHostPort(a string) error {
	h, p, err := net.SplitHostPort(a)
	if err != nil || h == "" {
		return fmt.Errorf("not host:port")
	}
	return checkPort(p)
}

func checkPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q is not a port number (1–65535)", p)
	}
	return nil
}

func checkDB(path string, cluster bool) error {
	f := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
	switch {
	case len(f) == 0:
		return nil
	case len(f) > 1:
		return urlErr("db number", "the path must be /<db number>, e.g. /0 (percent-encode a / in the password as %%2F)")
	}
	// The value is not quoted: with an unencoded / in the password, the
	// path holds the rest of the password.
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 0 {
		return urlErr("db number", "the path is not /<db number> such as /0 (percent-encode a / in the password as %%2F)")
	}
	if cluster && n != 0 {
		return urlErr("db number", "Redis Cluster has only database 0")
	}
	return nil
}

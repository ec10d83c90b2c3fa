package state_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/state"
	"rollbot/testkit/redistest"
)

// storeTests are the Store's tests (store_test.go) that run again on
// Sentinel and on Cluster.
var storeTests = []struct {
	name string
	fn   func(*testing.T)
}{
	{"IncidentRoundTripAndIndexes", TestIncidentRoundTripAndIndexes},
	{"TransitionActsOnce", TestTransitionActsOnce},
	{"Timeline", TestTimeline},
	{"Lock", TestLock},
	{"OnceAndApprovals", TestOnceAndApprovals},
	{"DeployedRecord", TestDeployedRecord},
	{"SchemaRecords", TestSchemaRecords},
	{"ScrapeHistory", TestScrapeHistory},
}

// The REDIS_URL each backend test started, read by backendClient in
// its subtests.
var (
	backendMu   sync.Mutex
	backendURLs = map[string]string{}
)

// TestStoreOnSentinel runs the Store's tests through Sentinel (one
// master, one replica, three sentinels), connected by its REDIS_URL.
func TestStoreOnSentinel(t *testing.T) {
	runOn(t, redistest.Sentinel(t).URL)
}

// TestStoreOnCluster runs the Store's tests on a three-master Cluster:
// the multi-key transactions and scripts work only because every key
// shares the {prefix} hash tag.
func TestStoreOnCluster(t *testing.T) {
	runOn(t, redistest.Cluster(t).URL)
}

func runOn(t *testing.T, url string) {
	backendMu.Lock()
	backendURLs[t.Name()] = url
	backendMu.Unlock()
	for _, st := range storeTests {
		t.Run(st.name, st.fn)
	}
}

// backendClient returns a client and a fresh key prefix: of the backend
// a TestStoreOn… parent started, or else of the one test server.
func backendClient(t *testing.T) (redis.UniversalClient, string) {
	t.Helper()
	parent, _, sub := strings.Cut(t.Name(), "/")
	backendMu.Lock()
	url, ok := backendURLs[parent]
	backendMu.Unlock()
	if !sub || !ok {
		return redistest.Client(t)
	}
	rdb, err := state.Connect(url)
	if err != nil {
		t.Fatalf("connect %s: %v", parent, err)
	}
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping %s: %v", parent, err)
	}
	return rdb, fmt.Sprintf("t%d-%s", time.Now().UnixNano(), filepath.Base(t.Name()))
}

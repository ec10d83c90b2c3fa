// Command ackload measures how fast rollbot acknowledges a burst of slash
// commands, beside a Socket Mode client that does nothing but acknowledge,
// on the same local Slack-compatible server in the same run.
//
//	go run ./bench/ackload [-n 200] [-runs 3]
//
// It starts a redis-server (Debian's redis-server must be installed), the
// local Slack server (testkit/slackemu), builds rollbot, and for each run:
//  1. starts `rollbot serve` on the simulated platform, waits until it is
//     connected and has released its start-up pages (bot/pages_linux.go),
//     reads its RSS after -idlefor (2 s), sends n `/rollback checkout` at
//     once and times each acknowledgement; then checks the outcome: one
//     rollback proceeds, n-1 are told who holds the service;
//  2. does the same with the ack-only client (this program re-executed
//     with -ackonly), which is the floor for the machine and the server.
//
// It prints one table: min / median / max over the runs of ack p50 and p99,
// of the idle RSS and of the page faults from the first command to the
// last acknowledgement, for both. -idlefor sets how long rollbot idles
// before the burst; past a minute a host that reclaims cold page cache
// (DAMON, proactive reclaim) may have dropped the executable pages rollbot
// unmapped, and the major faults column shows the disk reads that cost.
//
//	go run ./bench/ackload -idle deploy/rollbot.example.yaml [-runs 3]
//
// measures only the memory of `rollbot serve` with that config, at
// start-up and idle (the
// example config has every platform; the files and variables it names
// must exist, and the databases it names must answer): resident,
// anonymous (the heap and stacks) and file-backed (pages of the
// executable), from /proc.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"rollbot/testkit/logtest"
	"rollbot/testkit/nettest"
	"rollbot/testkit/rollbotbin"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

func main() {
	n := flag.Int("n", 200, "concurrent slash commands per run")
	runs := flag.Int("runs", 3, "runs")
	ackOnly := flag.Bool("ackonly", false, "internal: run as the ack-only Socket Mode client")
	idle := flag.String("idle", "", "only measure the idle memory of `rollbot serve` with this config file")
	prebuilt := flag.String("bin", "", "measure this rollbot executable instead of building one")
	flag.DurationVar(&idleFor, "idlefor", 2*time.Second, "how long rollbot idles after releasing its start-up pages before its memory is read")
	flag.StringVar(&keepLogs, "keeplogs", "", "write each measured process's output (with GODEBUG=gctrace=1 in the environment, its collections) to a file in this `directory`")
	flag.Parse()
	if *ackOnly {
		runAckOnly()
		return
	}
	if *idle != "" {
		*n = 0
	}
	if err := drive(*n, *runs, *idle, *prebuilt); err != nil {
		log.Fatal(err)
	}
}

// runAckOnly acknowledges every envelope and does nothing else.
func runAckOnly() {
	api := slack.New(os.Getenv("SLACK_BOT_TOKEN"), slack.OptionAppLevelToken(os.Getenv("SLACK_APP_TOKEN")),
		slack.OptionAPIURL(os.Getenv("SLACK_API_URL")))
	sm := socketmode.New(api)
	go func() {
		for evt := range sm.Events {
			if evt.Request != nil {
				sm.Ack(*evt.Request)
			}
		}
	}()
	log.Fatal(sm.Run()) // Run returns only with an error
}

type result struct {
	p50, p99 time.Duration
	// faults: page faults (minor, major) of the measured process from
	// the first command to the last acknowledgement.
	minflt, majflt int
	// mem is idle: for rollbot, after it released its start-up pages;
	// startup is rollbot's before that (2 s after it connected).
	mem, startup memory
}

func drive(n, runs int, idleConfig, prebuilt string) error {
	dir, err := os.MkdirTemp("", "ackload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	redisURL, stopRedis, err := startRedis(dir)
	if err != nil {
		return err
	}
	defer stopRedis()

	bin := prebuilt
	if bin == "" {
		bin = filepath.Join(dir, "rollbot")
		if err := rollbotbin.Build(bin); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	if idleConfig != "" {
		return idleOnly(bin, idleConfig, runs, redisURL)
	}
	var bot, floor []result
	for run := range runs {
		prefix := "ackload" + strconv.Itoa(run) + strconv.FormatInt(time.Now().UnixNano(), 36)
		cfg := filepath.Join(dir, prefix+".yaml")
		if err := os.WriteFile(cfg, []byte(config(prefix, filepath.Join(dir, prefix+".sim.json"))), 0o600); err != nil {
			return err
		}
		r, err := measure(n, bin, []string{"serve", "--config", cfg}, redisURL, true)
		if err != nil {
			return fmt.Errorf("run %d, rollbot: %w", run+1, err)
		}
		bot = append(bot, r)
		f, err := measure(n, self, []string{"-ackonly"}, redisURL, false)
		if err != nil {
			return fmt.Errorf("run %d, ack-only client: %w", run+1, err)
		}
		floor = append(floor, f)
		fmt.Fprintf(os.Stderr, "run %d: rollbot p50 %s p99 %s rss %d KB faults %d/%d; ack-only p50 %s p99 %s rss %d KB faults %d/%d\n",
			run+1, r.p50, r.p99, r.mem.rss, r.minflt, r.majflt, f.p50, f.p99, f.mem.rss, f.minflt, f.majflt)
	}
	fmt.Printf("%d concurrent /rollback commands over one Socket Mode connection, %d runs (min / median / max)\n\n", n, runs)
	fmt.Println("| | ack p50 | ack p99 | idle RSS | minor page faults during the burst | major (a disk read) |")
	fmt.Println("|---|---|---|---|---|---|")
	row := func(name string, rs []result) {
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", name,
			spread(rs, func(r result) float64 { return ms(r.p50) }, "%.1f ms"),
			spread(rs, func(r result) float64 { return ms(r.p99) }, "%.1f ms"),
			spread(rs, func(r result) float64 { return float64(r.mem.rss) / 1024 }, "%.1f MB"),
			spread(rs, func(r result) float64 { return float64(r.minflt) }, "%.0f"),
			spread(rs, func(r result) float64 { return float64(r.majflt) }, "%.0f"))
	}
	row("rollbot serve (simulated platform, real redis-server)", bot)
	row("ack-only slack-go client", floor)
	var ratios []result
	for i := range bot {
		ratios = append(ratios, result{p99: time.Duration(float64(bot[i].p99) / float64(floor[i].p99) * float64(time.Millisecond))})
	}
	fmt.Printf("\nack p99 ratio rollbot / ack-only, per run: %s\n", spread(ratios, func(r result) float64 { return ms(r.p99) }, "%.2f×"))
	return nil
}

// idleOnly starts `rollbot serve --config cfg` runs times and prints its
// idle memory. Variables the config names (the Alertmanager token, …) are
// passed through from this program's environment.
func idleOnly(bin, cfg string, runs int, redisURL string) error {
	var rs []result
	for run := range runs {
		r, err := measure(0, bin, []string{"serve", "--config", cfg}, redisURL, true)
		if err != nil {
			return fmt.Errorf("run %d: %w", run+1, err)
		}
		fmt.Fprintf(os.Stderr, "run %d: rss %d KB (anonymous %d KB, file-backed %d KB); at start-up %d KB\n",
			run+1, r.mem.rss, r.mem.anon, r.mem.file, r.startup.rss)
		rs = append(rs, r)
	}
	mb := func(f func(memory) int) func(result) float64 {
		return func(r result) float64 { return float64(f(r.mem)) / 1024 }
	}
	fmt.Printf("rollbot serve --config %s, connected, idle %s after releasing its start-up pages, %d runs (min / median / max)\n\n", cfg, idleFor, runs)
	fmt.Println("| resident at start-up | resident | anonymous | file-backed |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| %s | %s | %s | %s |\n",
		spread(rs, func(r result) float64 { return float64(r.startup.rss) / 1024 }, "%.1f MB"),
		spread(rs, mb(func(m memory) int { return m.rss }), "%.1f MB"),
		spread(rs, mb(func(m memory) int { return m.anon }), "%.1f MB"),
		spread(rs, mb(func(m memory) int { return m.file }), "%.1f MB"))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func spread(rs []result, f func(result) float64, format string) string {
	var v []float64
	for _, r := range rs {
		v = append(v, f(r))
	}
	slices.Sort(v)
	return fmt.Sprintf(format+" / "+format+" / "+format, v[0], v[len(v)/2], v[len(v)-1])
}

func config(prefix, stateFile string) string {
	return fmt.Sprintf(`incident_channels: [%s]
redis_prefix: %s
verify_timeout: 20s
services:
  checkout:
    platform: simulated
    simulated:
      versions: [{artifact: "checkout:v1"}, {artifact: "checkout:v2"}, {artifact: "checkout:v3", bad: true}]
      replicas: 3
      state_file: %s
    metrics: {simulated: true}
    approvers: {groups: [%s]}
`, slackemu.ChannelIncident, prefix, stateFile, slackemu.GroupOnCall)
}

// measure starts the program as the Slack app of a fresh local Slack
// server, waits until it is connected and idle, then sends n commands at
// once and times their acknowledgements.
func measure(n int, bin string, args []string, redisURL string, isBot bool) (result, error) {
	emu, err := slackemu.New(slackemu.Options{})
	if err != nil {
		return result{}, err
	}
	defer emu.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(),
		"SLACK_BOT_TOKEN=" + slackemu.BotToken, "SLACK_APP_TOKEN=" + slackemu.AppToken,
		"SLACK_API_URL=" + emu.APIURL(), "REDIS_URL=" + redisURL, "ROLLBOT_OPS_ADDR=off"}
	if v := os.Getenv("GODEBUG"); v != "" {
		// gctrace=1 and the like: the measured process's runtime
		// reports go to its output, which -keeplogs keeps.
		cmd.Env = append(cmd.Env, "GODEBUG="+v)
	}
	if n == 0 {
		// -idle: the variables its config names come from this
		// environment, and the ops listener is on (an Alertmanager
		// receiver needs it).
		cmd.Env = append(append(os.Environ(), cmd.Env...), "ROLLBOT_OPS_ADDR=127.0.0.1:0")
	}
	var out logtest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if keepLogs != "" {
			f, err := os.CreateTemp(keepLogs, filepath.Base(bin)+"-*.log")
			if err == nil {
				f.WriteString(out.String())
				f.Close()
			}
		}
	}()
	if err := wait.Until(context.Background(), 30*time.Second, "a Socket Mode connection", func() (bool, error) {
		return len(emu.ConnectionIDs()) > 0, nil
	}); err != nil {
		return result{}, fmt.Errorf("%w; its output:\n%s", err, out.String())
	}
	time.Sleep(2 * time.Second) // start-up work done
	mem, err := memoryOf(cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	startup := mem
	if isBot {
		// rollbot releases the pages start-up touched a few seconds
		// after connecting (bot/pages_linux.go); idle is after that.
		if err := wait.Until(context.Background(), 30*time.Second, "rollbot to release its start-up pages", func() (bool, error) {
			return strings.Contains(out.String(), releasedPages), nil
		}); err != nil {
			return result{}, fmt.Errorf("%w; its output:\n%s", err, out.String())
		}
		time.Sleep(idleFor)
		if mem, err = memoryOf(cmd.Process.Pid); err != nil {
			return result{}, err
		}
	}
	if n == 0 {
		return result{mem: mem, startup: startup}, nil
	}

	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			t0 := time.Now()
			errs[i] = emu.SlashCommand(ctx, slackemu.UserAlice, slackemu.ChannelIncident, "/rollback", "checkout")
			lat[i] = time.Since(t0)
		})
	}
	min0, maj0, err := faultsOf(cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	close(start)
	wg.Wait()
	min1, maj1, err := faultsOf(cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	if err := errors.Join(errs...); err != nil {
		return result{}, fmt.Errorf("commands not acknowledged: %w", err)
	}
	slices.Sort(lat)
	r := result{p50: lat[n/2], p99: lat[(n*99+99)/100-1], mem: mem, startup: startup, minflt: min1 - min0, majflt: maj1 - maj0}
	if isBot {
		if err := outcome(emu, n); err != nil {
			return result{}, err
		}
	}
	return r, nil
}

// outcome checks that exactly one rollback went ahead and every other
// command was told who holds the service.
func outcome(emu *slackemu.Server, n int) error {
	return wait.Until(context.Background(), time.Minute, fmt.Sprintf("one incident and %d refusals", n-1), func() (bool, error) {
		var assessed, refused int
		for _, m := range emu.Messages(slackemu.ChannelIncident) {
			switch {
			case m.Ephemeral && strings.Contains(m.PlainText(), "is already running"):
				refused++
			case !m.Ephemeral && m.ThreadTS == "" && strings.Contains(m.PlainText(), "RB-"):
				assessed++
			}
		}
		return refused == n-1 && assessed == 1, fmt.Errorf("%d incidents started and %d refused", assessed, refused)
	})
}

// idleFor is -idlefor; keepLogs is -keeplogs.
var (
	idleFor  time.Duration
	keepLogs string
)

// releasedPages is what rollbot logs once it has released its start-up
// pages.
const releasedPages = "released the executable's start-up pages"

// memory is a process's resident memory in KB, from /proc/<pid>/status:
// all of it, the anonymous part (heap, stacks) and the file-backed part
// (pages of the executable and libraries).
type memory struct{ rss, anon, file int }

func memoryOf(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	fields := map[string]*int{"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file}
	for l := range strings.SplitSeq(string(b), "\n") {
		for name, p := range fields {
			if v, ok := strings.CutPrefix(l, name); ok {
				if *p, err = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB")); err != nil {
					return memory{}, fmt.Errorf("%s %q: %w", name, v, err)
				}
			}
		}
	}
	if m.rss == 0 {
		return memory{}, errors.New("no VmRSS")
	}
	return m, nil
}

// faultsOf reads a process's minor and major page fault counts from
// /proc/<pid>/stat (fields 10 and 12).
func faultsOf(pid int) (minflt, majflt int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after it (the state is field 3).
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 10 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	if minflt, err = strconv.Atoi(f[7]); err != nil {
		return 0, 0, err
	}
	majflt, err = strconv.Atoi(f[9])
	return minflt, majflt, err
}

// startRedis starts a throwaway redis-server on a free loopback port.
func startRedis(dir string) (string, func(), error) {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u, func() {}, nil
	}
	ports, err := nettest.FreePorts(1)
	if err != nil {
		return "", nil, err
	}
	port := ports[0]
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir, "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start redis-server (install Debian's redis-server): %w", err)
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	if err := wait.Until(context.Background(), 5*time.Second, "redis-server to answer", func() (bool, error) {
		out, err := exec.Command("redis-cli", "-p", strconv.Itoa(port), "ping").Output()
		return err == nil && strings.TrimSpace(string(out)) == "PONG", err
	}); err != nil {
		stop()
		return "", nil, err
	}
	return fmt.Sprintf("redis://127.0.0.1:%d/0", port), stop, nil
}

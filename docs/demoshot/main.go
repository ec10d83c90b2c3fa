// Command demoshot takes the README's screenshot of the demo: it runs
// `rollbot demo` (the local Slack server, rollbot and the simulated
// services) in this process, types `/rollback myapp` on the page in
// headless Chromium as alice, waits for the assessment and saves the page
// as a PNG. It is a tool for the docs, not part of the rollbot binary.
//
//	go run ./docs/demoshot                       # writes docs/demo.png at 1800px
//	go run ./docs/demoshot -width 1400 -out /tmp/demo-1400.png
//
// It fails when the assessment table is wider than the page (a cell that
// does not wrap) or when the "Deployment-related?" row does not say
// "likely this deploy", so a screenshot that reads badly is not written.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/chromedp/chromedp"

	"rollbot/bot"
	"rollbot/handlers"
	"rollbot/testkit/slackemu"
)

func main() {
	out := flag.String("out", "docs/demo.png", "where to write the PNG")
	width := flag.Int("width", 1800, "page width in CSS pixels")
	chromium := flag.String("chromium", "", "the Chromium binary (default: chromium on PATH)")
	flag.Parse()
	if err := run(*out, *width, *chromium); err != nil {
		fmt.Fprintln(os.Stderr, "demoshot:", err)
		os.Exit(1)
	}
}

func run(out string, width int, chromium string) error {
	if chromium == "" {
		p, err := exec.LookPath("chromium")
		if err != nil {
			return fmt.Errorf("chromium not found (Debian package chromium); or pass -chromium")
		}
		chromium = p
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	demoCtx, stopDemo := context.WithCancel(ctx)
	d := &demo{stopped: make(chan struct{})}
	go func() {
		d.err = bot.Demo(demoCtx, bot.DemoOptions{Addr: addr, Out: io.Discard,
			Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		close(d.stopped)
	}()
	defer func() {
		stopDemo()
		<-d.stopped
	}()

	dir, err := os.MkdirTemp("", "demoshot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(dir),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
	)...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(actx)
	defer cancelTab()

	// The browser lives as long as the context of its first action: tab,
	// not one of step's bounded ones.
	if err := chromedp.Do(tab, chromedp.EmulateViewport(int64(width), 1000)); err != nil {
		return fmt.Errorf("start chromium: %w", err)
	}
	page := "http://" + addr + "/?as=" + slackemu.UserAlice
	if err := step(tab, "open the page", d,
		chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.CSS("#composer-input")),
		chromedp.Poll[chromedp.Void](`document.querySelector("#bot-status").textContent.includes("rollbot connected")`),
	); err != nil {
		return err
	}
	if err := step(tab, "type /rollback myapp", d,
		chromedp.SendKeys(chromedp.CSS("#composer-input"), "/rollback myapp\n"),
		chromedp.WaitVisible(chromedp.CSS(`button[data-action="`+handlers.ActConfirm+`"]`)),
	); err != nil {
		return err
	}

	// The page grows to show every message without scrolling.
	height, err := chromedp.Run(tab, chromedp.Evaluate[int64](`(() => {
		const m = document.querySelector("#messages");
		return document.documentElement.clientHeight + Math.max(0, m.scrollHeight - m.clientHeight);
	})()`))
	if err != nil {
		return fmt.Errorf("measure the page: %w", err)
	}
	if err := step(tab, "fit the page", d,
		chromedp.EmulateViewport(int64(width), max(height, 900)),
		chromedp.Poll[chromedp.Void](`(() => { const m = document.querySelector("#messages"); return m.scrollHeight <= m.clientHeight + 1; })()`),
	); err != nil {
		return err
	}

	if err := checkTable(tab, width); err != nil {
		return err
	}
	png, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
	if err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%d×%d CSS px, %d bytes)\n", out, width, max(height, 900), len(png))
	return nil
}

// checkTable refuses a screenshot whose assessment table is wider than
// the page or whose verdict row does not say the failure is the deploy's.
func checkTable(tab context.Context, width int) error {
	over, err := chromedp.Run(tab, chromedp.Evaluate[int64](`(() => {
		const w = document.querySelector('.sk-table-wrap[data-block="checks"]');
		return w ? w.scrollWidth - w.clientWidth : -1;
	})()`))
	switch {
	case err != nil:
		return fmt.Errorf("measure the assessment table: %w", err)
	case over < 0:
		return errors.New("the assessment table is not on the page")
	case over > 0:
		return fmt.Errorf("the assessment table is %dpx wider than the page at %dpx: a cell does not wrap", over, width)
	}
	row, err := chromedp.Run(tab, chromedp.Evaluate[string](`(() => {
		for (const tr of document.querySelectorAll('.sk-table-wrap[data-block="checks"] tr')) {
			if (tr.cells[0] && tr.cells[0].innerText.trim() === "Deployment-related?") return tr.innerText;
		}
		return "";
	})()`))
	switch {
	case err != nil:
		return fmt.Errorf("read the verdict row: %w", err)
	case !strings.Contains(row, "likely this deploy"):
		return fmt.Errorf("the Deployment-related? row does not say likely this deploy: %q", row)
	}
	return nil
}

// demo is the running demo; err is set once stopped is closed.
type demo struct {
	stopped chan struct{}
	err     error
}

// step runs browser actions within a bound, and stops early when the demo
// itself has stopped.
func step(tab context.Context, what string, d *demo, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(ctx, actions...) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case <-d.stopped:
		return fmt.Errorf("%s: the demo stopped: %v", what, d.err)
	}
}

// freeAddr is a local address nothing listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

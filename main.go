// Command rollbot is a Slack bot that takes an on-call team through a
// deployment rollback from the incident channel.
//
//	rollbot serve --config rollbot.yaml   run the bot (Socket Mode)
//	rollbot check --config rollbot.yaml   validate a config (and reach REDIS_URL if set)
//	rollbot rbac --config rollbot.yaml    print the least Kubernetes RBAC for it
//	rollbot deployable --service S --version V   the deploy gate (exit 0, or 3)
//	rollbot demo [--addr 127.0.0.1:8080]  local Slack server + simulated services
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"rollbot/bot"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, bot.ErrNotDeployable) {
			os.Exit(bot.ExitNotDeployable) // the reasons are printed
		}
		fmt.Fprintln(os.Stderr, "rollbot:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  rollbot serve --config rollbot.yaml   run the bot (env: SLACK_BOT_TOKEN, SLACK_APP_TOKEN, REDIS_URL, SLACK_API_URL)
  rollbot check --config rollbot.yaml   validate a config (and parse and reach REDIS_URL if set) and say what is wrong
  rollbot rbac --config rollbot.yaml [--service-account rollbot/rollbot] [--helm]
                                        print the least Roles/RoleBindings for its kubernetes services
  rollbot deployable --config rollbot.yaml --service S --version V [--json]
                                        the deploy gate (env: REDIS_URL): exit 0 when V may be deployed,
                                        3 when it is marked DO_NOT_DEPLOY or the service is locked (and why)
  rollbot demo [--addr 127.0.0.1:8080]  local Slack-compatible server, the bot and simulated services`

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	config := fs.String("config", "rollbot.yaml", "config file")
	addr := fs.String("addr", "127.0.0.1:8080", "demo: address of the local Slack server and its page")
	verbose := fs.Bool("v", false, "debug logging")
	serviceAccount := fs.String("service-account", "rollbot/rollbot", "rbac: the ServiceAccount (namespace/name) to bind")
	helmRBAC := fs.Bool("helm", false, "rbac: the Deployments are Helm releases': also print the Role for their releases' Secrets")
	service := fs.String("service", "", "deployable: the service")
	version := fs.String("version", "", "deployable: the version (tag, revision, image reference or digest)")
	asJSON := fs.Bool("json", false, "deployable: print the verdict as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	switch args[0] {
	case "serve":
		cfg, err := bot.LoadConfig(*config)
		if err != nil {
			return err
		}
		return bot.Serve(ctx, cfg, bot.EnvFromOS(), log)
	case "check":
		cfg, err := bot.LoadConfig(*config)
		if err != nil {
			return err
		}
		return bot.Check(ctx, cfg, *config, os.Getenv("REDIS_URL"), os.Stdout)
	case "rbac":
		cfg, err := bot.LoadConfig(*config)
		if err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("%s is not valid:\n%w", *config, err)
		}
		return bot.WriteRBAC(os.Stdout, cfg, *serviceAccount, *helmRBAC)
	case "deployable":
		cfg, err := bot.LoadConfig(*config)
		if err != nil {
			return err
		}
		return bot.Deployable(ctx, cfg, os.Getenv("REDIS_URL"), *service, *version, *asJSON, os.Stdout)
	case "demo":
		return bot.Demo(ctx, bot.DemoOptions{Addr: *addr, RedisURL: os.Getenv("REDIS_URL"), Out: os.Stdout,
			Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

package bot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"

	"rollbot/state"
)

// redisReachTimeout bounds the PING that tells whether REDIS_URL answers.
const redisReachTimeout = 5 * time.Second

// connectRedis returns a client for a parsed REDIS_URL once Redis answers
// a PING; otherwise an error naming the deployment (never the password).
func connectRedis(ctx context.Context, ru *state.RedisURL) (redis.UniversalClient, error) {
	rdb := ru.Client()
	pctx, cancel := context.WithTimeout(ctx, redisReachTimeout)
	err := rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("REDIS_URL: cannot reach Redis (%s): %w", ru, err)
	}
	return rdb, nil
}

// Check is `rollbot check`: it validates cfg (read from path; the errors
// name the field) and, when redisURL is set, parses it (naming the part
// that is wrong) and reaches it, so a malformed or an unreachable
// REDIS_URL is named before a deploy as it is when the bot starts. It
// prints what is valid to out.
func Check(ctx context.Context, cfg *Config, path, redisURL string, out io.Writer) error {
	cerr := cfg.Validate()
	if cerr != nil {
		cerr = fmt.Errorf("%s is not valid:\n%w", path, cerr)
	}
	var ru *state.RedisURL
	var rerr error
	if redisURL != "" {
		if ru, rerr = state.ParseRedisURL(redisURL); rerr == nil {
			var rdb redis.UniversalClient
			if rdb, rerr = connectRedis(ctx, ru); rerr == nil {
				rdb.Close()
			}
		}
	}
	if err := errors.Join(cerr, rerr); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s is valid: %d service(s)\n", path, len(cfg.Services))
	if ru != nil {
		fmt.Fprintf(out, "REDIS_URL is valid and answers: %s\n", ru)
	}
	return nil
}

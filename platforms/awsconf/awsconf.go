// Package awsconf loads the AWS SDK configuration the AWS adapters share:
// the default credential chain, an optional region, and a standard retryer
// (throttling is retried with backoff).
package awsconf

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Load returns the SDK config: region from the argument, else AWS_REGION
// or the shared config; credentials from the default chain.
func Load(ctx context.Context, region string, maxAttempts int, maxBackoff time.Duration) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = maxAttempts
				o.MaxBackoff = maxBackoff
			})
		}),
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load aws config: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, errors.New("region: not set here nor in AWS_REGION or the shared AWS config")
	}
	return cfg, nil
}

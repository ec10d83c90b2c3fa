package docker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"rollbot/platforms"
)

// LogAPI is the part of the moby client that reads a container's log.
type LogAPI interface {
	ContainerLogs(ctx context.Context, container string, options client.ContainerLogsOptions) (client.ContainerLogsResult, error)
}

// TailLog returns the last lim.Lines lines of a container's output
// (stdout and stderr, in order), kept within lim.SourceBytes however
// long the log is: the engine sends only the tail, and it streams through
// a bounded buffer. tty says the container has a terminal (its log is not
// multiplexed). dropped reports that older bytes were cut.
func TailLog(ctx context.Context, api LogAPI, id string, tty bool, lim platforms.CaptureLimits) (text string, dropped bool, err error) {
	rc, err := api.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(lim.Lines)})
	if err != nil {
		return "", false, err
	}
	defer rc.Close()
	tb := &platforms.TailBuffer{Max: lim.SourceBytes}
	if tty {
		_, err = io.Copy(tb, rc)
	} else {
		_, err = stdcopy.StdCopy(tb, tb, rc)
	}
	return tb.String(), tb.Dropped() || platforms.AtLineLimit(tb.String(), lim.Lines), err
}

// CaptureErr logs a capture read that failed (msg, with attrs) and names
// the failure for the evidence file without addresses: its reason when
// known, else a reference to the log line, never the raw error.
func CaptureErr(ctx context.Context, log *slog.Logger, msg string, err error, attrs ...any) string {
	attrs = append(attrs, "op", "capture")
	var short string
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		short = "the capture ran out of time"
	case cerrdefs.IsNotFound(err):
		short = "not found"
	case cerrdefs.IsPermissionDenied(err):
		short = "permission denied"
	default:
		return "error, " + platforms.SeeLog(ctx, log, msg, err, attrs...)
	}
	log.WarnContext(ctx, msg, append(attrs, "err", err)...)
	return short
}

//go:build !linux

package main

import (
	"context"
	"time"
)

// sleep holds for d on a Go timer, which may wake up to a millisecond
// late (hold_linux.go holds on a timerfd).
func sleep(ctx context.Context, d time.Duration) error { return timerSleep(ctx, d) }

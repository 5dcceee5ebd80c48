package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cirrus-matrix/cirrus/shared/server"
	"github.com/cirrus-matrix/cirrus/shared/synctier"
)

// defaultTierListen is the sync tier's port when CIRRUS_CLIENT_LISTEN is
// not set: the container port the stack maps.
const defaultTierListen = ":8008"

// syncTier runs the sync tier's process: only the /sync long-polls, on one
// plain HTTP listener behind API Gateway's VPC link, configured from the
// environment as the Lambda functions are. ready, when not nil, receives
// the listener's URL.
func syncTier(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) (err error) {
	fs := flag.NewFlagSet("sync-tier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cirrus sync-tier\n\n"+
			"Serves /sync (and sliding sync) long-polls from the table that the Lambda functions use,\n"+
			"configured from the environment as they are (CIRRUS_SERVER_NAME, CIRRUS_DYNAMODB_TABLE,\n"+
			"CIRRUS_SIGNING_KEY_SEED_SECRET_ARN, CIRRUS_SYNC_NEWS_QUEUE_URL, ...), on CIRRUS_CLIENT_LISTEN\n"+
			"(default %s).\n", defaultTierListen)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("sync-tier takes no arguments, got %q", fs.Args())
	}
	srv, err := server.OpenEnv(ctx, stderr)
	if err != nil {
		return err
	}
	cfg := srv.Config
	if cfg.ClientListen == "" {
		cfg.ClientListen = defaultTierListen
	}
	ln, err := net.Listen("tcp", cfg.ClientListen)
	if err != nil {
		return fmt.Errorf("sync tier listener: %w", err)
	}
	instance, err := instanceID()
	if err != nil {
		ln.Close()
		return err
	}

	var served atomic.Int64
	handler := srv.SyncHandler()
	limits := timeoutsFor(cfg)
	httpSrv := limits.server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.ServeHTTP(w, r)
		served.Add(1)
	}), slog.NewLogLogger(srv.Logger.Handler(), slog.LevelWarn))

	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var running sync.WaitGroup
	defer func() { stopBG(); running.Wait() }()
	if cfg.Sync.NewsQueueURL != "" {
		awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
		if err != nil {
			ln.Close()
			return fmt.Errorf("aws config: %w", err)
		}
		running.Go(func() { srv.ListenNews(bg, sqs.NewFromConfig(awsCfg)) })
	}
	report := func() {
		waiting, peak := srv.Sync.Waiting()
		st := synctier.Status{Waiting: waiting, Peak: peak, Served: served.Swap(0)}
		if err := synctier.WriteStatus(bg, srv.Store, instance, st, time.Now()); err != nil {
			srv.Logger.Warn("sync tier status not written", "error", err)
		}
	}
	report()
	running.Go(func() {
		tick := time.NewTicker(synctier.StatusEvery)
		defer tick.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case <-tick.C:
				report()
			}
		}
	})

	errs := make(chan error, 1)
	go func() { errs <- httpSrv.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	srv.Logger.Info("sync tier serving", "listen", ln.Addr().String(), "instance", instance,
		"news_queue", cfg.Sync.NewsQueueURL != "", "poll_interval_ms", cfg.Sync.PollIntervalMS)
	if ready != nil {
		ready <- url
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errs:
	}
	// Stopping (ECS sends SIGTERM, Spot two minutes ahead): the controller
	// learns it at once, and the waiting clients get their answers now and
	// poll again, through whatever the route then leads to.
	stopBG()
	running.Wait()
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	removeErr := synctier.RemoveStatus(shutCtx, srv.Store, instance)
	srv.Sync.Drain()
	err = errors.Join(serveErr, removeErr, httpSrv.Shutdown(shutCtx))
	srv.Logger.Info("sync tier stopped", "instance", instance)
	return err
}

// instanceID names this process in its status: the host (a task's private
// address in ECS) and a random part, so that a restart is a new instance.
func instanceID() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		host = "tier"
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("instance ID: %w", err)
	}
	return host + "-" + hex.EncodeToString(b[:]), nil
}

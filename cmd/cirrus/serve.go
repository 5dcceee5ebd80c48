package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cirrus-matrix/cirrus/shared/bigbody/fakes3"
	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/media"
	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/server"
	"github.com/cirrus-matrix/cirrus/shared/store/embedded"
)

// listening tells tests where a serve run ended up (ports may be 0 in config).
type listening struct {
	ClientURL, FederationURL, DynamoDBURL string
}

// queuePollers is how many jobs of the in-process queue run at once.
const queuePollers = 4

// serve runs the homeserver until ctx ends. ready, when not nil, receives
// the addresses once everything listens.
func serve(ctx context.Context, args []string, stderr io.Writer, ready chan<- listening) (err error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config `file` (optional: the embedded defaults need none)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cirrus serve [-config FILE]\n\nExamples:\n  cirrus serve\n  CIRRUS_SERVER_NAME=example.org cirrus serve -config cirrus.yaml\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*configPath, os.LookupEnv)
	if err != nil {
		return err
	}
	logger := server.NewLogger(cfg, stderr)
	if cfg.Email == nil {
		// Locally mail goes to a folder, so validation and reset mail work
		// with no email block: its links lead to the local listener.
		cfg.Email = &config.Email{NotifFrom: mail.DefaultFolderFrom}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data folder: %w", err)
	}

	// Made on first start, so that `cirrus register` works at once.
	if err := cfg.LoadSharedSecret(true); err != nil {
		return err
	}
	embeddedDB := cfg.DynamoDBEndpoint == ""
	if embeddedDB {
		// Every write is on disk before it is answered; a clean stop
		// writes a snapshot.
		db, err := embedded.Open("127.0.0.1:0", embedded.Options{Dir: tableDir(cfg), Logger: logger})
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, db.Close()) }()
		cfg.DynamoDBEndpoint = db.URL()
	}
	// With lambda_response_limit, answers over it go to a bucket: an
	// embedded S3 API unless the config names one.
	localS3, err := fakes3.ForConfig(cfg)
	if err != nil {
		return err
	}
	if localS3 != nil {
		defer func() { err = errors.Join(err, localS3.Close()) }()
	}
	srv, err := server.Open(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if err := srv.Store.CreateTable(ctx); err != nil {
		return err
	}
	if embeddedDB {
		if err := importLegacySnapshot(ctx, srv.Store, filepath.Join(cfg.DataDir, legacySnapshot), logger); err != nil {
			return err
		}
	}

	// Locally the queue lives in the process and the mail in a folder; the
	// same dispatcher the sender function runs drains the queue.
	mem := &queue.Memory{}
	const queueURL = "local://cirrus/federation"
	srv.Queue = queue.New(mem, queueURL)
	folder := mail.NewFolder(filepath.Join(cfg.DataDir, "mail"))
	folder.Logger = logger
	if cfg.Email != nil {
		folder.From = cfg.Email.NotifFrom
	}
	srv.SetMail(folder)
	if cfg.Sync.NewsQueueURL != "" {
		// A sync tier process (cirrus sync-tier) reads this table too: the
		// news written here wakes its syncs through the queue.
		awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
		if err != nil {
			return fmt.Errorf("aws config: %w", err)
		}
		srv.SetNews(queue.New(sqs.NewFromConfig(awsCfg), cfg.Sync.NewsQueueURL))
	}
	// Several pollers, as Lambda runs several batches at once: a /send to a
	// server that does not answer (up to 60 s) holds up one of them, not the
	// inbound work and the other destinations. The jobs are safe in
	// parallel: each destination and each room has its lease in the table.
	pollCtx, stopPoll := context.WithCancel(ctx)
	var polling sync.WaitGroup
	for range queuePollers {
		polling.Add(1)
		go func() { defer polling.Done(); srv.Jobs.Poll(pollCtx, mem, queueURL) }()
	}
	defer func() { stopPoll(); polling.Wait() }()
	if r := srv.Media.Retention; r.Local > 0 || r.Remote > 0 {
		// The stack runs media retention hourly from a schedule; here a
		// ticker queues the same job.
		polling.Add(1)
		go func() {
			defer polling.Done()
			tick := time.NewTicker(time.Hour)
			defer tick.Stop()
			for {
				select {
				case <-pollCtx.Done():
					return
				case <-tick.C:
					if err := srv.Queue.Send(pollCtx, media.RetentionKind, []byte("{}")); err != nil {
						logger.Warn("media retention not queued", "error", err)
					}
				}
			}
		}()
	}

	tlsConfig, err := federationTLS(cfg)
	if err != nil {
		return err
	}
	clientLn, err := net.Listen("tcp", cfg.ClientListen)
	if err != nil {
		return fmt.Errorf("client listener: %w", err)
	}
	fedLn, err := net.Listen("tcp", cfg.FederationListen)
	if err != nil {
		clientLn.Close()
		return fmt.Errorf("federation listener: %w", err)
	}
	cfg.Listening(clientLn.Addr().String(), fedLn.Addr().String())
	srv.Accounts.BaseURL = cfg.PublicBaseURL
	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	limits := timeoutsFor(cfg)
	fedHandler := srv.FederationHandler()
	clientSrv := limits.server(withFederation(srv.ClientHandler(), fedHandler), errLog)
	fedSrv := limits.server(fedHandler, errLog)
	fedSrv.TLSConfig = tlsConfig
	errs := make(chan error, 2)
	go func() { errs <- clientSrv.Serve(clientLn) }()
	go func() { errs <- fedSrv.ServeTLS(fedLn, "", "") }()

	at := listening{
		ClientURL:     "http://" + clientLn.Addr().String(),
		FederationURL: "https://" + fedLn.Addr().String(),
		DynamoDBURL:   cfg.DynamoDBEndpoint,
	}
	configFlag := ""
	if *configPath != "" {
		configFlag = " -c " + *configPath
	}
	printBanner(stderr, cfg, at, embeddedDB, configFlag)
	if ready != nil {
		ready <- at
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errs:
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(serveErr, clientSrv.Shutdown(shutCtx), fedSrv.Shutdown(shutCtx))
	logger.Info("stopped")
	return err
}

// withFederation serves the federation tree's paths beside the client tree,
// as Synapse's listener with both resources does, so that one reverse-proxy
// port can front both; API Gateway routes the same prefixes.
func withFederation(client, federation http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		for _, prefix := range []string{"/_matrix/federation", "/_matrix/key"} {
			if p == prefix || strings.HasPrefix(p, prefix+"/") {
				federation.ServeHTTP(w, r)
				return
			}
		}
		client.ServeHTTP(w, r)
	})
}

// httpTimeouts bound what one connection may hold of a listener, so that a
// client that sends its request slowly, or never, gives its connection up.
type httpTimeouts struct {
	// ReadHeader is the time to send the request line and headers.
	ReadHeader time.Duration
	// Read is the time to send the whole request, body included. Go also
	// cancels a request's context when its connection's read deadline
	// passes while the handler runs, so it must outlast the longest
	// request too: a /sync long-poll.
	Read time.Duration
	// Write is the time from the end of the headers to the end of the
	// response.
	Write time.Duration
	// Idle is how long a kept-alive connection waits for its next request.
	Idle time.Duration
}

// timeoutsFor gives the listeners' timeouts; tests replace it.
var timeoutsFor = defaultTimeouts

// defaultTimeouts fit a /sync that waits sync.max_timeout_ms (25 s by
// default, at most 29 s) and then answers: 60 s to read a request and 65 s
// to answer it.
func defaultTimeouts(cfg *config.Config) httpTimeouts {
	maxSync := time.Duration(cfg.Sync.MaxTimeoutMS) * time.Millisecond
	return httpTimeouts{
		ReadHeader: 10 * time.Second,
		Read:       maxSync + 35*time.Second,
		Write:      maxSync + 40*time.Second,
		Idle:       2 * time.Minute,
	}
}

func (t httpTimeouts) server(h http.Handler, errLog *log.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read,
		WriteTimeout: t.Write, IdleTimeout: t.Idle, ErrorLog: errLog}
}

func printBanner(w io.Writer, cfg *config.Config, at listening, embeddedDB bool, configFlag string) {
	db := cfg.DynamoDBEndpoint + " (table " + cfg.DynamoDBTable + ")"
	if embeddedDB {
		db = "embedded, kept in " + tableDir(cfg) + " (every write on disk before it is answered)"
	}
	fmt.Fprintf(w, `
Cirrus is running.
  server name     %s
  client API      %s   (clients use %s)
  federation API  %s
  DynamoDB        %s
  registration    %s

Open %s in a browser: a page says the server runs and how to connect a client.

Create the first user (an admin), in another terminal:
  ./bin/cirrus register -admin -u <name>%s
(Synapse's register_new_matrix_user works too, with the same shared secret.)
Stop with Ctrl-C; data is kept.

`, cfg.ServerName, at.ClientURL, cfg.PublicBaseURL, at.FederationURL, db, registration(cfg), cfg.PublicBaseURL, configFlag)
}

func registration(cfg *config.Config) string {
	if cfg.EnableRegistration {
		return "open"
	}
	return "closed (enable_registration: false)"
}

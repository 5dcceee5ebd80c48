// Command syncimage builds the sync tier's container image without Docker
// and pushes it to ECR.
//
// The image holds one file, /cirrus (./cmd/cirrus for linux/<arch>), and a
// config that runs `/cirrus sync-tier` as an unprivileged user on port 8008.
// It has no base image, so no shell, no CA bundle (cmd/cirrus/roots.go
// carries the roots) and nothing to patch. The same binary always gives the
// same image digest, so the stack, which names the image by digest, changes
// only when the code does.
//
// Run it from the repository root: `make image`, or `make deploy` with
// CONTEXT="... -c syncTier=fargate", which builds and pushes it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `syncimage: the sync tier's container image, built without Docker

Usage:
  syncimage build [-arch arm64] [-o dist/sync-image] [-version V] [-binary FILE]
      build ./cmd/cirrus for linux/<arch> and write an OCI image layout to the
      -o folder; prints the image digest and writes it to <folder>/digest
  syncimage push [-repository cirrus-sync] [-region R] [-o dist/sync-image] [-tag T] [-any-arch]
      push the layout's image by digest to the ECR repository (created if
      missing, scan on push) of the AWS account of the default credentials,
      and tag it with the version it was built with (or -tag)
  syncimage push -registry HOST[:PORT] [-repository NAME] ...
      push to a plain registry without ECR's authentication (a local one)
  syncimage help
      show this text

Examples:
  go run ./scripts/syncimage build
  go run ./scripts/syncimage build -arch amd64 -o /tmp/sync-image
  AWS_PROFILE=prod go run ./scripts/syncimage push -repository cirrus-sync -region eu-west-1
  go run ./scripts/syncimage push -registry localhost:5000 -repository cirrus-sync

The push needs AWS credentials and a region (as the AWS CLI: AWS_PROFILE,
AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO), and the rights
ecr:DescribeRepositories, ecr:CreateRepository, ecr:GetAuthorizationToken and
the layer and image upload actions of the repository.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "syncimage:", err)
		os.Exit(1)
	}
}

// run runs one subcommand; stdout gets its result (the digest, what was
// pushed), stderr the usage text and progress.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "build":
		return buildCommand(ctx, args[1:], stdout, stderr)
	case "push":
		return pushCommand(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// newFlagSet returns a flag set for a subcommand that reports its errors
// with the usage text.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("syncimage "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	return fs
}

// parseFlags parses a subcommand's flags and refuses arguments it does not
// take.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

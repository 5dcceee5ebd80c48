// Command cirrus is the operator's tool: `cirrus serve` runs the whole
// homeserver in one local process, on the embedded defaults or against a
// real DynamoDB.
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

	"golang.org/x/term"
)

const usage = `cirrus: a serverless Matrix homeserver

Usage:
  cirrus serve [-config FILE]   run the homeserver locally (client API, federation, queue)
  cirrus sync-tier              serve only the /sync long-polls, configured from the
                                environment as the Lambda functions are (the stack's sync tier)
  cirrus register [-c FILE] [-u NAME] [-admin] [URL]
                                create a user on a running server (shared secret)
  cirrus reset-password -u NAME [URL]
                                set a user's password (admin token in CIRRUS_ADMIN_TOKEN)
  cirrus hash-password          print a bcrypt hash, as Synapse's hash_password
  cirrus help                   show this text

With no config file, serve runs on the embedded defaults: server name
localhost:8008, client API on http://127.0.0.1:8008, federation on
https://127.0.0.1:8448, the table kept in ./data. Every config key can be
set as CIRRUS_<KEY> in the environment (CIRRUS_SERVER_NAME, ...).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cirrus:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr, nil)
	case "sync-tier":
		return syncTier(ctx, args[1:], stderr, nil)
	case "register":
		return register(ctx, args[1:], terminalIO(stderr))
	case "reset-password":
		return resetPassword(ctx, args[1:], terminalIO(stderr))
	case "hash-password":
		return hashPassword(args[1:], terminalIO(stderr), os.Stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stderr, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func terminalIO(out io.Writer) registerIO {
	return registerIO{in: os.Stdin, out: out, interactive: term.IsTerminal(int(os.Stdin.Fd()))}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/config"
)

// hashPassword prints a bcrypt hash as Synapse's hash_password does (same
// cost, $2b$ form), for importing users or setting a hash by hand.
func hashPassword(args []string, rio registerIO, stdout io.Writer) error {
	fs := flag.NewFlagSet("hash-password", flag.ContinueOnError)
	fs.SetOutput(rio.out)
	fs.Usage = func() {
		fmt.Fprintf(rio.out, "Usage: cirrus hash-password\n\nAsks for a password twice (or reads it from standard input) and prints its bcrypt hash.\n")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	password, err := readPassword(rio, bufio.NewReader(rio.in))
	if err != nil {
		return err
	}
	hash, err := accounts.HashPassword(password)
	if err != nil {
		return err
	}
	// Go writes $2a$, Synapse $2b$: the same algorithm, and both verify both.
	fmt.Fprintln(stdout, "$2b$"+strings.TrimPrefix(hash, "$2a$"))
	return nil
}

// resetPassword sets a user's password through the admin API, with an
// admin's access token (CIRRUS_ADMIN_TOKEN or -token), and logs the user out
// everywhere unless -keep-devices.
func resetPassword(ctx context.Context, args []string, rio registerIO) error {
	fs := flag.NewFlagSet("reset-password", flag.ContinueOnError)
	fs.SetOutput(rio.out)
	configPath := fs.String("config", "", "YAML config `file` (for server_name and public_baseurl)")
	fs.StringVar(configPath, "c", "", "short for -config")
	user := fs.String("u", "", "the user: a localpart or a full user ID")
	token := fs.String("token", os.Getenv("CIRRUS_ADMIN_TOKEN"), "an admin's access token (default $CIRRUS_ADMIN_TOKEN)")
	keep := fs.Bool("keep-devices", false, "do not log the user out of their devices")
	fs.Usage = func() {
		fmt.Fprintf(rio.out, `Usage: cirrus reset-password [-c FILE] -u USER [-keep-devices] [SERVER_URL]

Sets a new password (asked twice, or read from standard input) through the
admin API, with a server admin's access token in CIRRUS_ADMIN_TOKEN.

Example:
  CIRRUS_ADMIN_TOKEN=... cirrus reset-password -u alice

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *user == "" || *token == "" {
		fs.Usage()
		return errors.New("reset-password needs -u and an admin token")
	}
	cfg, err := config.Load(*configPath, os.LookupEnv)
	if err != nil {
		return err
	}
	serverURL := strings.TrimSuffix(cfg.PublicBaseURL, "/")
	if fs.NArg() > 0 {
		serverURL = strings.TrimSuffix(fs.Arg(0), "/")
	}
	userID := *user
	if !strings.HasPrefix(userID, "@") {
		userID = "@" + strings.ToLower(userID) + ":" + cfg.ServerName
	}
	password, err := readPassword(rio, bufio.NewReader(rio.in))
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"new_password": password, "logout_devices": !*keep})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		serverURL+"/_synapse/admin/v1/reset_password/"+url.PathEscape(userID), strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+*token)
	if err := doJSON(&http.Client{Timeout: 30 * time.Second}, req, &struct{}{}); err != nil {
		return err
	}
	fmt.Fprintf(rio.out, "Password of %s reset.\n", userID)
	return nil
}

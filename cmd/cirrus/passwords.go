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
	// Go writes $2a$, Synapse $2b$: the same algorithm, and both verify
	// both. A password past 72 bytes has a bcrypt-sha256 hash, kept as is.
	if rest, ok := strings.CutPrefix(hash, "$2a$"); ok {
		hash = "$2b$" + rest
	}
	fmt.Fprintln(stdout, hash)
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
SERVER_URL defaults to public_baseurl. A localpart is completed with the
name of the server at SERVER_URL (the one of the admin token's user ID) when
SERVER_URL is given, else with server_name.

Examples:
  CIRRUS_ADMIN_TOKEN=... cirrus reset-password -u alice
  CIRRUS_ADMIN_TOKEN=... cirrus reset-password -u alice https://matrix.example.org

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
	client := &http.Client{Timeout: 30 * time.Second}
	serverURL, serverName := strings.TrimSuffix(cfg.PublicBaseURL, "/"), cfg.ServerName
	userID := *user
	if fs.NArg() > 0 {
		serverURL = strings.TrimSuffix(fs.Arg(0), "/")
		// The server at the URL has its own name, which neither the config
		// nor the default need know: completed with theirs, a localpart
		// names a user of another server.
		if !strings.HasPrefix(userID, "@") {
			if serverName, err = whoamiServerName(ctx, client, serverURL, *token); err != nil {
				return err
			}
		}
	}
	if !strings.HasPrefix(userID, "@") {
		userID = "@" + strings.ToLower(userID) + ":" + serverName
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
	if err := doJSON(client, req, &struct{}{}); err != nil {
		return err
	}
	fmt.Fprintf(rio.out, "Password of %s reset.\n", userID)
	return nil
}

// whoamiServerName is the server name of the server at serverURL: the part
// after the colon of the user ID that the server says the token is of.
func whoamiServerName(ctx context.Context, client *http.Client, serverURL, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, serverURL+"/_matrix/client/v3/account/whoami", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	var who struct {
		UserID string `json:"user_id"`
	}
	if err := doJSON(client, req, &who); err != nil {
		return "", fmt.Errorf("server name: %w", err)
	}
	// A localpart has no colon; the server name may (a port).
	_, name, ok := strings.Cut(who.UserID, ":")
	if !ok || name == "" {
		return "", fmt.Errorf("server name: whoami answered the user ID %q", who.UserID)
	}
	return name, nil
}

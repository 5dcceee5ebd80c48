package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/secrets"
)

// newSecretGetter makes the Secrets Manager client of -secret-arn; tests
// replace it.
var newSecretGetter = secrets.NewClient

// registerIO is where register talks to the operator; tests replace it.
type registerIO struct {
	in          io.Reader
	out         io.Writer
	interactive bool // in is a terminal: prompt, and read passwords unechoed
}

// register creates a user through the shared-secret registration API, the
// way Synapse's register_new_matrix_user does, so it works against any
// running Cirrus (or Synapse) whose shared secret it has.
func register(ctx context.Context, args []string, rio registerIO) error {
	fs := flag.NewFlagSet("register", flag.ContinueOnError)
	fs.SetOutput(rio.out)
	configPath := fs.String("config", "", "YAML config `file` to read registration_shared_secret and public_baseurl from")
	fs.StringVar(configPath, "c", "", "short for -config")
	user := fs.String("u", "", "the new user's localpart (asked for when missing)")
	admin := fs.Bool("admin", false, "make the user a server admin")
	noAdmin := fs.Bool("no-admin", false, "make the user a regular user (the default when not asked)")
	fs.BoolVar(admin, "a", false, "short for -admin")
	secretARN := fs.String("secret-arn", "", "read the shared secret from this Secrets Manager secret `ARN` (a deployed stack's output; "+secrets.RegistrationSharedSecretARNEnv+" too)")
	fs.Usage = func() {
		fmt.Fprintf(rio.out, `Usage: cirrus register [-c FILE | -secret-arn ARN] [-u LOCALPART] [-admin | -no-admin] [SERVER_URL]

Creates a user on a running server through its shared-secret registration
API (/_synapse/admin/v1/register). The secret comes from the config
(registration_shared_secret or its _path; with no config, the one cirrus
serve made in ./data), or, on a deployed stack, from Secrets Manager with
-secret-arn and the AWS credentials of the environment. SERVER_URL defaults
to public_baseurl. The password
is asked twice on a terminal, or read from the first line of standard input.

Examples:
  cirrus register -admin -u alice
  echo "$PASSWORD" | cirrus register -c cirrus.yaml -u bob https://matrix.example.org
  cirrus register -secret-arn arn:aws:secretsmanager:... -admin -u alice https://matrix.example.org

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*configPath, os.LookupEnv)
	if err != nil {
		return err
	}
	switch secret, err := secrets.SharedSecret(ctx, *secretARN, os.LookupEnv, newSecretGetter); {
	case err == nil:
		cfg.RegistrationSharedSecret = secret
	case !errors.Is(err, secrets.ErrNoSecret):
		return err
	}
	if err := cfg.LoadSharedSecret(false); err != nil {
		return fmt.Errorf("%w (is cirrus serve started with the same config?)", err)
	}
	if cfg.RegistrationSharedSecret == "" {
		return errors.New("no registration_shared_secret in the config")
	}
	serverURL := strings.TrimSuffix(cfg.PublicBaseURL, "/")
	if fs.NArg() > 0 {
		serverURL = strings.TrimSuffix(fs.Arg(0), "/")
	}

	lines := bufio.NewReader(rio.in)
	localpart := *user
	if localpart == "" {
		if localpart, err = ask(rio, lines, "New user localpart: "); err != nil {
			return err
		}
	}
	password, err := readPassword(rio, lines)
	if err != nil {
		return err
	}
	isAdmin := *admin
	if !*admin && !*noAdmin && rio.interactive {
		answer, err := ask(rio, lines, "Make admin [no]: ")
		if err != nil {
			return err
		}
		isAdmin = strings.HasPrefix(strings.ToLower(answer), "y")
	}

	fmt.Fprintln(rio.out, "Sending registration request...")
	userID, err := sharedSecretRegister(ctx, serverURL, cfg.RegistrationSharedSecret, localpart, password, isAdmin)
	if err != nil {
		return err
	}
	fmt.Fprintf(rio.out, "Success! Created %s%s.\n", userID, map[bool]string{true: " (admin)"}[isAdmin])
	return nil
}

func ask(rio registerIO, lines *bufio.Reader, prompt string) (string, error) {
	if rio.interactive {
		fmt.Fprint(rio.out, prompt)
	}
	line, err := lines.ReadString('\n')
	if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
		return "", fmt.Errorf("read %s: %w", strings.TrimSuffix(strings.TrimSpace(prompt), ":"), err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// readPassword asks twice without echo on a terminal; otherwise it takes the
// first line of standard input, so scripts can pipe it in.
func readPassword(rio registerIO, lines *bufio.Reader) (string, error) {
	if !rio.interactive {
		p, err := ask(rio, lines, "")
		if err == nil && p == "" {
			err = errors.New("no password on standard input")
		}
		return p, err
	}
	fd := int(os.Stdin.Fd())
	fmt.Fprint(rio.out, "Password: ")
	p1, err := term.ReadPassword(fd)
	fmt.Fprintln(rio.out)
	if err != nil {
		return "", err
	}
	fmt.Fprint(rio.out, "Confirm password: ")
	p2, err := term.ReadPassword(fd)
	fmt.Fprintln(rio.out)
	if err != nil {
		return "", err
	}
	if len(p1) == 0 {
		return "", errors.New("the password is empty")
	}
	if !bytes.Equal(p1, p2) {
		return "", errors.New("the passwords do not match")
	}
	return string(p1), nil
}

// sharedSecretRegister gets a nonce, then posts the user with the HMAC.
func sharedSecretRegister(ctx context.Context, serverURL, secret, localpart, password string, admin bool) (string, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	endpoint := serverURL + "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := call(ctx, client, http.MethodGet, endpoint, nil, &nonce); err != nil {
		return "", err
	}
	body, _ := json.Marshal(map[string]any{
		"nonce": nonce.Nonce, "username": localpart, "password": password, "admin": admin,
		"mac": accounts.RegistrationMAC(secret, nonce.Nonce, localpart, password, admin),
	})
	var created struct {
		UserID string `json:"user_id"`
	}
	if err := call(ctx, client, http.MethodPost, endpoint, body, &created); err != nil {
		return "", err
	}
	return created.UserID, nil
}

func call(ctx context.Context, client *http.Client, method, url string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	return doJSON(client, req, out)
}

// doJSON sends a JSON request and decodes the answer, or turns a Matrix error
// into a Go one.
func doJSON(client *http.Client, req *http.Request, out any) error {
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode != http.StatusOK {
		var e struct{ Errcode, Error string }
		json.Unmarshal(data, &e)
		return fmt.Errorf("%s: %d %s: %s", req.URL.Path, res.StatusCode, e.Errcode, e.Error)
	}
	return json.Unmarshal(data, out)
}

package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/protocol"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// startServe runs `cirrus serve` in-process on free loopback ports with the
// embedded DynamoDB, and stops it when the test ends.
func startServe(t *testing.T, dataDir string, args ...string) (listening, func()) {
	t.Helper()
	t.Setenv("CIRRUS_CLIENT_LISTEN", "127.0.0.1:0")
	t.Setenv("CIRRUS_FEDERATION_LISTEN", "127.0.0.1:0")
	t.Setenv("CIRRUS_DATA_DIR", dataDir)
	return runServe(t, args...)
}

// runServe runs `cirrus serve` with the environment as the test left it.
func runServe(t *testing.T, args ...string) (listening, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan listening, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, args, io.Discard, ready) }()
	var at listening
	select {
	case at = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("serve stopped before listening: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("serve did not start in 30s")
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v", err)
		}
	}
	t.Cleanup(stop)
	return at, stop
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func do(t *testing.T, c *http.Client, method, url string, body io.Reader, header map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := reply{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: body is not a JSON object: %q", method, url, raw)
		}
	}
	return r
}

// fedClient trusts the certificate the federation listener presents from
// the data folder, as a peer configured with it would.
func fedClient(t *testing.T, caPEM []byte) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in PEM")
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
}

func TestServe_Endpoints(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")
	at, _ := startServe(t, dir)
	c := http.DefaultClient

	r := do(t, c, "GET", at.ClientURL+"/_matrix/client/versions", nil, nil)
	if r.status != 200 || r.body["versions"] == nil || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("versions: %d %s %v", r.status, r.raw, r.header)
	}
	r = do(t, c, "GET", at.ClientURL+"/.well-known/matrix/client", nil, nil)
	hs, _ := r.body["m.homeserver"].(map[string]any)
	if r.status != 200 || hs["base_url"] != at.ClientURL+"/" {
		t.Fatalf("well-known client: %d %s, want base_url %s/", r.status, r.raw, at.ClientURL)
	}
	r = do(t, c, "GET", at.ClientURL+"/.well-known/matrix/server", nil, nil)
	if r.status != 200 || !strings.HasPrefix(r.body["m.server"].(string), "localhost:") {
		t.Fatalf("well-known server: %d %s", r.status, r.raw)
	}
	r = do(t, c, "OPTIONS", at.ClientURL+"/_matrix/client/v3/login", nil, map[string]string{
		"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
	if r.status != 204 || r.header.Get("Access-Control-Allow-Methods") == "" || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("OPTIONS preflight: %d %v", r.status, r.header)
	}
	r = do(t, c, "GET", at.ClientURL+"/_matrix/client/v3/nonexistent", nil, nil)
	if r.status != 404 || r.body["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("unknown path: %d %s", r.status, r.raw)
	}
	r = do(t, c, "POST", at.ClientURL+"/_matrix/client/versions", strings.NewReader("{}"), nil)
	if r.status != 405 || r.body["errcode"] != "M_UNRECOGNIZED" || r.header.Get("Allow") == "" {
		t.Fatalf("wrong method: %d %s %v", r.status, r.raw, r.header)
	}
	big := strings.NewReader(strings.Repeat("x", 2<<20))
	r = do(t, c, "POST", at.ClientURL+"/_matrix/client/versions", big, map[string]string{"Content-Type": "application/json"})
	if r.status != 413 || r.body["errcode"] != "M_TOO_LARGE" {
		t.Fatalf("2 MB body: %d %s", r.status, r.raw)
	}

	certPEM, err := os.ReadFile(filepath.Join(dir, "federation.crt"))
	if err != nil {
		t.Fatal(err)
	}
	fc := fedClient(t, certPEM)
	r = do(t, fc, "GET", at.FederationURL+"/_matrix/federation/v1/version", nil, nil)
	if srv, _ := r.body["server"].(map[string]any); r.status != 200 || srv["name"] != "Cirrus" {
		t.Fatalf("federation version: %d %s", r.status, r.raw)
	}
	r = do(t, fc, "GET", at.FederationURL+"/_matrix/client/versions", nil, nil)
	if r.status != 404 || r.body["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("client path on the federation listener: %d %s", r.status, r.raw)
	}
	keyID, pub := checkServerKeys(t, fc, at.FederationURL, "localhost:8008")
	if keyID == "" || len(pub) != 32 {
		t.Fatalf("key %q of %d bytes", keyID, len(pub))
	}
}

// checkServerKeys fetches /_matrix/key/v2/server, verifies its self-signature
// with the published ed25519 key and its validity, and returns the key.
func checkServerKeys(t *testing.T, c *http.Client, base, serverName string) (string, []byte) {
	t.Helper()
	r := do(t, c, "GET", base+"/_matrix/key/v2/server", nil, nil)
	if r.status != 200 {
		t.Fatalf("server keys: %d %s", r.status, r.raw)
	}
	var doc struct {
		ServerName   string                       `json:"server_name"`
		ValidUntilTS int64                        `json:"valid_until_ts"`
		VerifyKeys   map[string]map[string]string `json:"verify_keys"`
	}
	if err := json.Unmarshal(r.raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.ServerName != serverName || doc.ValidUntilTS < time.Now().Add(time.Hour).UnixMilli() || len(doc.VerifyKeys) != 1 {
		t.Fatalf("server keys document: %s", r.raw)
	}
	for id, k := range doc.VerifyKeys {
		pub, err := base64.RawStdEncoding.DecodeString(k["key"])
		if err != nil {
			t.Fatal(err)
		}
		if err := protocol.VerifyJSON(serverName, id, pub, r.raw); err != nil {
			t.Fatalf("server keys signature: %v", err)
		}
		return id, pub
	}
	return "", nil
}

type note struct {
	PK   string `dynamodbav:"pk"`
	SK   string `dynamodbav:"sk"`
	Text string `dynamodbav:"text"`
}

func TestServe_DataSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")
	ctx := context.Background()

	at, stop := startServe(t, dir)
	db, err := store.Open(ctx, store.Options{Table: "cirrus", Endpoint: at.DynamoDBURL})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Put(ctx, note{PK: "test|restart", SK: "n", Text: "kept"}); err != nil {
		t.Fatal(err)
	}
	certPEM, _ := os.ReadFile(filepath.Join(dir, "federation.crt"))
	firstKey, _ := checkServerKeys(t, fedClient(t, certPEM), at.FederationURL, "localhost:8008")
	stop()

	at, _ = startServe(t, dir)
	db, err = store.Open(ctx, store.Options{Table: "cirrus", Endpoint: at.DynamoDBURL})
	if err != nil {
		t.Fatal(err)
	}
	var got note
	if err := db.Get(ctx, store.Key{PK: "test|restart", SK: "n"}, &got); err != nil || got.Text != "kept" {
		t.Fatalf("after restart: %+v, %v", got, err)
	}
	if again, _ := checkServerKeys(t, fedClient(t, certPEM), at.FederationURL, "localhost:8008"); again != firstKey {
		t.Fatalf("signing key changed across restart: %s then %s", firstKey, again)
	}
}

func TestServe_CertificateMintedFromCA(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := writeCA(t, dir)
	cfg := filepath.Join(dir, "cirrus.yaml")
	yaml := "server_name: hs1.test\ntls_ca_certificate_path: " + caCert + "\ntls_ca_key_path: " + caKey + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	at, _ := startServe(t, filepath.Join(dir, "data"), "-config", cfg)
	caPEM, _ := os.ReadFile(caCert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "hs1.test"}}}
	checkServerKeys(t, c, at.FederationURL, "hs1.test")
}

func TestServe_BadConfigNamesTheKey(t *testing.T) {
	t.Setenv("CIRRUS_SERVER_NAME", "not a server name")
	err := serve(context.Background(), nil, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "server_name") {
		t.Fatalf("serve with a bad server name: %v", err)
	}
}

func writeCA(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certPath, keyPath
}

// TestServe_LambdaResponseLimit: with lambda_response_limit set, serve
// starts its embedded S3 API for large answers and refuses a request over
// Lambda's 6 MB as a function's caller would see it, saying why.
func TestServe_LambdaResponseLimit(t *testing.T) {
	t.Setenv("CIRRUS_LAMBDA_RESPONSE_LIMIT", "16384")
	t.Setenv("CIRRUS_MAX_REQUEST_SIZE", "10000000")
	at, _ := startServe(t, t.TempDir())
	body := bytes.Repeat([]byte(" "), 7<<20)
	r := do(t, http.DefaultClient, "POST", at.ClientURL+"/_matrix/client/v3/login", bytes.NewReader(body), map[string]string{"Content-Type": "application/json"})
	if r.status != http.StatusRequestEntityTooLarge || r.body["errcode"] != "M_TOO_LARGE" || !strings.Contains(fmt.Sprint(r.body["error"]), "6 MB a Lambda function accepts") {
		t.Fatalf("7 MB login: %d %s, want 413 M_TOO_LARGE saying why", r.status, r.raw)
	}
	if r := do(t, http.DefaultClient, "GET", at.ClientURL+"/_matrix/client/versions", nil, nil); r.status != http.StatusOK {
		t.Fatalf("versions: %d %s", r.status, r.raw)
	}
}

// TestServe_FederationOnClientListener: the client listener serves the
// federation tree's paths too, as Synapse's listener does, so that one
// reverse-proxy port fronts both; they answer as on the federation listener.
func TestServe_FederationOnClientListener(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CIRRUS_SERVER_NAME", "localhost:8008")
	at, _ := startServe(t, dir)
	certPEM, err := os.ReadFile(filepath.Join(dir, "federation.crt"))
	if err != nil {
		t.Fatal(err)
	}
	fc := fedClient(t, certPEM)
	c := http.DefaultClient

	viaFed := do(t, fc, "GET", at.FederationURL+"/_matrix/federation/v1/version", nil, nil)
	viaClient := do(t, c, "GET", at.ClientURL+"/_matrix/federation/v1/version", nil, nil)
	if viaClient.status != 200 || viaFed.status != 200 || !bytes.Equal(viaClient.raw, viaFed.raw) {
		t.Fatalf("version: client listener %d %s, federation listener %d %s", viaClient.status, viaClient.raw, viaFed.status, viaFed.raw)
	}
	fedKey, fedPub := checkServerKeys(t, fc, at.FederationURL, "localhost:8008")
	clientKey, clientPub := checkServerKeys(t, c, at.ClientURL, "localhost:8008")
	if clientKey != fedKey || !bytes.Equal(clientPub, fedPub) {
		t.Fatalf("keys: client listener %s, federation listener %s", clientKey, fedKey)
	}
	if r := do(t, c, "GET", at.ClientURL+"/_matrix/key/v2/server/"+fedKey, nil, nil); r.status != 200 || r.body["server_name"] != "localhost:8008" {
		t.Fatalf("keys by key ID on the client listener: %d %s", r.status, r.raw)
	}

	for _, tc := range []struct{ method, path, allow string }{
		{"POST", "/_matrix/federation/v1/version", "GET, HEAD"},
		{"PUT", "/_matrix/key/v2/server", "GET, HEAD"},
	} {
		for _, l := range []struct {
			name, base string
			c          *http.Client
		}{{"client", at.ClientURL, c}, {"federation", at.FederationURL, fc}} {
			r := do(t, l.c, tc.method, l.base+tc.path, strings.NewReader("{}"), nil)
			if r.status != 405 || r.body["errcode"] != "M_UNRECOGNIZED" || r.header.Get("Allow") != tc.allow {
				t.Errorf("%s %s on the %s listener: %d %s Allow %q, want 405 M_UNRECOGNIZED Allow %q",
					tc.method, tc.path, l.name, r.status, r.raw, r.header.Get("Allow"), tc.allow)
			}
		}
	}
	for _, path := range []string{"/_matrix/federation/v1/nonexistent", "/_matrix/federation", "/_matrix/key/v3/nope"} {
		if r := do(t, c, "GET", at.ClientURL+path, nil, nil); r.status != 404 || r.body["errcode"] != "M_UNRECOGNIZED" {
			t.Errorf("GET %s on the client listener: %d %s, want 404 M_UNRECOGNIZED", path, r.status, r.raw)
		}
	}
	// A prefix that only looks alike stays the client tree's.
	if r := do(t, c, "GET", at.ClientURL+"/_matrix/keys", nil, nil); r.status != 404 || r.body["errcode"] != "M_UNRECOGNIZED" || r.header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("GET /_matrix/keys: %d %s %v, want the client tree's 404 with CORS", r.status, r.raw, r.header)
	}
}

// TestServe_ServerNameWithPort: a server name with an explicit port is
// reached over TLS at that port (no delegation), so with no
// federation_listen the federation listener takes it, with a certificate
// minted from the CA for the IP literal.
func TestServe_ServerNameWithPort(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := writeCA(t, dir)
	port := freePort(t)
	name := "127.0.0.1:" + port
	t.Setenv("CIRRUS_SERVER_NAME", name)
	t.Setenv("CIRRUS_CLIENT_LISTEN", "127.0.0.1:0")
	t.Setenv("CIRRUS_FEDERATION_LISTEN", "") // unset: derived from the name
	t.Setenv("CIRRUS_DATA_DIR", filepath.Join(dir, "data"))
	t.Setenv("CIRRUS_TLS_CA_CERTIFICATE_PATH", caCert)
	t.Setenv("CIRRUS_TLS_CA_KEY_PATH", caKey)
	at, _ := runServe(t)
	if at.FederationURL != "https://"+name {
		t.Fatalf("federation listener at %s, want https://%s", at.FederationURL, name)
	}
	caPEM, err := os.ReadFile(caCert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	// No ServerName: the certificate must name the IP the URL dials.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	checkServerKeys(t, c, "https://"+name, name)
	r := do(t, http.DefaultClient, "GET", at.ClientURL+"/.well-known/matrix/server", nil, nil)
	if r.status != 200 || r.body["m.server"] != name {
		t.Fatalf("well-known server: %d %s, want m.server %s", r.status, r.raw, name)
	}
}

// freePort is a loopback port free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

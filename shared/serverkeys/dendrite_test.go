package serverkeys_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
)

// Dendrite, the federation peer of DESIGN.md: only this module path and
// version (Apache-2.0).
const dendriteModule, dendriteVersion = "github.com/matrix-org/dendrite", "v0.13.8"

// TestDendrite: a real homeserver signs its requests to this one. Dendrite
// asks for a profile on a Cirrus test listener; RequireServer fetches
// Dendrite's key from its /_matrix/key/v2/server, verifies the X-Matrix
// signature over the escaped query Dendrite sent and lets the request
// through with Dendrite as the origin. The notary API then hands on
// Dendrite's key document with both signatures.
func TestDendrite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Dendrite")
	}
	bin := dendriteBin(t)
	c := newClock()
	st := openStore(t)

	srv := httptest.NewUnstartedServer(nil)
	ourName := srv.Listener.Addr().String()
	k, ourKey := newKeys(t, st, c, ourName)
	var origin atomic.Value
	rt := httpapi.NewRouter()
	k.Register(rt)
	rt.HandleFunc("GET /_matrix/key/v2/server", func(w http.ResponseWriter, r *http.Request) {
		doc, _ := keys.ServerKeys(ourName, ourKey, time.Now())
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	})
	rt.Handle("GET /_matrix/federation/v1/query/profile", k.RequireServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin.Store(serverkeys.Origin(r.Context()))
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"displayname": "Alice of Cirrus (" + r.URL.Query().Get("user_id") + ")"})
	})))
	srv.Config.Handler = rt
	srv.StartTLS()
	t.Cleanup(srv.Close)

	d := startDendrite(t, bin, nil)
	token := d.register(t, "bob", "correct horse battery staple")
	alice := "@alice:" + ourName
	res, body := d.do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(alice), token)
	if res != http.StatusOK || !strings.Contains(body, "Alice of Cirrus ("+alice+")") {
		t.Fatalf("Dendrite's profile lookup on Cirrus: %d %s\n%s", res, body, d.logTail())
	}
	if got, _ := origin.Load().(string); got != d.name {
		t.Fatalf("origin in the handler: %q, want %q", got, d.name)
	}

	n := &notary{Name: ourName, Key: ourKey}
	status, doc := call(t, "GET", "https://"+ourName+"/_matrix/key/v2/query/"+d.name, "")
	docs := serverKeys(t, n, doc, d.key(t))
	if status != http.StatusOK || len(docs) != 1 || !bytes.Contains(docs[0], []byte(d.name)) {
		t.Fatalf("Dendrite's keys through the notary API: %d %v", status, doc)
	}
}

// TestDendrite_CirrusAsNotary: Dendrite, with Cirrus as its notary
// (key_perspectives), believes a request signed by a server that no
// longer answers, through the keys Cirrus cached and signed for it; and
// refuses one signed by a key that server never had.
func TestDendrite_CirrusAsNotary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Dendrite")
	}
	bin := dendriteBin(t)
	c := newClock()
	rm := newRemote(t, c)
	n := startNotary(t, openStore(t), c)
	if status, body := call(t, "GET", "https://"+n.Name+"/_matrix/key/v2/query/"+rm.Name, ""); status != http.StatusOK || len(serverKeys(t, n, body, rm.Key)) != 1 {
		t.Fatalf("the notary's first query: %d %v", status, body)
	}
	rm.srv.Close()

	d := startDendrite(t, bin, map[string]any{
		"federation_api.key_perspectives": []any{map[string]any{
			"server_name": n.Name,
			"keys":        []any{map[string]any{"key_id": n.Key.ID, "public_key": b64(n.Key)}},
		}},
	})
	d.register(t, "bob", "correct horse battery staple")
	uri := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape("@bob:"+d.name)
	status, body := sign(t, rm.Name, d.name, rm.Key, "GET", uri, nil).send(t, "https://"+d.name)
	if status != http.StatusOK {
		t.Fatalf("a request signed by %s, its keys from the Cirrus notary: %d %v\n%s", rm.Name, status, body, d.logTail())
	}
	forged := keys.Key{ID: rm.Key.ID, Private: mustKey(t).Private}
	if status, body := sign(t, rm.Name, d.name, forged, "GET", uri, nil).send(t, "https://"+d.name); status != http.StatusUnauthorized {
		t.Fatalf("a forged request: %d %v, want 401", status, body)
	}
}

// dendriteBin returns the folder of Dendrite's commands, built once into
// the cache that the benchmark (scripts/bench) uses too.
func dendriteBin(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "cirrus-bench", "dendrite-"+dendriteVersion)
	bin := filepath.Join(dir, "bin")
	if data, err := os.ReadFile(filepath.Join(bin, "built")); err == nil && strings.TrimSpace(string(data)) == dendriteModule+"@"+dendriteVersion {
		return bin
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	gomod := fmt.Sprintf("module cirrusbench/dendrite\n\ngo 1.22\n\nrequire %s %s\n", dendriteModule, dendriteVersion)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"build", "-mod=mod", "-o", bin + string(filepath.Separator)}
	for _, cmd := range []string{"dendrite", "generate-config", "generate-keys"} {
		args = append(args, dendriteModule+"/cmd/"+cmd)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build Dendrite: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(bin, "built"), []byte(dendriteModule+"@"+dendriteVersion+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return bin
}

// dendrite is a running Dendrite on SQLite, its federation listener's
// address as its server name.
type dendrite struct {
	name, clientURL, dir, keyPath string
}

// startDendrite runs Dendrite with generate-config's CI settings, edited
// as DESIGN.md says, and the settings of extra (dotted keys).
func startDendrite(t *testing.T, bin string, extra map[string]any) *dendrite {
	t.Helper()
	dir := t.TempDir()
	httpAddr, httpsAddr := freeAddr(t), freeAddr(t)
	d := &dendrite{name: httpsAddr, clientURL: "http://" + httpAddr, dir: dir, keyPath: filepath.Join(dir, "matrix_key.pem")}
	if out, err := exec.Command(filepath.Join(bin, "generate-keys"), "-private-key", d.keyPath).CombinedOutput(); err != nil {
		t.Fatalf("generate-keys: %v: %s", err, out)
	}
	writeSelfSigned(t, filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	out, err := exec.Command(filepath.Join(bin, "generate-config"), "-ci", "-dir", dir, "-server", d.name).Output()
	if err != nil {
		t.Fatalf("generate-config: %v", err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	set := func(path string, v any) {
		parts := strings.Split(path, ".")
		m := cfg
		for _, p := range parts[:len(parts)-1] {
			m = m[p].(map[string]any)
		}
		m[parts[len(parts)-1]] = v
	}
	set("global.private_key", d.keyPath)
	// Shared-secret registration still works; open registration would
	// refuse to start.
	set("client_api.registration_disabled", true)
	// The test listener's certificate is self-signed.
	set("federation_api.disable_tls_validation", true)
	set("logging", []any{map[string]any{"type": "file", "level": "info", "params": map[string]any{"path": dir}}})
	for key, v := range extra {
		set(key, v)
	}
	data, _ := yaml.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "dendrite.yaml"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "dendrite"), "-config", filepath.Join(dir, "dendrite.yaml"),
		"-http-bind-address", httpAddr, "-https-bind-address", httpsAddr,
		"-tls-cert", filepath.Join(dir, "tls.crt"), "-tls-key", filepath.Join(dir, "tls.key"))
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logFile.Close()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := http.Get(d.clientURL + "/_matrix/client/versions")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dendrite did not start: %v\n%s", err, d.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// key is Dendrite's signing key, read from its PEM file.
func (d *dendrite) key(t *testing.T) keys.Key {
	t.Helper()
	data, err := os.ReadFile(d.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Headers["Key-ID"] == "" || len(block.Bytes) != 32 {
		t.Fatalf("Dendrite's key file: no key with a Key-ID")
	}
	return keys.Key{ID: block.Headers["Key-ID"], Private: ed25519.NewKeyFromSeed(block.Bytes)}
}

func (d *dendrite) register(t *testing.T, user, password string) string {
	t.Helper()
	_, body := d.do(t, "GET", "/_synapse/admin/v1/register", "")
	var nonce struct{ Nonce string }
	json.Unmarshal([]byte(body), &nonce)
	reg, _ := json.Marshal(map[string]any{"nonce": nonce.Nonce, "username": user, "password": password, "admin": false,
		"mac": accounts.RegistrationMAC("complement", nonce.Nonce, user, password, false)})
	status, body := d.doBody(t, "POST", "/_synapse/admin/v1/register", "", reg)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal([]byte(body), &out)
	if status != http.StatusOK || out.AccessToken == "" {
		t.Fatalf("register %s on Dendrite: %d %s", user, status, body)
	}
	return out.AccessToken
}

func (d *dendrite) do(t *testing.T, method, path, token string) (int, string) {
	return d.doBody(t, method, path, token, nil)
}

func (d *dendrite) doBody(t *testing.T, method, path, token string, body []byte) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, d.clientURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", method, path, err, d.logTail())
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw)
}

// logTail is the end of Dendrite's logs, for failure messages.
func (d *dendrite) logTail() string {
	var b strings.Builder
	for _, name := range []string{"stdout.log", "dendrite.log"} {
		data, _ := os.ReadFile(filepath.Join(d.dir, name))
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		b.WriteString(strings.Join(lines[max(0, len(lines)-15):], "\n") + "\n")
	}
	return b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeSelfSigned writes a P-256 certificate for 127.0.0.1.
func writeSelfSigned(t *testing.T, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

package servertest

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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/keys"
)

// Dendrite, the federation peer of DESIGN.md: only this module path and
// version (Apache-2.0).
const dendriteModule, dendriteVersion = "github.com/matrix-org/dendrite", "v0.13.8"

// StartNamed runs a Stack whose server name is the loopback address of its
// federation listener, served over TLS (httptest's certificate for
// 127.0.0.1), so that a real server such as Dendrite reaches it by name; its
// outbound client may reach loopback and accepts self-signed certificates.
// It returns the stack and the federation listener's base URL.
func StartNamed(t testing.TB, env ...string) (*Stack, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := l.Addr().String()
	all := append([]string{"CIRRUS_SERVER_NAME=" + name}, FederationEnv...)
	st := Start(t, append(all, env...)...)
	hs := httptest.NewUnstartedServer(st.Server.FederationHandler())
	hs.Listener.Close()
	hs.Listener = l
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return st, hs.URL
}

// Name is the stack's server name.
func (s *Stack) Name() string { return s.cfg.ServerName }

// Dendrite is a running Dendrite on SQLite, its federation listener's
// address as its server name.
type Dendrite struct {
	// Name is its server name, ClientURL the base URL of its client API.
	Name, ClientURL string
	dir             string
}

// StartDendrite builds Dendrite once into the user cache (the folder
// scripts/bench uses too) and runs it until the test ends, with
// generate-config's CI settings edited as DESIGN.md says and the settings
// of extra (dotted keys). It skips the test under -short.
func StartDendrite(t testing.TB, extra map[string]any) *Dendrite {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs Dendrite")
	}
	bin := dendriteBin(t)
	dir := t.TempDir()
	httpAddr, httpsAddr := freeAddr(t), freeAddr(t)
	d := &Dendrite{Name: httpsAddr, ClientURL: "http://" + httpAddr, dir: dir}
	keyPath := filepath.Join(dir, "matrix_key.pem")
	if out, err := exec.Command(filepath.Join(bin, "generate-keys"), "-private-key", keyPath).CombinedOutput(); err != nil {
		t.Fatalf("generate-keys: %v: %s", err, out)
	}
	writeSelfSigned(t, filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	out, err := exec.Command(filepath.Join(bin, "generate-config"), "-ci", "-dir", dir, "-server", d.Name).Output()
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
	set("global.private_key", keyPath)
	// Shared-secret registration still works; open registration would
	// refuse to start.
	set("client_api.registration_disabled", true)
	// Test listeners' certificates are self-signed.
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
		res, err := http.Get(d.ClientURL + "/_matrix/client/versions")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dendrite did not start: %v\n%s", err, d.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dendriteBin returns the folder of Dendrite's commands, built once.
func dendriteBin(t testing.TB) string {
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

// Key is Dendrite's signing key, read from the PEM file generate-keys
// wrote: what a test needs to check Dendrite's signatures itself.
func (d *Dendrite) Key(t testing.TB) keys.Key {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(d.dir, "matrix_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Headers["Key-ID"] == "" || len(block.Bytes) != ed25519.SeedSize {
		t.Fatalf("Dendrite's key file: no key with a Key-ID")
	}
	return keys.Key{ID: block.Headers["Key-ID"], Private: ed25519.NewKeyFromSeed(block.Bytes)}
}

// Register makes a Dendrite user through its shared-secret registration
// (generate-config -ci's secret) and returns their access token.
func (d *Dendrite) Register(t testing.TB, user, password string) string {
	t.Helper()
	_, body := d.Do(t, "GET", "/_synapse/admin/v1/register", "", nil)
	var nonce struct{ Nonce string }
	json.Unmarshal([]byte(body), &nonce)
	status, body := d.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
		"nonce": nonce.Nonce, "username": user, "password": password, "admin": false,
		"mac": accounts.RegistrationMAC("complement", nonce.Nonce, user, password, false)})
	var out struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal([]byte(body), &out)
	if status != http.StatusOK || out.AccessToken == "" {
		t.Fatalf("register %s on Dendrite: %d %s", user, status, body)
	}
	return out.AccessToken
}

// Do sends a request to Dendrite's client API, body as JSON when not nil,
// and returns the status and body.
func (d *Dendrite) Do(t testing.TB, method, path, token string, body any) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		doc, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(doc)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.ClientURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", method, path, err, d.LogTail())
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw)
}

// LogTail is the end of Dendrite's logs, for failure messages.
func (d *Dendrite) LogTail() string {
	var b strings.Builder
	for _, name := range []string{"stdout.log", "dendrite.log"} {
		data, _ := os.ReadFile(filepath.Join(d.dir, name))
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		b.WriteString(strings.Join(lines[max(0, len(lines)-15):], "\n") + "\n")
	}
	return b.String()
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeSelfSigned writes a P-256 certificate for 127.0.0.1.
func writeSelfSigned(t testing.TB, certPath, keyPath string) {
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

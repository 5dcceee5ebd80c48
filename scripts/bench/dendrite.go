package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The baseline. Only this module path and version: the later element-hq
// module is under another licence.
const (
	dendriteModule  = "github.com/matrix-org/dendrite"
	dendriteVersion = "v0.13.8"
)

var dendriteCommands = []string{"dendrite", "generate-config", "generate-keys"}

// dendriteBuild is where the baseline's binaries are.
type dendriteBuild struct {
	Dir    string        // the cache folder: throwaway go.mod, build.log, bin/
	Cached bool          // the binaries were there from an earlier run
	Took   time.Duration // build time when not cached
}

func (b dendriteBuild) bin(name string) string { return filepath.Join(b.Dir, "bin", name) }

// defaultCacheDir is $XDG_CACHE_HOME/cirrus-bench (~/.cache/cirrus-bench).
func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "cirrus-bench")
}

// buildDendrite builds Dendrite's commands with `go build` in a throwaway
// module under cacheDir, once: later runs reuse the binaries. Nothing of
// Dendrite's source comes near the repository.
func buildDendrite(ctx context.Context, cacheDir string) (dendriteBuild, error) {
	b := dendriteBuild{Dir: filepath.Join(cacheDir, "dendrite-"+dendriteVersion)}
	stamp := filepath.Join(b.Dir, "bin", "built")
	if data, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(data)) == dendriteModule+"@"+dendriteVersion {
		b.Cached = true
		return b, nil
	}
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return b, err
	}
	gomod := fmt.Sprintf("module cirrusbench/dendrite\n\ngo 1.22\n\nrequire %s %s\n", dendriteModule, dendriteVersion)
	if err := os.WriteFile(filepath.Join(b.Dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return b, err
	}
	tmpBin, err := os.MkdirTemp(b.Dir, "bin-")
	if err != nil {
		return b, err
	}
	defer os.RemoveAll(tmpBin)
	logPath := filepath.Join(b.Dir, "build.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return b, err
	}
	defer logFile.Close()

	args := []string{"build", "-mod=mod", "-o", tmpBin + string(filepath.Separator)}
	for _, c := range dendriteCommands {
		args = append(args, dendriteModule+"/cmd/"+c)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.Dir
	// Its SQLite driver is cgo; a go.work above the cache must not apply.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOWORK=off")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	fmt.Fprintf(os.Stderr, "bench: building %s@%s in %s (a few minutes the first time)\n", dendriteModule, dendriteVersion, b.Dir)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return b, fmt.Errorf("go %s: %w; last lines of %s:\n%s", strings.Join(args, " "), err, logPath, indent(tailFile(logPath, 15)))
	}
	b.Took = time.Since(start)
	if err := os.MkdirAll(filepath.Join(b.Dir, "bin"), 0o755); err != nil {
		return b, err
	}
	for _, c := range dendriteCommands {
		if err := os.Rename(filepath.Join(tmpBin, c), b.bin(c)); err != nil {
			return b, err
		}
	}
	return b, os.WriteFile(stamp, []byte(dendriteModule+"@"+dendriteVersion+"\n"), 0o644)
}

// startDendrite runs Dendrite on SQLite in a fresh folder: plain HTTP on one
// free loopback port, HTTPS (self-signed) on another, server name localhost;
// or, federated, named by its HTTPS listener's address, so that other
// servers reach it, and accepting their self-signed certificates.
func startDendrite(ctx context.Context, b dendriteBuild, federated bool) (*server, error) {
	dir, err := os.MkdirTemp("", "cirrus-bench-dendrite-")
	if err != nil {
		return nil, err
	}
	s := &server{Name: "dendrite", dir: dir}
	logPath := filepath.Join(dir, "dendrite.log")
	s.output = func() string { return tailFile(logPath, 20) }
	fail := func(err error) (*server, error) { s.stop(); return nil, err }

	httpAddr, err1 := freeAddr()
	httpsAddr, err2 := freeAddr()
	if err := errors.Join(err1, err2); err != nil {
		return fail(err)
	}
	s.ClientURL, s.FederationURL = "http://"+httpAddr, "https://"+httpsAddr
	if federated {
		s.serverName = httpsAddr
	}
	keyID, err := writeDendriteConfig(ctx, b, dir, httpAddr, httpsAddr, federated)
	if err != nil {
		return fail(err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close() // the child has its own descriptor
	args := []string{
		"-config", filepath.Join(dir, "dendrite.yaml"),
		"-http-bind-address", httpAddr,
		"-https-bind-address", httpsAddr,
		"-tls-cert", filepath.Join(dir, "tls.crt"),
		"-tls-key", filepath.Join(dir, "tls.key"),
	}
	if err := startProcess(s, b.bin("dendrite"), args, os.Environ(), logFile, logFile); err != nil {
		return fail(err)
	}
	if err := s.waitReady(ctx, s.ClientURL+"/_matrix/client/versions", 60*time.Second); err != nil {
		return fail(err)
	}
	// The listeners that answered must be this process's: the client one
	// names our port in its well-known, the federation one our key.
	wk, err := probe(ctx, s.client, s.ClientURL+"/.well-known/matrix/client", "")
	if err != nil {
		return fail(err)
	}
	if !bytes.Contains(wk.body, []byte(s.ClientURL)) {
		return fail(errPortTaken)
	}
	if err := s.waitReady(ctx, s.FederationURL+"/_matrix/key/v2/server", 30*time.Second); err != nil {
		return fail(err)
	}
	keys, err := probe(ctx, s.client, s.FederationURL+"/_matrix/key/v2/server", "")
	if err != nil {
		return fail(err)
	}
	if !bytes.Contains(keys.body, []byte(keyID)) {
		return fail(errPortTaken)
	}
	return s, nil
}

// writeDendriteConfig writes dendrite.yaml (generate-config's SQLite
// defaults, edited), the signing key and the TLS pair into dir, and returns
// the signing key's ID.
func writeDendriteConfig(ctx context.Context, b dendriteBuild, dir, httpAddr, httpsAddr string, federated bool) (string, error) {
	keyPath := filepath.Join(dir, "matrix_key.pem")
	if out, err := exec.CommandContext(ctx, b.bin("generate-keys"), "-private-key", keyPath).CombinedOutput(); err != nil {
		return "", fmt.Errorf("generate-keys: %w: %s", err, out)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Headers["Key-ID"] == "" {
		return "", errors.New("generate-keys: no Key-ID in the key file")
	}
	keyID := block.Headers["Key-ID"]
	if err := writeSelfSigned(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err != nil {
		return "", err
	}

	name := "localhost"
	if federated {
		name = httpsAddr
	}
	out, err := exec.CommandContext(ctx, b.bin("generate-config"), "-dir", dir, "-server", name).Output()
	if err != nil {
		return "", fmt.Errorf("generate-config: %w", err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(out, &cfg); err != nil {
		return "", fmt.Errorf("generate-config output: %w", err)
	}
	_, httpsPort, _ := net.SplitHostPort(httpsAddr)
	settings := map[string]any{
		"global.private_key":            keyPath,
		"global.well_known_client_name": "http://" + httpAddr,
		"global.well_known_server_name": "localhost:" + httpsPort,
		// Nothing leaves loopback: no notary servers to ask.
		"federation_api.key_perspectives": []any{},
		// The same users and costs as Cirrus: shared-secret registration, no
		// rate limits, bcrypt at Synapse's (and Cirrus's) cost of 12.
		"client_api.registration_shared_secret": benchSecret,
		"client_api.rate_limiting.enabled":      false,
		"user_api.bcrypt_cost":                  12,
	}
	if federated {
		settings["global.well_known_server_name"] = httpsAddr
		// The other servers of the run have self-signed certificates.
		settings["federation_api.disable_tls_validation"] = true
	}
	if err := setKeys(cfg, settings); err != nil {
		return "", err
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	return keyID, os.WriteFile(filepath.Join(dir, "dendrite.yaml"), data, 0o600)
}

// setKeys sets dotted keys of a YAML document whose parents exist.
func setKeys(doc map[string]any, values map[string]any) error {
	for key, v := range values {
		parts := strings.Split(key, ".")
		m := doc
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				return fmt.Errorf("dendrite config: no %q section for %s", p, key)
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
	}
	return nil
}

// writeSelfSigned writes a P-256 certificate for localhost and 127.0.0.1,
// like the one `cirrus serve` makes for its federation listener.
func writeSelfSigned(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

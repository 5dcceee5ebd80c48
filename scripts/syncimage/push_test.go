package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestPush_PlainRegistry(t *testing.T) {
	dir, digest := buildLayout(t)
	reg := httptest.NewServer(quietRegistry())
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")

	var stdout, stderr strings.Builder
	args := []string{"push", "-o", dir, "-registry", host, "-repository", "cirrus-sync"}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("push: %v\n%s", err, stderr.String())
	}
	wantOut := host + "/cirrus-sync@" + digest.String() + "\n" + host + "/cirrus-sync:" + testVersion + "\n"
	if stdout.String() != wantOut {
		t.Errorf("push printed %q, want %q", stdout.String(), wantOut)
	}
	pullSame(t, host+"/cirrus-sync@"+digest.String(), digest, authn.Anonymous)
	pullSame(t, host+"/cirrus-sync:"+testVersion, digest, authn.Anonymous)
}

// quietRegistry is an in-memory registry that does not log every request.
func quietRegistry() http.Handler {
	return registry.New(registry.Logger(log.New(io.Discard, "", 0)))
}

// pullSame pulls ref back and checks it is the image built: same digest,
// same layer, same config.
func pullSame(t *testing.T, ref string, digest v1.Hash, auth authn.Authenticator) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithAuth(auth), remote.WithContext(context.Background()))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	got, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got != digest {
		t.Fatalf("pulled %s has digest %s, pushed %s", ref, got, digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cf.Config.Cmd, " ") != "sync-tier" {
		t.Errorf("pulled config cmd %q", cf.Config.Cmd)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("pulled layers: %d, %v", len(layers), err)
	}
	hdr, _ := onlyFile(t, layers[0])
	if hdr.Name != "cirrus" {
		t.Errorf("pulled layer holds %q", hdr.Name)
	}
}

// fakeECR is ECR's JSON API (the three actions push calls) in front of an
// in-memory registry that, like ECR's, wants the token's basic credentials.
type fakeECR struct {
	registryHost string

	mu    sync.Mutex
	repos map[string]bool // name → scan on push
}

const fakeECRPassword = "s3cret-token"

func newFakeECR(t *testing.T) (*fakeECR, *httptest.Server) {
	reg := quietRegistry()
	regSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "AWS" || p != fakeECRPassword {
			w.Header().Set("WWW-Authenticate", `Basic realm="fake-ecr"`)
			http.Error(w, "no basic auth", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(regSrv.Close)
	f := &fakeECR{registryHost: strings.TrimPrefix(regSrv.URL, "http://"), repos: map[string]bool{}}
	api := httptest.NewServer(http.HandlerFunc(f.serveAPI))
	t.Cleanup(api.Close)
	return f, api
}

func (f *fakeECR) serveAPI(w http.ResponseWriter, r *http.Request) {
	var in struct {
		RepositoryNames            []string `json:"repositoryNames"`
		RepositoryName             string   `json:"repositoryName"`
		ImageScanningConfiguration struct {
			ScanOnPush bool `json:"scanOnPush"`
		} `json:"imageScanningConfiguration"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	repo := func(n string) map[string]any {
		return map[string]any{"repositoryName": n, "repositoryUri": f.registryHost + "/" + n}
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	switch target := r.Header.Get("X-Amz-Target"); target {
	case "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories":
		if len(in.RepositoryNames) != 1 || !f.has(in.RepositoryNames[0]) {
			w.Header().Set("X-Amzn-ErrorType", "RepositoryNotFoundException")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"__type": "RepositoryNotFoundException", "message": "no such repository"})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"repositories": []any{repo(in.RepositoryNames[0])}})
	case "AmazonEC2ContainerRegistry_V20150921.CreateRepository":
		f.repos[in.RepositoryName] = in.ImageScanningConfiguration.ScanOnPush
		json.NewEncoder(w).Encode(map[string]any{"repository": repo(in.RepositoryName)})
	case "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken":
		token := base64.StdEncoding.EncodeToString([]byte("AWS:" + fakeECRPassword))
		json.NewEncoder(w).Encode(map[string]any{"authorizationData": []any{map[string]any{
			"authorizationToken": token, "proxyEndpoint": "http://" + f.registryHost,
		}}})
	default:
		http.Error(w, "unexpected action "+target, http.StatusBadRequest)
	}
}

func (f *fakeECR) has(repo string) bool {
	_, ok := f.repos[repo]
	return ok
}

// isolateAWS points the SDK's default config at nothing of this machine's:
// no profile, no files, no instance metadata.
func isolateAWS(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"AWS_CONFIG_FILE": empty, "AWS_SHARED_CREDENTIALS_FILE": empty, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_PROFILE": "", "AWS_DEFAULT_PROFILE": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "",
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "",
		"AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_ECR": "",
	} {
		t.Setenv(k, v)
	}
}

func TestPush_ECR(t *testing.T) {
	dir, digest := buildLayout(t)
	ecrFake, api := newFakeECR(t)
	isolateAWS(t)
	t.Setenv("AWS_ENDPOINT_URL_ECR", api.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")

	// The stack's task is arm64: another arch needs -any-arch.
	args := []string{"push", "-o", dir, "-repository", "cirrus-sync", "-region", "eu-west-1", "-tag", "release"}
	if runtime.GOARCH != "arm64" {
		var stdout, stderr strings.Builder
		err := run(context.Background(), args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "the stack's task runs linux/arm64") {
			t.Fatalf("push of a linux/%s image to ECR: err = %v", runtime.GOARCH, err)
		}
		args = append(args, "-any-arch")
	}

	// Twice: the first run creates the repository, the second finds it.
	for i := range 2 {
		var stdout, stderr strings.Builder
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Fatalf("push %d: %v\n%s", i, err, stderr.String())
		}
		wantOut := ecrFake.registryHost + "/cirrus-sync@" + digest.String() + "\n" + ecrFake.registryHost + "/cirrus-sync:release\n"
		if stdout.String() != wantOut {
			t.Errorf("push %d printed %q, want %q", i, stdout.String(), wantOut)
		}
		if created := strings.Contains(stderr.String(), "created the ECR repository"); created != (i == 0) {
			t.Errorf("push %d: created the repository: %v\n%s", i, created, stderr.String())
		}
	}
	ecrFake.mu.Lock()
	scan, ok := ecrFake.repos["cirrus-sync"]
	ecrFake.mu.Unlock()
	if !ok || !scan {
		t.Errorf("repository created: %v, scan on push: %v", ok, scan)
	}
	auth := &authn.Basic{Username: "AWS", Password: fakeECRPassword}
	pullSame(t, ecrFake.registryHost+"/cirrus-sync@"+digest.String(), digest, auth)
	pullSame(t, ecrFake.registryHost+"/cirrus-sync:release", digest, auth)
}

func TestPush_SaysWhatIsMissing(t *testing.T) {
	dir, _ := buildLayout(t)
	isolateAWS(t)
	args := []string{"push", "-o", dir, "-repository", "cirrus-sync", "-any-arch"}
	var stdout, stderr strings.Builder
	err := run(context.Background(), args, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "no AWS region") || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Errorf("without a region: err = %v", err)
	}
	t.Setenv("AWS_REGION", "eu-west-1")
	err = run(context.Background(), args, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "no AWS credentials") || !strings.Contains(err.Error(), "AWS_PROFILE") {
		t.Errorf("without credentials: err = %v", err)
	}
}

package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestBuild_ImageConfig(t *testing.T) {
	dir, digest := buildLayout(t)
	raw, err := os.ReadFile(filepath.Join(dir, "digest"))
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != digest.String() || !strings.HasPrefix(string(raw), "sha256:") {
		t.Errorf("digest file = %q, want %q", raw, digest)
	}
	img, err := readLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := img.Digest(); got != digest {
		t.Errorf("image read back has digest %s, built %s", got, digest)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want OCI", mt)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	checks := []struct {
		what      string
		got, want any
	}{
		{"os", cf.OS, "linux"},
		{"architecture", cf.Architecture, runtime.GOARCH},
		{"created", cf.Created.Time.UTC(), epoch},
		{"entrypoint", strings.Join(c.Entrypoint, " "), "/cirrus"},
		{"cmd", strings.Join(c.Cmd, " "), "sync-tier"},
		{"user", c.User, "65532:65532"},
		{"exposed ports", len(c.ExposedPorts), 1},
		{"env", len(c.Env), 0}, // no SSL_CERT_FILE: the roots are in the binary
		{"version label", c.Labels[versionLabel], testVersion},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("config %s = %v, want %v", ck.what, ck.got, ck.want)
		}
	}
	if _, ok := c.ExposedPorts["8008/tcp"]; !ok {
		t.Errorf("config exposes %v, want 8008/tcp", c.ExposedPorts)
	}
}

func TestBuild_LayerRunsCirrus(t *testing.T) {
	dir, _ := buildLayout(t)
	img, err := readLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	hdr, data := onlyFile(t, layers[0])
	wantHdr := []struct {
		what      string
		got, want any
	}{
		{"name", hdr.Name, "cirrus"},
		{"type", hdr.Typeflag, byte(tar.TypeReg)},
		{"mode", hdr.Mode, int64(0o755)},
		{"uid", hdr.Uid, 0},
		{"gid", hdr.Gid, 0},
		{"mtime", hdr.ModTime.UTC(), epoch},
	}
	for _, w := range wantHdr {
		if w.got != w.want {
			t.Errorf("layer entry %s = %v, want %v", w.what, w.got, w.want)
		}
	}
	want, err := os.ReadFile(hostBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, want) {
		t.Fatalf("/cirrus in the layer (%d bytes) is not the binary (%d bytes)", len(data), len(want))
	}

	// The extracted /cirrus runs, and carries the fallback CA roots the
	// image needs in place of a CA bundle.
	bin := filepath.Join(t.TempDir(), "cirrus")
	if err := os.WriteFile(bin, data, os.FileMode(hdr.Mode)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "help").CombinedOutput()
	if err != nil {
		t.Fatalf("cirrus help: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "cirrus: a serverless Matrix homeserver") {
		t.Errorf("cirrus help printed:\n%s", out)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var roots bool
	for _, d := range info.Deps {
		roots = roots || d.Path == "golang.org/x/crypto/x509roots/fallback"
	}
	if !roots {
		t.Error("/cirrus does not link golang.org/x/crypto/x509roots/fallback")
	}
	if s, ok := buildSetting(info, "CGO_ENABLED"); !ok || s != "0" {
		t.Errorf("/cirrus built with CGO_ENABLED=%q, want 0 (the image has no libc)", s)
	}
}

func TestBuild_DeterministicDigest(t *testing.T) {
	first, d1 := buildLayout(t)
	_, d2 := buildLayout(t)
	if d1 != d2 {
		t.Fatalf("the same binary gave two digests: %s, %s", d1, d2)
	}

	// Two compiles of the same source give the same bytes, hence the same
	// image (-trimpath, fixed times). They run back to back, as the source
	// must not change in between (helpers edit the tree while tests run).
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var compiled [2]v1.Hash
	for i := range compiled {
		d, err := build(ctx, buildOptions{Arch: runtime.GOARCH, Out: first, Version: testVersion}, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		compiled[i] = d
	}
	if compiled[0] != compiled[1] {
		t.Fatalf("two compiles gave two digests: %s, %s", compiled[0], compiled[1])
	}
	blobs, err := os.ReadDir(filepath.Join(first, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 3 { // manifest, config, layer: the rebuild left no stale blob
		t.Errorf("%d blobs in the rebuilt layout, want 3", len(blobs))
	}
}

func TestBuild_KeepsOtherFolders(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := build(context.Background(), buildOptions{
		Arch: runtime.GOARCH, Out: dir, Version: testVersion, Binary: hostBinary(t),
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not an OCI image layout") {
		t.Fatalf("build into a folder of other files: err = %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("the folder's file is gone: %v", err)
	}
}

// onlyFile returns the header and content of the layer's single entry.
func onlyFile(t *testing.T, layer v1.Layer) (*tar.Header, []byte) {
	t.Helper()
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	if next, err := tr.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("the layer holds more than /cirrus: %v %v", next, err)
	}
	return hdr, data
}

func buildSetting(info *buildinfo.BuildInfo, key string) (string, bool) {
	for _, s := range info.Settings {
		if s.Key == key {
			return s.Value, true
		}
	}
	return "", false
}

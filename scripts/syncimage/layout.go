package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// digestFile is the file of the layout folder that holds the image digest
// ("sha256:<hex>", no newline): the stack reads it when the syncImage
// context is not given, and push pushes that image.
const digestFile = "digest"

// writeLayout writes img as the only image of a fresh OCI layout at dir,
// with its digest file. It builds the layout beside dir and swaps it in, so
// that dir never holds blobs of older builds nor half a layout; a dir that
// is not an OCI layout is left alone.
func writeLayout(dir string, img v1.Image, arch string) error {
	dir = filepath.Clean(dir)
	if err := checkReplaceable(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+"-")
	if err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp's 0700 is for secrets
		return fmt.Errorf("layout: %w", err)
	}
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	if err := p.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: arch})); err != nil {
		return fmt.Errorf("layout: write the image: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, digestFile), []byte(digest.String()), 0o644); err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("layout: remove the previous one: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	return nil
}

// checkReplaceable refuses a dir that exists, is not empty and is not an
// OCI layout: a mistyped -o must not delete someone's folder.
func checkReplaceable(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || err == nil && len(entries) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("layout: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("layout: %s is not empty and not an OCI image layout: choose another -o", dir)
	}
	return nil
}

// readLayout returns the image of the layout at dir that its digest file
// names.
func readLayout(dir string) (v1.Image, error) {
	raw, err := os.ReadFile(filepath.Join(dir, digestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no image in %s (no %s file): run `make image` or `syncimage build -o %s` first", dir, digestFile, dir)
	}
	if err != nil {
		return nil, err
	}
	digest, err := v1.NewHash(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, digestFile), err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("read the layout %s: %w", dir, err)
	}
	img, err := p.Image(digest)
	if err != nil {
		return nil, fmt.Errorf("read the image %s from %s: %w", digest, dir, err)
	}
	return img, nil
}

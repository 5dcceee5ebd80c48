package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// buildOptions say what `syncimage build` builds and where it writes it.
type buildOptions struct {
	Arch    string // GOARCH of the image: arm64 (Fargate Graviton) or amd64
	Out     string // folder of the OCI image layout
	Version string // version stamped into the binary and the image's label
	Binary  string // a linux/<Arch> cirrus binary to package; empty: compile ./cmd/cirrus
}

func buildCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("build", stderr)
	var o buildOptions
	fs.StringVar(&o.Arch, "arch", "arm64", "`GOARCH` of the image (arm64 or amd64)")
	fs.StringVar(&o.Out, "o", filepath.Join("dist", "sync-image"), "`folder` of the OCI image layout")
	fs.StringVar(&o.Version, "version", "", "version stamped into the binary (default: git describe, as the Makefile)")
	fs.StringVar(&o.Binary, "binary", "", "package this linux `file` instead of compiling ./cmd/cirrus")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.Version == "" {
		o.Version = defaultVersion(ctx)
	}
	digest, err := build(ctx, o, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, digest)
	return nil
}

// build compiles (unless o.Binary is set) and packages the binary, writes
// the layout and its digest file, and returns the image digest.
func build(ctx context.Context, o buildOptions, progress io.Writer) (v1.Hash, error) {
	if o.Arch != "arm64" && o.Arch != "amd64" {
		return v1.Hash{}, fmt.Errorf("build: -arch %q: want arm64 or amd64", o.Arch)
	}
	if o.Out == "" {
		return v1.Hash{}, fmt.Errorf("build: -o: an output folder is needed")
	}
	binary := o.Binary
	if binary == "" {
		tmp, err := os.MkdirTemp("", "syncimage-")
		if err != nil {
			return v1.Hash{}, fmt.Errorf("build: %w", err)
		}
		defer os.RemoveAll(tmp)
		binary = filepath.Join(tmp, "cirrus")
		fmt.Fprintf(progress, "compiling ./cmd/cirrus for linux/%s (version %s)\n", o.Arch, o.Version)
		if err := compile(ctx, o.Arch, o.Version, binary); err != nil {
			return v1.Hash{}, err
		}
	}
	data, err := os.ReadFile(binary)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("build: read the binary: %w", err)
	}
	img, err := newImage(data, o.Arch, o.Version)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("build: %w", err)
	}
	if err := writeLayout(o.Out, img, o.Arch); err != nil {
		return v1.Hash{}, fmt.Errorf("build: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("build: %w", err)
	}
	size, err := imageSize(img)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("build: %w", err)
	}
	fmt.Fprintf(progress, "wrote %s: linux/%s, %.1f MB compressed\n", o.Out, o.Arch, float64(size)/(1<<20))
	return digest, nil
}

package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed facts. The tier listens on 8008 (CIRRUS_CLIENT_LISTEN);
// 65532 is the conventional "nonroot" user of distroless images: the
// process needs no file it would own.
const (
	binaryPath   = "/cirrus"
	tierCommand  = "sync-tier"
	imageUser    = "65532:65532"
	tierPort     = "8008/tcp"
	versionLabel = "org.opencontainers.image.version"
)

// epoch is the time of every timestamp in the image (file mtime, config
// and history "created"), so that the digest depends only on the binary and
// the version; it is the time scripts/lambdazip uses.
var epoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// newImage returns the OCI image: no base, one layer holding binary as
// /cirrus, and the config that runs `/cirrus sync-tier`.
func newImage(binary []byte, arch, version string) (v1.Image, error) {
	layer, err := binaryLayer(binary)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: arch,
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		Config: v1.Config{
			Entrypoint:   []string{binaryPath},
			Cmd:          []string{tierCommand},
			User:         imageUser,
			ExposedPorts: map[string]struct{}{tierPort: {}},
			Labels:       map[string]string{versionLabel: version},
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "scripts/syncimage: " + binaryPath},
	})
	if err != nil {
		return nil, fmt.Errorf("image layer: %w", err)
	}
	return img, nil
}

// binaryLayer is a gzipped tar with one entry, the executable cirrus at
// the root, owned by root, with the fixed mtime. It is compressed once here
// (best compression: Fargate pulls it on every task start) rather than by
// go-containerregistry on each read.
func binaryLayer(binary []byte) (v1.Layer, error) {
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     binaryPath[1:],
		Mode:     0o755,
		Size:     int64(len(binary)),
		ModTime:  epoch,
		Format:   tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	compressed := gz.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// imageSize is what a pull downloads: the manifest's config and layers.
func imageSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size, nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pushOptions say what `syncimage push` pushes and where.
type pushOptions struct {
	Layout     string // folder written by build
	Repository string // repository name (ECR: created if missing)
	Registry   string // a plain registry host[:port]; empty: the account's ECR registry
	Region     string // AWS region of the ECR registry; empty: the SDK's default
	Tag        string // tag to set; empty: the version the image was built with
	AnyArch    bool   // push to ECR an image that is not linux/arm64
}

func pushCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("push", stderr)
	var o pushOptions
	fs.StringVar(&o.Layout, "o", filepath.Join("dist", "sync-image"), "`folder` of the OCI image layout written by build")
	fs.StringVar(&o.Repository, "repository", "cirrus-sync", "`name` of the repository (the stack's syncImageRepository context)")
	fs.StringVar(&o.Registry, "registry", "", "push to this plain registry `host[:port]` instead of ECR (no AWS)")
	fs.StringVar(&o.Region, "region", "", "AWS `region` of the ECR registry (default: AWS_REGION or the profile's)")
	fs.StringVar(&o.Tag, "tag", "", "`tag` to set (default: the version the image was built with)")
	fs.BoolVar(&o.AnyArch, "any-arch", false, "push to ECR an image that is not linux/arm64 (the stack's task runs arm64)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	pushed, err := push(ctx, o, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, pushed.Digest)
	if pushed.Tag != "" {
		fmt.Fprintln(stdout, pushed.Tag)
	}
	return nil
}

// pushed names what push wrote: the image by digest, and its tag.
type pushed struct {
	Digest name.Digest
	Tag    string // repository:tag, or empty
}

// push pushes the layout's image to the registry o names.
func push(ctx context.Context, o pushOptions, progress io.Writer) (pushed, error) {
	if o.Repository == "" {
		return pushed{}, fmt.Errorf("push: -repository: a repository name is needed")
	}
	img, err := readLayout(o.Layout)
	if err != nil {
		return pushed{}, fmt.Errorf("push: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return pushed{}, fmt.Errorf("push: read the image config: %w", err)
	}
	// The stack's Fargate task is ARM64: an amd64 image would deploy and
	// then fail every task start with "exec format error".
	if o.Registry == "" && !o.AnyArch && (cf.OS != "linux" || cf.Architecture != "arm64") {
		return pushed{}, fmt.Errorf("push: the image in %s is %s/%s, the stack's task runs linux/arm64: build it with -arch arm64 (make image), or push with -any-arch", o.Layout, cf.OS, cf.Architecture)
	}
	tag := o.Tag
	if tag == "" {
		tag = cf.Config.Labels[versionLabel]
	}
	var repo name.Repository
	auth := authn.Anonymous
	if o.Registry != "" {
		repo, err = name.NewRepository(o.Registry + "/" + o.Repository)
		if err != nil {
			return pushed{}, fmt.Errorf("push: -registry/-repository: %w", err)
		}
	} else {
		repo, auth, err = ecrTarget(ctx, o.Region, o.Repository, progress)
		if err != nil {
			return pushed{}, fmt.Errorf("push: %w", err)
		}
	}
	return pushImage(ctx, img, repo, tagName(tag), auth, progress)
}

// pushImage uploads img to repo by digest, then tags it (when tag is not
// empty). ECR and a plain registry go through here alike; only auth
// differs.
func pushImage(ctx context.Context, img v1.Image, repo name.Repository, tag string, auth authn.Authenticator, progress io.Writer) (pushed, error) {
	digest, err := img.Digest()
	if err != nil {
		return pushed{}, fmt.Errorf("push: %w", err)
	}
	ref := repo.Digest(digest.String())
	if size, err := imageSize(img); err == nil {
		fmt.Fprintf(progress, "pushing %s (%.1f MB)\n", ref, float64(size)/(1<<20))
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}
	if err := remote.Write(ref, img, opts...); err != nil {
		return pushed{}, fmt.Errorf("push %s: %w", ref, err)
	}
	p := pushed{Digest: ref}
	if tag == "" {
		return p, nil
	}
	t := repo.Tag(tag)
	if err := remote.Tag(t, img, opts...); err != nil {
		return pushed{}, fmt.Errorf("tag %s: %w", t, err)
	}
	p.Tag = t.String()
	return p, nil
}

// tagName turns a version (git describe output, which may hold "/" or "+")
// into a valid tag: letters, digits, "_", "." and "-", at most 128, not
// starting with "." or "-".
func tagName(version string) string {
	t := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			return r
		}
		return '-'
	}, version)
	if t != "" && (t[0] == '.' || t[0] == '-') {
		t = "v" + t
	}
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}

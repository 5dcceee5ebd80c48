package fakes3

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// disk is the in-memory backend with each object written through to a
// folder, <dir>/<bucket>/data/<escaped key> and its metadata beside it in
// meta/, and read back when it opens: the embedded table survives a restart
// of `cirrus serve` (its snapshot), so must the media its items point to.
// gofakes3's own file backend would need another module (afero).
type disk struct {
	*s3mem.Backend
	dir string
	// volatile is a bucket kept in memory only (the large responses,
	// which last minutes).
	volatile string
}

func openDisk(dir, volatile string) (*disk, error) {
	d := &disk{Backend: s3mem.New(), dir: dir, volatile: volatile}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	buckets, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, b := range buckets {
		if !b.IsDir() {
			continue
		}
		if err := d.Backend.CreateBucket(b.Name()); err != nil {
			return nil, fmt.Errorf("load bucket %s: %w", b.Name(), err)
		}
		files, err := os.ReadDir(filepath.Join(dir, b.Name(), "data"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			key, err := url.PathUnescape(f.Name())
			if err != nil {
				continue // not a file this backend wrote
			}
			body, err := os.ReadFile(filepath.Join(dir, b.Name(), "data", f.Name()))
			if err != nil {
				return nil, err
			}
			meta := map[string]string{}
			if doc, err := os.ReadFile(filepath.Join(dir, b.Name(), "meta", f.Name())); err == nil {
				json.Unmarshal(doc, &meta)
			}
			if _, err := d.Backend.PutObject(b.Name(), key, meta, bytes.NewReader(body), int64(len(body)), nil); err != nil {
				return nil, fmt.Errorf("load %s/%s: %w", b.Name(), key, err)
			}
		}
	}
	return d, nil
}

func (d *disk) paths(bucket, key string) (data, meta string) {
	name := url.PathEscape(key)
	return filepath.Join(d.dir, bucket, "data", name), filepath.Join(d.dir, bucket, "meta", name)
}

func (d *disk) CreateBucket(name string) error {
	if err := d.Backend.CreateBucket(name); err != nil {
		return err
	}
	if name == d.volatile {
		return nil
	}
	for _, sub := range []string{"data", "meta"} {
		if err := os.MkdirAll(filepath.Join(d.dir, name, sub), 0o700); err != nil {
			return err
		}
	}
	return nil
}

func (d *disk) PutObject(bucket, key string, meta map[string]string, input io.Reader, size int64, cond *gofakes3.PutConditions) (gofakes3.PutObjectResult, error) {
	if bucket == d.volatile {
		return d.Backend.PutObject(bucket, key, meta, input, size, cond)
	}
	body, err := io.ReadAll(input)
	if err != nil {
		return gofakes3.PutObjectResult{}, err
	}
	res, err := d.Backend.PutObject(bucket, key, meta, bytes.NewReader(body), size, cond)
	if err != nil {
		return res, err
	}
	data, metaPath := d.paths(bucket, key)
	doc, _ := json.Marshal(meta)
	if err := os.WriteFile(metaPath, doc, 0o600); err != nil {
		return res, err
	}
	return res, os.WriteFile(data, body, 0o600)
}

func (d *disk) DeleteObject(bucket, key string) (gofakes3.ObjectDeleteResult, error) {
	res, err := d.Backend.DeleteObject(bucket, key)
	if err == nil && bucket != d.volatile {
		data, meta := d.paths(bucket, key)
		os.Remove(data)
		os.Remove(meta)
	}
	return res, err
}

func (d *disk) DeleteMulti(bucket string, keys ...string) (gofakes3.MultiDeleteResult, error) {
	res, err := d.Backend.DeleteMulti(bucket, keys...)
	if err == nil && bucket != d.volatile {
		for _, k := range res.Deleted {
			data, meta := d.paths(bucket, k.Key)
			os.Remove(data)
			os.Remove(meta)
		}
	}
	return res, err
}

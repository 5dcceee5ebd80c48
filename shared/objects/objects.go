// Package objects is Cirrus's one wrapper of S3 (service/s3 of the AWS SDK):
// a bucket in AWS, or in any S3 API at an endpoint, such as the embedded one
// of `cirrus serve` and the tests (shared/bigbody/fakes3). shared/bigbody
// spills large answers into a bucket through it and shared/media keeps
// uploaded files in one.
package objects

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cirrus-matrix/cirrus/shared/gate"
)

// ErrNotFound is an object that is not in the bucket.
var ErrNotFound = errors.New("object not found")

// Bucket is one S3 bucket. It is safe for concurrent use.
type Bucket struct {
	client  *s3.Client
	presign *s3.PresignClient
	name    string
}

// Open opens the bucket name with the default AWS configuration, or at
// endpoint (path-style, no response checksums, local credentials unless the
// environment has some) when it is not empty.
func Open(ctx context.Context, name, endpoint string) (*Bucket, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if endpoint != "" {
		if os.Getenv("AWS_REGION") == "" && os.Getenv("AWS_DEFAULT_REGION") == "" {
			opts = append(opts, awsconfig.WithRegion("us-east-1"))
		}
		if os.Getenv("AWS_ACCESS_KEY_ID") == "" && os.Getenv("AWS_PROFILE") == "" {
			opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
		}
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("open bucket: aws config: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
			o.UsePathStyle = true
			// Local S3 APIs send no checksum headers and may not read
			// aws-chunked uploads with trailing checksums.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
	})
	return &Bucket{client: client, presign: s3.NewPresignClient(client), name: name}, nil
}

// Name is the bucket's name.
func (b *Bucket) Name() string { return b.name }

// Client is the S3 client, for tests and for creating a local bucket.
func (b *Bucket) Client() *s3.Client { return b.client }

// Put stores body under key with the Content-Type and Content-Encoding a
// GET of it answers with (an empty encoding for none), never to be cached:
// what shared/bigbody spills is one answer to one request.
func (b *Bucket) Put(ctx context.Context, key string, body []byte, contentType, contentEncoding string) error {
	return b.PutObject(ctx, key, body, Meta{ContentType: contentType, ContentEncoding: contentEncoding, CacheControl: "no-store"})
}

// Meta is what S3 keeps with an object and sends back with it.
type Meta struct {
	ContentType, ContentEncoding, CacheControl string
	// Size is the object's length in bytes; ignored by PutObject.
	Size int64
}

// PutObject stores body under key with m, replacing any object there.
func (b *Bucket) PutObject(ctx context.Context, key string, body []byte, m Meta) error {
	in := &s3.PutObjectInput{
		Bucket:        aws.String(b.name),
		Key:           aws.String(key),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
	}
	if m.ContentType != "" {
		in.ContentType = aws.String(m.ContentType)
	}
	if m.ContentEncoding != "" {
		in.ContentEncoding = aws.String(m.ContentEncoding)
	}
	if m.CacheControl != "" {
		in.CacheControl = aws.String(m.CacheControl)
	}
	if err := gate.Wait(ctx); err != nil {
		return fmt.Errorf("put object %s: %w", key, err)
	}
	if _, err := b.client.PutObject(ctx, in); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// Get opens the object at key for reading, streamed from S3: the caller
// closes it. A missing object is ErrNotFound.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, Meta, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.name), Key: aws.String(key)})
	if err != nil {
		return nil, Meta{}, fmt.Errorf("get %s: %w", key, notFound(err))
	}
	return out.Body, Meta{ContentType: aws.ToString(out.ContentType), ContentEncoding: aws.ToString(out.ContentEncoding),
		CacheControl: aws.ToString(out.CacheControl), Size: aws.ToInt64(out.ContentLength)}, nil
}

// Head reads the object's Meta without its body. A missing object is
// ErrNotFound.
func (b *Bucket) Head(ctx context.Context, key string) (Meta, error) {
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.name), Key: aws.String(key)})
	if err != nil {
		return Meta{}, fmt.Errorf("head %s: %w", key, notFound(err))
	}
	return Meta{ContentType: aws.ToString(out.ContentType), ContentEncoding: aws.ToString(out.ContentEncoding),
		CacheControl: aws.ToString(out.CacheControl), Size: aws.ToInt64(out.ContentLength)}, nil
}

// Delete removes the object at key; removing a missing object is not an
// error, as in S3.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := gate.Wait(ctx); err != nil {
		return fmt.Errorf("delete object %s: %w", key, err)
	}
	if _, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.name), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// List returns the keys under prefix, in key order, all pages of them: for
// tests and operators' tools, not for requests.
func (b *Bucket) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: aws.String(b.name), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}

// Presign returns a presigned GET URL of key lasting ttl.
func (b *Bucket) Presign(ctx context.Context, key string, ttl time.Duration) (string, error) {
	return b.PresignGet(ctx, key, ttl, "", "")
}

// PresignGet is Presign with the Content-Type and Content-Disposition S3
// answers the GET with instead of the stored ones, where not empty.
func (b *Bucket) PresignGet(ctx context.Context, key string, ttl time.Duration, contentType, disposition string) (string, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(b.name), Key: aws.String(key)}
	if contentType != "" {
		in.ResponseContentType = aws.String(contentType)
	}
	if disposition != "" {
		in.ResponseContentDisposition = aws.String(disposition)
	}
	req, err := b.presign.PresignGetObject(ctx, in, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", fmt.Errorf("presign %s: %w", key, err)
	}
	return req.URL, nil
}

// CreateBucket makes the bucket unless it exists: for a local S3 API.
func (b *Bucket) CreateBucket(ctx context.Context) error {
	if _, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b.name)}); err == nil {
		return nil
	}
	if _, err := b.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b.name)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", b.name, err)
	}
	return nil
}

// notFound makes S3's answers for a missing key wrap ErrNotFound: NoSuchKey
// from GetObject, a bare 404 NotFound from HeadObject, which has no body.
func notFound(err error) error {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	return err
}

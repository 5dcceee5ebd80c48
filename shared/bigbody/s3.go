package bigbody

import (
	"context"

	"github.com/cirrus-matrix/cirrus/shared/objects"
)

// S3 is a Bucket in S3, or in any S3 API at an endpoint: shared/objects's
// bucket, the one S3 wrapper of the project.
type S3 = objects.Bucket

var _ Bucket = (*S3)(nil)

// OpenS3 opens the bucket name with the default AWS configuration, or at
// endpoint (path-style, no response checksums, local credentials unless the
// environment has some) when it is not empty.
func OpenS3(ctx context.Context, name, endpoint string) (*S3, error) {
	return objects.Open(ctx, name, endpoint)
}

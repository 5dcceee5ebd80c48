package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/config"
)

// TestLoad_Media: the media settings' defaults, their environment variables,
// and the upload limit Lambda cannot exceed.
func TestLoad_Media(t *testing.T) {
	// The largest body whose base64 and a 64 KB rest of the event fit in
	// Lambda's 6 MB.
	if got := int64(config.MaxLambdaUpload); got != 4669440 || (got+2)/3*4+64<<10 > config.LambdaPayloadLimit {
		t.Fatalf("MaxLambdaUpload %d: its base64 and 64 KB must fit in %d", got, config.LambdaPayloadLimit)
	}
	for name, load := range map[string]func(config.LookupFunc) (*config.Config, error){
		"local":  func(l config.LookupFunc) (*config.Config, error) { return config.Load("", l) },
		"lambda": config.LoadLambda,
	} {
		c, err := load(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org"}))
		if err != nil {
			t.Fatal(err)
		}
		if c.MaxUploadSize != config.MaxLambdaUpload || c.MediaBucket != "" || !c.MediaFreezeTime().IsZero() ||
			c.MaxPendingMediaUploads != 5 || c.UnusedExpiration() != 24*time.Hour {
			t.Errorf("%s defaults: upload %d, bucket %q, freeze %v, pending %d, unused %v", name, c.MaxUploadSize, c.MediaBucket,
				c.MediaFreezeTime(), c.MaxPendingMediaUploads, c.UnusedExpiration())
		}
	}
	c, err := config.Load("", env(map[string]string{"CIRRUS_MEDIA_BUCKET": "m", "CIRRUS_MAX_UPLOAD_SIZE": "104857600",
		"CIRRUS_MEDIA_FREEZE": "2024-09-01", "CIRRUS_UNUSED_EXPIRATION_TIME": "1h", "CIRRUS_MAX_PENDING_MEDIA_UPLOADS": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.MediaBucket != "m" || c.MaxUploadSize != 100<<20 || !c.MediaFreezeTime().Equal(time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC)) ||
		c.UnusedExpiration() != time.Hour || c.MaxPendingMediaUploads != 2 {
		t.Errorf("from the environment: %+v", c)
	}
	// cirrus serve may take more; a Lambda function cannot.
	_, err = config.LoadLambda(env(map[string]string{"CIRRUS_SERVER_NAME": "example.org", "CIRRUS_MAX_UPLOAD_SIZE": "104857600"}))
	if err == nil || !strings.Contains(err.Error(), "max_upload_size") {
		t.Errorf("lambda with 100 MB uploads: %v, want an error naming max_upload_size", err)
	}
	for key, v := range map[string]string{"CIRRUS_MEDIA_FREEZE": "yesterday", "CIRRUS_MAX_UPLOAD_SIZE": "0",
		"CIRRUS_UNUSED_EXPIRATION_TIME": "soon", "CIRRUS_MAX_PENDING_MEDIA_UPLOADS": "0"} {
		want := strings.ToLower(strings.TrimPrefix(key, "CIRRUS_"))
		if _, err := config.Load("", env(map[string]string{key: v})); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s=%s: %v, want an error naming %s", key, v, err, want)
		}
	}
}

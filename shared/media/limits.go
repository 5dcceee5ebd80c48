package media

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Limits bound what one user uploads: how often (Rate, counted in the
// table by shared/ratelimit so that every instance sees the same count)
// and how many bytes over time (Uploads, Synapse's media_upload_limits).
type Limits struct {
	Limiter *ratelimit.Limiter
	// Rate counts uploads per user; off when its Burst is 0.
	Rate ratelimit.Limit
	// Uploads are byte budgets per period; none, no budget.
	Uploads []UploadLimit
}

// UploadLimit allows a user MaxBytes of uploads in any Period.
type UploadLimit struct {
	Period   time.Duration
	MaxBytes int64
}

// RateLimit makes Synapse's rc_* pair (per_second, burst_count) a fixed
// window limit: burst_count uploads per burst_count/per_second seconds,
// the time the token bucket takes to refill. 0 for either turns it off.
func RateLimit(name string, perSecond, burstCount float64) ratelimit.Limit {
	if perSecond <= 0 || burstCount <= 0 {
		return ratelimit.Limit{Name: name}
	}
	window := time.Duration(math.Ceil(burstCount / perSecond * float64(time.Second)))
	return ratelimit.Limit{Name: name, Burst: int64(burstCount), Window: max(window, time.Second)}
}

// errUploadLimit is Synapse's answer past media_upload_limits: 400
// M_RESOURCE_LIMIT_EXCEEDED, "Media upload limit exceeded"
// (synapse/media/media_repository.py, create_or_update_content).
var errUploadLimit = &httpapi.Error{Status: http.StatusBadRequest, Code: "M_RESOURCE_LIMIT_EXCEEDED",
	Message: "Media upload limit exceeded"}

// allowUpload counts an upload of size bytes by userID against its rate
// (429 M_LIMIT_EXCEEDED with retry_after_ms) and refuses it when it would
// pass a byte budget (400 M_RESOURCE_LIMIT_EXCEEDED).
//
// Cost: one UpdateItem for the rate; for the budgets, one Query of the
// user's index partition since the longest period, shorter periods summed
// from it. The index is eventually consistent: uploads in flight at once
// may pass a budget by what they carry.
func (s *Service) allowUpload(ctx context.Context, userID string, size int64) error {
	l := s.Limits
	if err := l.Limiter.Allow(ctx, l.Rate, userID); err != nil {
		return err
	}
	if len(l.Uploads) == 0 {
		return nil
	}
	longest := slices.MaxFunc(l.Uploads, func(a, b UploadLimit) int { return cmp.Compare(a.Period, b.Period) }).Period
	now := s.now()
	since := now.Add(-longest).UnixMilli()
	var sizes []struct {
		UploadedMS int64
		Size       int64
	}
	cursor := ""
	for {
		var page []item
		next, err := s.Store.QueryPage(ctx, store.Query{PK: userPartition(userID), Index: "gsi1",
			From: fmt.Sprintf("%013d", since), Cursor: cursor}, &page)
		if err != nil {
			return fmt.Errorf("upload limits of %s: %w", userID, err)
		}
		for _, it := range page {
			if it.State == stateUploaded {
				sizes = append(sizes, struct{ UploadedMS, Size int64 }{it.UploadedMS, it.Size})
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	for _, lim := range l.Uploads {
		from := now.Add(-lim.Period).UnixMilli()
		total := size
		for _, u := range sizes {
			if u.UploadedMS >= from {
				total += u.Size
			}
		}
		if total > lim.MaxBytes {
			return errUploadLimit
		}
	}
	return nil
}

package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/urlpreview"
)

// PreviewCacheTime is how long a preview is served from the table before
// its URL is fetched again: Synapse's, which spiders a URL at most once an
// hour (url_previewer.py, ONE_HOUR).
const PreviewCacheTime = time.Hour

// DefaultPreviewLimit bounds the fetches a user's previews cause: previews
// served from the table are not counted, so reading a busy room costs
// nothing against it, while a client cannot make the server spider an
// unbounded list of fresh URLs. Synapse has no setting for it; the spec
// marks preview_url rate-limited.
var DefaultPreviewLimit = ratelimit.Limit{Name: "preview_url.user", Burst: 30, Window: time.Minute}

// Previews serves URL previews (url_preview_enabled) over the content
// repository: an og:image is stored as local media of the user who asked,
// as Synapse records it (store_local_media with the requester's user_id),
// and each preview is kept in the table for PreviewCacheTime.
type Previews struct {
	Media     *Service
	Previewer *urlpreview.Previewer
	// Limiter counts the fetches of each user under Limit; nil counts
	// nothing.
	Limiter *ratelimit.Limiter
	Limit   ratelimit.Limit
}

// previewItem is one URL's cached preview (docs/storage.md, "URL
// previews"): the Open Graph answer as JSON, gone with expires_at.
type previewItem struct {
	PK        string `dynamodbav:"pk"`
	SK        string `dynamodbav:"sk"`
	URL       string `dynamodbav:"url"`
	OG        string `dynamodbav:"og"`
	FetchedMS int64  `dynamodbav:"fetched_ms"`
	ExpiresAt int64  `dynamodbav:"expires_at"`
}

// previewKey is keyed by the URL's SHA-256: a URL may be longer than a
// partition key, and every spelling the client sends is its own preview,
// as in Synapse's url_cache.
func previewKey(rawURL string) store.Key {
	h := sha256.Sum256([]byte(rawURL))
	return store.Key{PK: "urlpreview|" + hex.EncodeToString(h[:]), SK: "urlpreview"}
}

// Register adds GET /_matrix/client/v1/media/preview_url and the legacy
// /_matrix/media/v3/preview_url, both authenticated. The server calls it
// only when url_preview_enabled is on: off, the paths are not routed and
// answer 404 M_UNRECOGNIZED, as Synapse's do, which registers its
// PreviewURLServlet only `if hs.config.media.url_preview_enabled`
// (synapse/rest/client/media.py, register_servlets).
func (p *Previews) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	h := requireAuth(httpapi.Handle(p.handlePreview))
	rt.HandleFunc("GET /_matrix/client/v1/media/preview_url", h)
	rt.HandleFunc("GET /_matrix/media/v3/preview_url", h)
}

// handlePreview serves GET /_matrix/client/v1/media/preview_url and the
// legacy /_matrix/media/v3/preview_url.
// https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediapreview_url
//
// ts, the point in time the client would like a preview of, is checked
// and otherwise unused: the spec lets the server answer with a newer
// preview, and only the latest is kept.
func (p *Previews) handlePreview(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	rawURL := q.Get("url")
	if rawURL == "" {
		return httpapi.MissingParam("url is required: the URL to preview")
	}
	if ts := q.Get("ts"); ts != "" {
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			return httpapi.InvalidParam("ts must be a timestamp in milliseconds")
		}
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		// Synapse hands any scheme to its HTTP client and answers its
		// failure with a 500; a URL that cannot be previewed is the
		// client's input, and says so.
		return httpapi.InvalidParam("url must be an absolute http or https URL")
	}
	og, err := p.preview(r.Context(), accounts.Caller(r.Context()).UserID, rawURL)
	if err != nil {
		if r.Context().Err() != nil {
			return err
		}
		return previewError(r.Context(), u, err)
	}
	httpapi.WriteJSON(w, http.StatusOK, og)
	return nil
}

// preview is rawURL's cached preview, else a fresh one, fetched within
// userID's limit, its og:image stored as userID's media, then cached.
func (p *Previews) preview(ctx context.Context, userID, rawURL string) (map[string]any, error) {
	key := previewKey(rawURL)
	var it previewItem
	err := p.Media.Store.Get(ctx, key, &it)
	if err == nil && it.URL == rawURL {
		og := map[string]any{}
		if err := json.Unmarshal([]byte(it.OG), &og); err != nil {
			return nil, fmt.Errorf("preview: decode cached %s: %w", key.PK, err)
		}
		return og, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("preview: read cache: %w", err)
	}
	if err := p.Limiter.Allow(ctx, p.Limit, userID); err != nil {
		return nil, err
	}
	og, img, err := p.Previewer.Preview(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	if img != nil {
		if err := p.storeImage(ctx, userID, og, img); err != nil {
			return nil, err
		}
	}
	body, err := json.Marshal(og)
	if err != nil {
		return nil, fmt.Errorf("preview: encode: %w", err)
	}
	now := p.Media.now()
	if err := p.Media.Store.Put(ctx, previewItem{PK: key.PK, SK: key.SK, URL: rawURL, OG: string(body),
		FetchedMS: now.UnixMilli(), ExpiresAt: now.Add(PreviewCacheTime).Unix()}); err != nil {
		return nil, fmt.Errorf("preview: cache: %w", err)
	}
	return og, nil
}

// storeImage uploads img as userID's media and points og:image at it. An
// image larger than an upload may be, or a server without a media bucket,
// gives a preview without one, as Synapse's does when its image fails.
func (p *Previews) storeImage(ctx context.Context, userID string, og map[string]any, img *urlpreview.Image) error {
	if int64(len(img.Bytes)) > p.Media.MaxUploadSize {
		delete(og, "og:image")
		return nil
	}
	m, err := p.Media.Upload(ctx, userID, Content{Body: img.Bytes, ContentType: img.ContentType})
	if errors.Is(err, ErrNoBucket) {
		delete(og, "og:image")
		return nil
	}
	if err != nil {
		return fmt.Errorf("preview: store og:image: %w", err)
	}
	img.Apply(og, m.URI())
	return nil
}

// previewError answers a failed fetch as Synapse does (synapse/http/client.py,
// synapse/media/url_previewer.py), with 502 where Synapse gives 500 for an
// upstream failure: a URL whose own address is forbidden is 403 "IP address
// blocked" (BlocklistingAgentWrapper; errcode M_FORBIDDEN here, M_UNKNOWN
// there); a name that resolves to a forbidden address is told apart from one
// that does not resolve no more than Synapse does (502 "DNS resolution
// failure"), so that the answer does not map the operator's network; a body
// over max_spider_size is 502 M_TOO_LARGE; any other failure, an error
// status included, 502 M_UNKNOWN.
func previewError(ctx context.Context, u *url.URL, err error) error {
	var me *httpapi.Error
	switch {
	case errors.As(err, &me):
		return err
	case errors.Is(err, urlpreview.ErrForbiddenAddress):
		if _, literal := netip.ParseAddr(u.Hostname()); literal == nil {
			return httpapi.Errorf(http.StatusForbidden, "M_FORBIDDEN", "IP address blocked")
		}
		return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "DNS resolution failure during URL preview generation")
	case errors.Is(err, urlpreview.ErrTooLarge):
		return httpapi.Errorf(http.StatusBadGateway, "M_TOO_LARGE", "the page is larger than this server previews (max_spider_size)")
	case errors.Is(err, urlpreview.ErrStatus):
		return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "the page answered with an error status")
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "DNS resolution failure during URL preview generation")
	}
	httpapi.Logger(ctx).InfoContext(ctx, "url preview failed", "host", u.Hostname(), "err", err)
	return httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "failed to download the page")
}

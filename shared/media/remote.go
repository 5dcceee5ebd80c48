package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/store"

	"github.com/cirrus-matrix/cirrus/shared/gate"
)

// RemoteError is a failure to fetch another server's media that a client
// is told of: 502, as the spec's download answers "content too large for
// the server to serve" (M_TOO_LARGE) and as Synapse answers a server it
// cannot reach ("Failed to fetch remote media", M_UNKNOWN). It satisfies
// httpapi.Public, so it goes out as it is through the download handler.
type RemoteError struct {
	Code, Msg string
	Err       error
}

func (e *RemoteError) Error() string { return e.Msg }

// Unwrap is the cause, kept for the log.
func (e *RemoteError) Unwrap() error { return e.Err }

// Matrix is the status and errcode the error goes out with.
func (e *RemoteError) Matrix() (int, string) { return http.StatusBadGateway, e.Code }

// Fetcher is Remote over federation: another server's media is asked of
// that server (GET /_matrix/federation/v1/media/download, spec v1.11, or
// the deprecated /_matrix/media/v3/download of a server that does not
// know it), kept in the bucket under remote/ and recorded in the table as
// the server's media ID, so that it is fetched once while the cache lasts.
type Fetcher struct {
	Service *Service
	Client  *fedclient.Client
	// MaxSize bounds a remote file; the service's MaxUploadSize when 0.
	MaxSize int64
	// IPRangeBlacklist and IPRangeWhitelist bound where a Location part
	// may send the plain GET (ip_range_blacklist, ip_range_whitelist);
	// nil is fedclient.DefaultIPRangeBlacklist.
	IPRangeBlacklist, IPRangeWhitelist []string
	// SkipVerify accepts any certificate at a Location, as federation
	// does when federation_verify_certificates is false.
	SkipVerify bool
	Logger     *slog.Logger

	flight   singleflight.Group
	initOnce sync.Once
	plain    *http.Client
	initErr  error
}

var _ Remote = (*Fetcher)(nil)

// CacheLifetime is how long a cached remote file is used: a day less than
// the stack's lifecycle rule keeps objects under remote/ (30 days by
// default, infra mediaRemoteCacheDays), so the item lapses before its
// object and the next request fetches it again.
const CacheLifetime = 29 * 24 * time.Hour

// accessEvery is how often a cached file's last access is written: at most
// once a day, a write on the first download of the day only.
const accessEvery = 24 * time.Hour

// RemoteKey is the bucket key of serverName's mediaID cached here: under
// remote/, which the stack's lifecycle rule expires.
func RemoteKey(serverName, mediaID string) string {
	return "remote/" + serverName + "/" + mediaID
}

// remoteThumbKey is the bucket key of a cached remote thumbnail.
func remoteThumbKey(serverName, mediaID string, req ThumbnailRequest) string {
	return RemoteKey(serverName, mediaID) + "/thumbnail/" + thumbName(req)
}

func thumbName(req ThumbnailRequest) string {
	s := fmt.Sprintf("%dx%d-%s", req.Width, req.Height, req.Method)
	if req.Animated {
		s += "-animated"
	}
	return s
}

// remoteItem is another server's media ID cached here, on the key of
// Service.Get (so that a download finds it as it finds local media):
// where it came from (server), its size, type and name, the bucket key of
// its content (object), and when it was last downloaded. expires_at makes
// the store read it as absent once CacheLifetime has passed.
type remoteItem struct {
	PK           string `dynamodbav:"pk"`
	SK           string `dynamodbav:"sk"`
	ServerName   string `dynamodbav:"server"`
	MediaID      string `dynamodbav:"media_id"`
	State        string `dynamodbav:"state"`
	Origin       string `dynamodbav:"origin"`
	Size         int64  `dynamodbav:"size"`
	ContentType  string `dynamodbav:"content_type,omitempty"`
	Filename     string `dynamodbav:"filename,omitempty"`
	SHA256       string `dynamodbav:"sha256,omitempty"`
	Object       string `dynamodbav:"object"`
	CreatedMS    int64  `dynamodbav:"created_ms"`
	UploadedMS   int64  `dynamodbav:"uploaded_ms"`
	LastAccessMS int64  `dynamodbav:"last_access_ms"`
	ExpiresAt    int64  `dynamodbav:"expires_at"`
	// QuarantinedBy is the admin who quarantined the media (admin.go):
	// never served, never fetched again, kept by touch's write.
	QuarantinedBy string `dynamodbav:"quarantined_by,omitempty"`
}

// originFederation and originLegacy say which endpoint a file came from.
const (
	originFederation = "federation"
	originLegacy     = "legacy"
)

func (f *Fetcher) maxSize() int64 {
	if f.MaxSize > 0 {
		return f.MaxSize
	}
	return f.Service.MaxUploadSize
}

func (f *Fetcher) logger() *slog.Logger {
	if f.Logger != nil {
		return f.Logger
	}
	return slog.Default()
}

// Media returns serverName's mediaID from the cache, or fetches it from
// that server first: ErrNotFound when the server has none, a *RemoteError
// when it cannot be fetched or is over MaxSize. Concurrent requests in
// this instance for the same media fetch once; two instances may both
// fetch, which writes the same object and item twice, harmlessly.
func (f *Fetcher) Media(ctx context.Context, serverName, mediaID string, timeout time.Duration) (Media, error) {
	if !validMediaID(mediaID) {
		return Media{}, ErrNotFound
	}
	var it remoteItem
	err := f.Service.Store.Get(ctx, mediaKey(serverName, mediaID), &it)
	if err == nil && (it.QuarantinedBy != "" || it.State == stateQuarantined) {
		return Media{}, ErrNotFound
	}
	if err == nil && it.State == stateUploaded {
		f.touch(ctx, it)
		return it.media(), nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return Media{}, fmt.Errorf("remote media %s/%s: %w", serverName, mediaID, err)
	}
	if f.Service.Objects == nil {
		return Media{}, ErrNotFound
	}
	v, err, _ := f.flight.Do(serverName+"/"+mediaID, func() (any, error) {
		// The first caller's context bounds the fetch that the others
		// share; none of them outlives MaxWait.
		return f.fetch(ctx, serverName, mediaID, timeout)
	})
	if err != nil {
		return Media{}, err
	}
	return v.(Media), nil
}

// touch writes the last access of a cached file when the one recorded is
// over a day old. Its failure only loses a date, so it is logged.
func (f *Fetcher) touch(ctx context.Context, it remoteItem) {
	now := f.Service.now()
	if now.Sub(time.UnixMilli(it.LastAccessMS)) < accessEvery {
		return
	}
	it.LastAccessMS = now.UnixMilli()
	if err := f.Service.Store.Put(ctx, it); err != nil {
		f.logger().WarnContext(ctx, "remote media: last access", "server", it.ServerName, "media_id", it.MediaID, "error", err)
	}
}

func (it remoteItem) media() Media {
	return Media{ServerName: it.ServerName, MediaID: it.MediaID, Size: it.Size, ContentType: it.ContentType,
		Filename: it.Filename, SHA256: it.SHA256, Object: it.Object,
		Created: time.UnixMilli(it.CreatedMS), Uploaded: time.UnixMilli(it.UploadedMS)}
}

// fetched is a file as a remote server sent it.
type fetched struct {
	Body                  []byte
	ContentType, Filename string
	Origin                string
}

func (f *Fetcher) fetch(ctx context.Context, serverName, mediaID string, timeout time.Duration) (Media, error) {
	ctx, cancel := context.WithTimeout(ctx, MaxWait)
	defer cancel()
	q := url.Values{"timeout_ms": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	got, err := f.fetchFederation(ctx, serverName, "/_matrix/federation/v1/media/download/"+url.PathEscape(mediaID)+"?"+q.Encode(), false)
	if e, ok := fedclient.AsError(err); ok && e.Status == http.StatusNotFound && e.Code == "M_UNRECOGNIZED" {
		// A server from before spec v1.11: the deprecated endpoint, with
		// allow_remote=false as the spec requires, so that it does not
		// fetch from a third server on this one's behalf.
		q.Set("allow_remote", "false")
		got, err = f.fetchFederation(ctx, serverName, "/_matrix/media/v3/download/"+url.PathEscape(serverName)+"/"+url.PathEscape(mediaID)+"?"+q.Encode(), true)
	}
	if err != nil {
		return Media{}, f.remoteErr(serverName, mediaID, err)
	}
	now := f.Service.now()
	sum := sha256.Sum256(got.Body)
	m := Media{ServerName: serverName, MediaID: mediaID, Size: int64(len(got.Body)), ContentType: got.ContentType,
		Filename: got.Filename, SHA256: hex.EncodeToString(sum[:]), Object: RemoteKey(serverName, mediaID), Created: now, Uploaded: now}
	if err := f.Service.Objects.PutObject(ctx, m.Object, got.Body, objects.Meta{ContentType: "application/octet-stream",
		CacheControl: "private, max-age=86400"}); err != nil {
		return Media{}, fmt.Errorf("cache remote media %s/%s: %w", serverName, mediaID, err)
	}
	it := remoteItem{PK: mediaKey(serverName, mediaID).PK, SK: "media", ServerName: serverName, MediaID: mediaID,
		State: stateUploaded, Origin: got.Origin, Size: m.Size, ContentType: m.ContentType, Filename: m.Filename,
		SHA256: m.SHA256, Object: m.Object, CreatedMS: now.UnixMilli(), UploadedMS: now.UnixMilli(),
		LastAccessMS: now.UnixMilli(), ExpiresAt: now.Add(CacheLifetime).Unix()}
	if err := f.Service.Store.Put(ctx, it); err != nil {
		return Media{}, fmt.Errorf("record remote media %s/%s: %w", serverName, mediaID, err)
	}
	return m, nil
}

// remoteErr maps a failed fetch to what the client is told: the remote's
// 404 is not found, its 504 not yet uploaded; anything else is a 502.
func (f *Fetcher) remoteErr(serverName, mediaID string, err error) error {
	if e, ok := fedclient.AsError(err); ok {
		switch {
		case e.Status == http.StatusNotFound:
			return fmt.Errorf("%s/%s: %w", serverName, mediaID, ErrNotFound)
		case e.Status == http.StatusGatewayTimeout && e.Code == "M_NOT_YET_UPLOADED":
			return fmt.Errorf("%s/%s: %w", serverName, mediaID, ErrNotYetUploaded)
		case e.Code == "M_TOO_LARGE":
			return &RemoteError{Code: "M_TOO_LARGE", Msg: "the remote media is too large for its server to serve", Err: err}
		}
	}
	if errors.Is(err, errTooLarge) || errors.Is(err, fedclient.ErrResponseTooLarge) {
		return &RemoteError{Code: "M_TOO_LARGE", Msg: fmt.Sprintf("the remote media is over the %d byte limit of this server", f.maxSize()), Err: err}
	}
	f.logger().Warn("remote media: fetch failed", "server", serverName, "media_id", mediaID, "error", err)
	return &RemoteError{Code: "M_UNKNOWN", Msg: "failed to fetch remote media from " + serverName, Err: err}
}

var errTooLarge = errors.New("remote media over the size limit")

// doer is the part of gomatrixserverlib's federation client that sends a
// built request and hands back the response unread.
type doer interface {
	DoHTTPRequest(ctx context.Context, req *http.Request) (*http.Response, error)
}

// fetchFederation sends a signed GET of path to serverName and reads the
// file it answers: a multipart/mixed answer of the federation endpoint,
// or the raw body of the legacy one.
func (f *Fetcher) fetchFederation(ctx context.Context, serverName, path string, legacy bool) (fetched, error) {
	req, err := f.Client.NewRequest(http.MethodGet, serverName, path, nil)
	if err != nil {
		return fetched{}, err
	}
	d, ok := f.Client.Federation().(doer)
	if !ok {
		return fetched{}, errors.New("federation client cannot stream responses")
	}
	res, err := d.DoHTTPRequest(ctx, req)
	if err != nil {
		return fetched{}, fmt.Errorf("get %s: %w", serverName, err)
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		return fetched{}, errorOf(serverName, res.StatusCode, body)
	}
	if legacy {
		body, err := f.readBounded(res.Body, res.ContentLength)
		if err != nil {
			return fetched{}, err
		}
		return fetched{Body: body, ContentType: res.Header.Get("Content-Type"), Filename: filenameOf(res.Header.Get("Content-Disposition")), Origin: originLegacy}.clean(), nil
	}
	mt, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return fetched{}, fmt.Errorf("%s answered %q, want multipart/mixed with a boundary", serverName, res.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(res.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return fetched{}, fmt.Errorf("%s: metadata part: %w", serverName, err)
	}
	// The metadata is always {} as of spec v1.16; read past it, bounded.
	if _, err := io.Copy(io.Discard, io.LimitReader(meta, 64<<10)); err != nil {
		return fetched{}, fmt.Errorf("%s: metadata part: %w", serverName, err)
	}
	part, err := mr.NextPart()
	if err != nil {
		return fetched{}, fmt.Errorf("%s: file part: %w", serverName, err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		got, err := f.fetchLocation(ctx, loc)
		got.Origin = originFederation
		return got.clean(), err
	}
	body, err := f.readBounded(part, -1)
	if err != nil {
		return fetched{}, err
	}
	return fetched{Body: body, ContentType: part.Header.Get("Content-Type"), Filename: filenameOf(part.Header.Get("Content-Disposition")),
		Origin: originFederation}.clean(), nil
}

// errorOf reads a remote's error answer as fedclient does.
func errorOf(serverName string, status int, body []byte) error {
	var doc struct {
		Code    string `json:"errcode"`
		Message string `json:"error"`
	}
	_ = json.Unmarshal(body, &doc) // a body that is not JSON leaves Code empty
	return &fedclient.Error{Destination: serverName, Status: status, Code: doc.Code, Message: doc.Message}
}

// readBounded reads r whole unless it is over maxSize (errTooLarge).
func (f *Fetcher) readBounded(r io.Reader, length int64) ([]byte, error) {
	limit := f.maxSize()
	if length > limit {
		return nil, fmt.Errorf("%d bytes: %w", length, errTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read remote media: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("over %d bytes: %w", limit, errTooLarge)
	}
	return body, nil
}

// fetchLocation is the plain GET of a Location part: https or http, to an
// address ip_range_blacklist allows, bounded as the rest of the fetch.
func (f *Fetcher) fetchLocation(ctx context.Context, loc string) (fetched, error) {
	if err := gate.Wait(ctx); err != nil {
		return fetched{}, err
	}
	u, err := url.Parse(loc)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fetched{}, fmt.Errorf("location %q is not an http(s) URL", loc)
	}
	client, err := f.plainClient()
	if err != nil {
		return fetched{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fetched{}, fmt.Errorf("location: %w", err)
	}
	res, err := client.Do(req)
	if err != nil {
		return fetched{}, fmt.Errorf("location: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fetched{}, fmt.Errorf("location %s answered %d", u.Host, res.StatusCode)
	}
	body, err := f.readBounded(res.Body, res.ContentLength)
	if err != nil {
		return fetched{}, err
	}
	return fetched{Body: body, ContentType: res.Header.Get("Content-Type"), Filename: filenameOf(res.Header.Get("Content-Disposition"))}, nil
}

// plainClient is the client of Location fetches: its dialer checks every
// address it connects to against the IP ranges (so a redirect or a DNS
// answer cannot reach a refused one), and it follows up to 5 redirects.
func (f *Fetcher) plainClient() (*http.Client, error) {
	f.initOnce.Do(func() {
		black := f.IPRangeBlacklist
		if black == nil {
			black = fedclient.DefaultIPRangeBlacklist
		}
		deny, err := fedclient.ParseRanges(append(append([]string{}, black...), "0.0.0.0/32", "::/128"))
		if err != nil {
			f.initErr = fmt.Errorf("ip_range_blacklist: %w", err)
			return
		}
		allow, err := fedclient.ParseRanges(f.IPRangeWhitelist)
		if err != nil {
			f.initErr = fmt.Errorf("ip_range_whitelist: %w", err)
			return
		}
		d := &net.Dialer{Timeout: 10 * time.Second, Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("dial %s: %w", address, err)
			}
			ip := ap.Addr().Unmap()
			if !inRanges(allow, ip) && inRanges(deny, ip) {
				return fmt.Errorf("dial %s: %w", address, fedclient.ErrAddressRefused)
			}
			return nil
		}}
		tr := &http.Transport{DialContext: d.DialContext, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
		if f.SkipVerify {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // #nosec G402 -- the operator's choice
		}
		f.plain = &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("location: stopped after 5 redirects")
			}
			return nil
		}}
	})
	return f.plain, f.initErr
}

func inRanges(ranges []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ranges {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clean keeps a content type that parses (else application/octet-stream)
// and a file name that is one line of at most 255 bytes.
func (g fetched) clean() fetched {
	if _, _, err := mime.ParseMediaType(g.ContentType); err != nil || len(g.ContentType) > 255 {
		g.ContentType = "application/octet-stream"
	}
	if len(g.Filename) > 255 || strings.ContainsAny(g.Filename, "\x00\r\n/\\") {
		g.Filename = ""
	}
	return g
}

// filenameOf is the filename of a Content-Disposition (filename* decoded).
func filenameOf(cd string) string {
	if cd == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(cd)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// Thumbnail returns a thumbnail of serverName's mediaID as that server
// makes it (GET /_matrix/federation/v1/media/thumbnail), cached under
// remote/ with an item per size; errors as Media's.
func (f *Fetcher) Thumbnail(ctx context.Context, serverName, mediaID string, req ThumbnailRequest, timeout time.Duration) ([]byte, string, error) {
	if !validMediaID(mediaID) || f.Service.Objects == nil {
		return nil, "", ErrNotFound
	}
	key := store.Key{PK: mediaKey(serverName, mediaID).PK, SK: "thumb|" + thumbName(req)}
	var it remoteItem
	if err := f.Service.Store.Get(ctx, key, &it); err == nil {
		body, _, err := f.Service.Objects.Get(ctx, it.Object)
		if err == nil {
			defer body.Close()
			b, err := io.ReadAll(body)
			return b, it.ContentType, err
		}
		if !errors.Is(err, objects.ErrNotFound) {
			return nil, "", fmt.Errorf("remote thumbnail %s/%s: %w", serverName, mediaID, err)
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, "", fmt.Errorf("remote thumbnail %s/%s: %w", serverName, mediaID, err)
	}
	v, err, _ := f.flight.Do("thumb/"+serverName+"/"+mediaID+"/"+thumbName(req), func() (any, error) {
		ctx, cancel := context.WithTimeout(ctx, MaxWait)
		defer cancel()
		q := url.Values{"width": {strconv.Itoa(req.Width)}, "height": {strconv.Itoa(req.Height)}, "method": {req.Method},
			"animated": {strconv.FormatBool(req.Animated)}, "timeout_ms": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
		got, err := f.fetchFederation(ctx, serverName, "/_matrix/federation/v1/media/thumbnail/"+url.PathEscape(mediaID)+"?"+q.Encode(), false)
		if err != nil {
			return nil, f.remoteErr(serverName, mediaID, err)
		}
		now := f.Service.now()
		object := remoteThumbKey(serverName, mediaID, req)
		if err := f.Service.Objects.PutObject(ctx, object, got.Body, objects.Meta{ContentType: "application/octet-stream"}); err != nil {
			return nil, fmt.Errorf("cache remote thumbnail: %w", err)
		}
		it := remoteItem{PK: key.PK, SK: key.SK, ServerName: serverName, MediaID: mediaID, State: stateUploaded, Origin: originFederation,
			Size: int64(len(got.Body)), ContentType: got.ContentType, Object: object, CreatedMS: now.UnixMilli(), UploadedMS: now.UnixMilli(),
			LastAccessMS: now.UnixMilli(), ExpiresAt: now.Add(CacheLifetime).Unix()}
		if err := f.Service.Store.Put(ctx, it); err != nil {
			return nil, fmt.Errorf("record remote thumbnail: %w", err)
		}
		return got, nil
	})
	if err != nil {
		return nil, "", err
	}
	got := v.(fetched)
	return bytes.Clone(got.Body), got.ContentType, nil
}

// ContentDisposition is the Content-Disposition media goes out with
// (inline for the safe types, attachment otherwise, RFC 6266 names): for
// the federation endpoints, which answer from another package.
func ContentDisposition(contentType, filename string) string {
	return contentDisposition(contentType, filename)
}

// RedirectSize is the size above which a download goes by a presigned URL
// of the bucket rather than through the function.
func (s *Service) RedirectSize() int64 { return s.redirectOver() }

// Package urlpreview fetches a web page for GET /_matrix/client/v1/media/preview_url
// and reads its Open Graph data, without letting a user make the server reach
// addresses it must not (SSRF): loopback, private, link-local and the other
// ranges of Synapse's url_preview_ip_range_blacklist.
//
// The guard lives in the dialer, not in a check before the request: every
// host (the first URL's and each redirect's) is resolved here, refused if any
// of its addresses is forbidden, and only the addresses that were checked are
// dialed, so a DNS answer that changes between check and connect (rebinding)
// cannot slip through. The socket's Control hook checks the address actually
// connected to once more. Environment proxies are never used, since a proxy
// would connect on our behalf to an address we never saw.
//
// The package stores nothing: a fetched og:image comes back as bytes for the
// media service to store, which then calls Image.Apply with its mxc URI.
package urlpreview

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // og:image dimensions for GIF
	_ "image/jpeg"
	_ "image/png"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"github.com/cirrus-matrix/cirrus/shared/gate"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxBytes  = 10 << 20
	DefaultTimeout   = 10 * time.Second
	DefaultUserAgent = "Cirrus (bot; +https://github.com/cirrus-matrix/cirrus)"
	maxRedirects     = 5
	maxTitleRunes    = 1000
	maxDescRunes     = 500 // Synapse's limit for og:description
)

var (
	// ErrForbiddenAddress: the URL, a redirect or an og:image resolves to an
	// address in the blacklist and not in the whitelist. The media service
	// answers it like any unfetchable URL, without saying which address.
	ErrForbiddenAddress = errors.New("urlpreview: address forbidden by url_preview_ip_range_blacklist")
	// ErrTooLarge: the body is longer than Config.MaxBytes.
	ErrTooLarge = errors.New("urlpreview: response too large")
	// ErrBadURL: not an absolute http or https URL with a host.
	ErrBadURL = errors.New("urlpreview: only http and https URLs can be previewed")
	// ErrTooManyRedirects: more than 5 redirects.
	ErrTooManyRedirects = errors.New("urlpreview: too many redirects")
	// ErrStatus: the server answered with a status other than 2xx.
	ErrStatus = errors.New("urlpreview: unexpected HTTP status")
)

// DefaultBlacklist is Synapse's recommended url_preview_ip_range_blacklist
// (docs/usage/configuration/config_documentation.md).
var DefaultBlacklist = mustPrefixes(
	"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
	"100.64.0.0/10", "192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24",
	"198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
	"224.0.0.0/4", "::1/128", "fe80::/10", "fc00::/7", "2001:db8::/32",
	"ff00::/8", "fec0::/10",
)

// Config sets what a Previewer may reach and how much it may read.
type Config struct {
	// Blacklist: addresses never connected to unless in Whitelist. Nil means
	// DefaultBlacklist; an empty non-nil list forbids only the unspecified
	// addresses 0.0.0.0 and ::, which are always forbidden because
	// connecting to them reaches the local host.
	Blacklist []netip.Prefix
	// Whitelist: exceptions to Blacklist, as Synapse's url_preview_ip_range_whitelist.
	Whitelist []netip.Prefix
	// MaxBytes bounds each body read (the page, and the og:image separately).
	MaxBytes int64
	// Timeout bounds a whole Preview: page, redirects and og:image.
	Timeout   time.Duration
	UserAgent string
	// Resolver resolves a host name; nil means net.DefaultResolver. Tests
	// use it to make a name point at loopback.
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Image is an og:image (or the previewed URL itself when it is an image),
// fetched through the same guard and decoded far enough to know its size.
type Image struct {
	Bytes       []byte
	ContentType string // image/png, image/jpeg, image/gif, or another registered image format
	Width       int
	Height      int
}

// Apply records the stored image in a preview: og:image becomes mxcURI, with
// the fields clients use to lay it out before downloading it.
func (img *Image) Apply(og map[string]any, mxcURI string) {
	og["og:image"] = mxcURI
	og["og:image:type"] = img.ContentType
	og["og:image:width"] = img.Width
	og["og:image:height"] = img.Height
	og["matrix:image:size"] = len(img.Bytes)
}

// Previewer fetches URL previews; it is safe for concurrent use.
type Previewer struct {
	cfg    Config
	client *http.Client
	// onDial, when set by tests, sees every address a socket is about to
	// connect to, so a test can prove a forbidden one was never tried.
	onDial func(addr string)
}

// New makes a Previewer, filling Config's zero values with the defaults.
func New(cfg Config) *Previewer {
	if cfg.Blacklist == nil {
		cfg.Blacklist = DefaultBlacklist
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	if cfg.Resolver == nil {
		cfg.Resolver = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	p := &Previewer{cfg: cfg}
	p.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           p.dial,
			TLSHandshakeTimeout:   cfg.Timeout,
			ResponseHeaderTimeout: cfg.Timeout,
			MaxIdleConns:          10,
			IdleConnTimeout:       30 * time.Second,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return ErrTooManyRedirects
			}
			return checkURL(req.URL)
		},
		Timeout: cfg.Timeout,
	}
	return p
}

// Allowed reports whether an address may be connected to.
func (p *Previewer) Allowed(ip netip.Addr) bool {
	// A zone makes Prefix.Contains false for every prefix, and a mapped
	// address would dodge the IPv4 prefixes: compare the plain address.
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() || ip.IsUnspecified() {
		return false
	}
	for _, pr := range p.cfg.Whitelist {
		if pr.Contains(ip) {
			return true
		}
	}
	for _, pr := range p.cfg.Blacklist {
		if pr.Contains(ip) {
			return false
		}
	}
	return true
}

// dial resolves the host itself, refuses it if any address is forbidden
// (as Synapse does, so a name cannot mix a public and a private answer),
// and then connects only to the addresses it checked.
func (p *Previewer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		ips, err = p.cfg.Resolver(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("resolve %s: no addresses", host)
		}
	}
	for _, ip := range ips {
		if !p.Allowed(ip) {
			return nil, fmt.Errorf("dial %s: %w", host, ErrForbiddenAddress)
		}
	}
	d := net.Dialer{Control: p.control}
	var firstErr error
	for _, ip := range ips {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// control checks the address the socket is about to connect to, the last
// word whatever resolved it.
func (p *Previewer) control(_, address string, _ syscall.RawConn) error {
	if p.onDial != nil {
		p.onDial(address)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("connect %s: %w", address, ErrForbiddenAddress)
	}
	if !p.Allowed(ap.Addr()) {
		return fmt.Errorf("connect %s: %w", address, ErrForbiddenAddress)
	}
	return nil
}

func checkURL(u *url.URL) error {
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%w: %q", ErrBadURL, u.Redacted())
	}
	return nil
}

// Preview fetches rawURL and returns its Open Graph data (og:title,
// og:description, og:image, og:site_name, og:type, with <title> and
// <meta name="description"> as fallbacks) and, when the page names an
// og:image or the URL is itself an image, that image. With an image the map's
// og:image is the image's http(s) URL until the caller stores the bytes and
// calls Image.Apply; an og:image that cannot be fetched or decoded is left out
// of the map rather than failing the preview. Anything neither HTML nor an
// image gives an empty map.
func (p *Previewer) Preview(ctx context.Context, rawURL string) (map[string]any, *Image, error) {
	if err := gate.Wait(ctx); err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	if err := checkURL(u); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()

	body, contentType, finalURL, err := p.fetch(ctx, u.String(), "text/html,application/xhtml+xml;q=0.9,image/*;q=0.8,*/*;q=0.5")
	if err != nil {
		return nil, nil, err
	}
	og := map[string]any{}
	mediaType, _, _ := mime.ParseMediaType(contentType)
	if mediaType == "" || mediaType == "application/octet-stream" {
		// Servers that do not say what they send still get a preview
		// when the bytes show it.
		mediaType, _, _ = mime.ParseMediaType(http.DetectContentType(body))
	}
	switch {
	case mediaType == "text/html" || mediaType == "application/xhtml+xml":
		og = parseHTML(body, contentType)
	case strings.HasPrefix(mediaType, "image/"):
		img, err := decodeImage(body)
		if err != nil {
			return og, nil, nil
		}
		og["og:image"] = finalURL.String()
		return og, img, nil
	default:
		return og, nil, nil
	}

	src, _ := og["og:image"].(string)
	if src == "" {
		return og, nil, nil
	}
	ref, err := finalURL.Parse(src)
	if err != nil || checkURL(ref) != nil {
		delete(og, "og:image")
		return og, nil, nil
	}
	og["og:image"] = ref.String()
	imgBody, _, _, err := p.fetch(ctx, ref.String(), "image/*")
	if err != nil {
		delete(og, "og:image")
		return og, nil, nil
	}
	img, err := decodeImage(imgBody)
	if err != nil {
		delete(og, "og:image")
		return og, nil, nil
	}
	return og, img, nil
}

// fetch GETs a URL through the guarded client and reads at most MaxBytes.
func (p *Previewer) fetch(ctx context.Context, rawURL, accept string) ([]byte, string, *url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	req.Header.Set("User-Agent", p.cfg.UserAgent)
	req.Header.Set("Accept", accept)
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, "", nil, fmt.Errorf("fetch %s: %w", req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, "", nil, fmt.Errorf("fetch %s: %w %d", req.URL.Redacted(), ErrStatus, resp.StatusCode)
	}
	if resp.ContentLength > p.cfg.MaxBytes {
		return nil, "", nil, fmt.Errorf("fetch %s: %w (%d bytes)", req.URL.Redacted(), ErrTooLarge, resp.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.cfg.MaxBytes+1))
	if err != nil {
		return nil, "", nil, fmt.Errorf("read %s: %w", req.URL.Redacted(), err)
	}
	if int64(len(body)) > p.cfg.MaxBytes {
		return nil, "", nil, fmt.Errorf("read %s: %w (over %d bytes)", req.URL.Redacted(), ErrTooLarge, p.cfg.MaxBytes)
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = http.DetectContentType(body)
	}
	return body, ct, resp.Request.URL, nil
}

// decodeImage accepts only what an image decoder recognises, so a body
// labelled image/* but holding HTML or SVG never becomes stored media.
func decodeImage(body []byte) (*Image, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("decode image: %w", err)
	}
	return &Image{Bytes: body, ContentType: "image/" + format, Width: cfg.Width, Height: cfg.Height}, nil
}

// ogKeys are the Open Graph properties kept; others are dropped so a page
// cannot fill the cached preview with arbitrary keys.
var ogKeys = map[string]bool{
	"og:title": true, "og:description": true, "og:image": true,
	"og:site_name": true, "og:type": true,
}

// parseHTML reads the Open Graph tags, in the page's own charset.
func parseHTML(body []byte, contentType string) map[string]any {
	og := map[string]any{}
	enc, _, _ := charset.DetermineEncoding(body, contentType)
	r := enc.NewDecoder().Reader(bytes.NewReader(body))
	doc, err := html.Parse(r)
	if err != nil {
		return og
	}
	var title, description string
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "meta":
				prop, name, content := attr(n, "property"), attr(n, "name"), attr(n, "content")
				// Some sites put Open Graph in name= rather than property=.
				key := strings.ToLower(prop)
				if key == "" {
					key = strings.ToLower(name)
				}
				if ogKeys[key] && content != "" {
					if _, seen := og[key]; !seen { // the first of repeated tags wins
						og[key] = content
					}
				}
				if strings.EqualFold(name, "description") && description == "" {
					description = content
				}
			case "title":
				if title == "" && n.FirstChild != nil {
					title = text(n)
				}
			case "script", "style", "noscript":
				return
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if _, ok := og["og:title"]; !ok && title != "" {
		og["og:title"] = title
	}
	if _, ok := og["og:description"]; !ok && description != "" {
		og["og:description"] = description
	}
	for k, v := range og {
		s := strings.Join(strings.Fields(v.(string)), " ")
		switch k {
		case "og:description":
			s = truncate(s, maxDescRunes)
		case "og:image":
			s = strings.TrimSpace(v.(string))
		default:
			s = truncate(s, maxTitleRunes)
		}
		if s == "" {
			delete(og, k)
			continue
		}
		og[k] = s
	}
	return og
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Namespace == "" && strings.EqualFold(a.Key, key) {
			return a.Val
		}
	}
	return ""
}

func text(n *html.Node) string {
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return b.String()
}

// truncate cuts s to at most n runes, marking the cut with an ellipsis.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:n-1])) + "…"
}

func mustPrefixes(list ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(list))
	for i, s := range list {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// ParsePrefixes reads CIDR ranges or single addresses, the forms Synapse's
// url_preview_ip_range_blacklist and _whitelist accept, for the config loader.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if pr, err := netip.ParsePrefix(s); err == nil {
			out = append(out, pr.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an IP range such as 10.0.0.0/8 nor an address", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

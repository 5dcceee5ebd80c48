package fedclient

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/gate"
)

// ErrDomainNotAllowed is returned for a destination outside
// federation_domain_whitelist.
var ErrDomainNotAllowed = errors.New("destination not in federation_domain_whitelist")

// ErrResponseTooLarge is returned when a response body goes over the limit.
var ErrResponseTooLarge = errors.New("response body over the size limit")

// transport sends requests addressed as matrix://<server name>/<path>
// (gomatrixserverlib's form) or matrix-federation://... to the server's
// federation API over HTTPS, trying each resolved target in turn.
type transport struct {
	resolver *Resolver
	dialer   *dialer
	tls      *tls.Config // RootCAs and InsecureSkipVerify; ServerName is set per target
	domains  map[string]bool
	maxBody  int64

	mu sync.Mutex
	// byTLSName holds one http.Transport per certificate name: the TLS
	// server name is a property of the transport, not of the request.
	byTLSName map[string]*http.Transport
}

// allowed reports whether requests may go to serverName.
func (t *transport) allowed(serverName string) bool { return t.domains == nil || t.domains[serverName] }

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	if err := gate.Wait(req.Context()); err != nil {
		closeBody()
		return nil, err
	}
	if req.URL.Scheme != "matrix" && req.URL.Scheme != "matrix-federation" {
		closeBody()
		return nil, fmt.Errorf("fedclient: scheme %q: want matrix://<server name>/...", req.URL.Scheme)
	}
	dest := req.URL.Host
	if !t.allowed(dest) {
		closeBody()
		return nil, fmt.Errorf("%s: %w", dest, ErrDomainNotAllowed)
	}
	targets, err := t.resolver.Resolve(req.Context(), dest)
	if err != nil {
		closeBody()
		return nil, err
	}
	var errs []error
	for i, target := range targets {
		out := req.Clone(req.Context())
		out.URL.Scheme, out.URL.Host, out.Host = "https", target.Addr, target.Host
		if i > 0 && req.Body != nil {
			if req.GetBody == nil {
				break // the body is spent and cannot be sent again
			}
			if out.Body, err = req.GetBody(); err != nil {
				break
			}
		}
		resp, err := t.transportFor(target.TLSName).RoundTrip(out)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s via %s: %w", dest, target.Addr, err))
			if req.Context().Err() != nil {
				break
			}
			continue
		}
		if resp.ContentLength > t.maxBody {
			resp.Body.Close()
			return nil, fmt.Errorf("%s: %d bytes: %w", dest, resp.ContentLength, ErrResponseTooLarge)
		}
		resp.Body = &limitedBody{rc: resp.Body, left: t.maxBody}
		return resp, nil
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s: no address to try", dest)
	}
	return nil, errors.Join(errs...)
}

// transportFor returns the transport of connections whose certificate must
// be for name.
func (t *transport) transportFor(name string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.byTLSName[name]; ok {
		return tr
	}
	cfg := t.tls.Clone()
	cfg.ServerName = name
	tr := &http.Transport{
		// No Proxy: a proxy would make the connection, and the address
		// filter would check the proxy instead of the destination.
		DialContext:         t.dialer.DialContext,
		TLSClientConfig:     cfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}
	t.byTLSName[name] = tr
	return tr
}

// closeIdle closes the idle connections of every transport.
func (t *transport) closeIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.byTLSName {
		tr.CloseIdleConnections()
	}
}

// limitedBody fails a read that goes past the limit instead of cutting the
// body short, so a truncated document is never taken for a whole one.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// Only an end of body may come now: look for it with one byte.
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, ErrResponseTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

package httpapi

import (
	"net/http"
	"strings"
)

// Router is an http.ServeMux whose misses are Matrix errors: 404
// M_UNRECOGNIZED for an unknown path, 405 M_UNRECOGNIZED (with Allow) for a
// known path asked with the wrong method. ServeMux would answer those in
// text/plain, which Matrix clients cannot read.
//
// A request under /_matrix/client/r0/, the client-server API's prefix
// before spec v1.1 that Hydrogen and other older clients still call, is
// served by the route its path matches with v3 in place of r0: v1.1 renamed
// every r0 endpoint to v3 and changed none of them (MSC2844), and Synapse
// and Dendrite still serve both. Endpoints that began under v1 (relations,
// hierarchy) never had an r0 form and are not served there. The content
// repository's /_matrix/media/r0/ (Hydrogen uploads through it) is served
// as /_matrix/media/v3/ likewise.
type Router struct {
	mux *http.ServeMux
}

// NewRouter returns an empty router.
func NewRouter() *Router { return &Router{mux: http.NewServeMux()} }

// Handle registers h for a Go 1.22 ServeMux pattern such as
// "GET /_matrix/client/versions".
func (rt *Router) Handle(pattern string, h http.Handler) { rt.mux.Handle(pattern, h) }

// HandleFunc registers f for pattern.
func (rt *Router) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	rt.mux.HandleFunc(pattern, f)
}

// r0Prefix and v3Prefix are the client-server API's legacy and current
// prefixes.
const (
	r0Prefix      = "/_matrix/client/r0/"
	v3Prefix      = "/_matrix/client/v3/"
	mediaR0Prefix = "/_matrix/media/r0/"
	mediaV3Prefix = "/_matrix/media/v3/"
)

func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	served := r
	if v3 := asV3(r); v3 != nil {
		served = v3
	}
	h, pattern := rt.mux.Handler(served)
	if pattern != "" && served != r {
		rt.mux.ServeHTTP(w, served)
		// The log line names the route that served the request.
		r.Pattern = served.Pattern
		return
	}
	if pattern != "" {
		rt.mux.ServeHTTP(w, r)
		return
	}
	// No pattern matched: let the mux decide between 404 and 405, keep its
	// status and Allow header, and write the body ourselves.
	probe := &statusProbe{header: http.Header{}}
	h.ServeHTTP(probe, served)
	if allow := probe.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	WriteError(w, r, Unrecognized(probe.status, r))
}

// asV3 returns r with its path under /_matrix/client/v3/ when it is under
// /_matrix/client/r0/ (/_matrix/media/v3/ for /_matrix/media/r0/), and nil
// otherwise. Only the path the mux routes on
// (Path and RawPath) changes; RequestURI keeps the path as sent.
func asV3(r *http.Request) *http.Request {
	from, to := r0Prefix, v3Prefix
	rest, ok := strings.CutPrefix(r.URL.Path, from)
	if !ok {
		from, to = mediaR0Prefix, mediaV3Prefix
		if rest, ok = strings.CutPrefix(r.URL.Path, from); !ok {
			return nil
		}
	}
	v3 := r.Clone(r.Context())
	v3.URL.Path = to + rest
	if raw, ok := strings.CutPrefix(r.URL.RawPath, from); ok {
		v3.URL.RawPath = to + raw
	} else {
		// A RawPath that does not begin as Path does is not a valid
		// encoding of it; EscapedPath already ignores it.
		v3.URL.RawPath = ""
	}
	return v3
}

// statusProbe records the status the mux's fallback handler would send.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(status int)      { p.status = status }

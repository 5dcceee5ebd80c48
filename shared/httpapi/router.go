package httpapi

import (
	"net/http"
)

// Router is an http.ServeMux whose misses are Matrix errors: 404
// M_UNRECOGNIZED for an unknown path, 405 M_UNRECOGNIZED (with Allow) for a
// known path asked with the wrong method. ServeMux would answer those in
// text/plain, which Matrix clients cannot read.
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

func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := rt.mux.Handler(r)
	if pattern != "" {
		rt.mux.ServeHTTP(w, r)
		return
	}
	// No pattern matched: let the mux decide between 404 and 405, keep its
	// status and Allow header, and write the body ourselves.
	probe := &statusProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if allow := probe.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	WriteError(w, r, Unrecognized(probe.status, r))
}

// statusProbe records the status the mux's fallback handler would send.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(status int)      { p.status = status }

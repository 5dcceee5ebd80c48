package e2ekeys

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Register adds the key endpoints to rt behind requireAuth
// (accounts.Service.RequireAuth).
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	const v3 = "/_matrix/client/v3/keys"
	rt.HandleFunc("POST "+v3+"/upload", requireAuth(handle(s.handleUpload)))
	rt.HandleFunc("POST "+v3+"/query", requireAuth(handle(s.handleQuery)))
	rt.HandleFunc("POST "+v3+"/claim", requireAuth(handle(s.handleClaim)))
	rt.HandleFunc("POST "+v3+"/device_signing/upload", requireAuth(handle(s.handleSigningUpload)))
	rt.HandleFunc("POST "+v3+"/signatures/upload", requireAuth(handle(s.handleSignaturesUpload)))
}

// handle adapts a handler that returns its error to net/http, the error
// going out through httpapi.WriteError.
func handle(f func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			httpapi.WriteError(w, r, err)
		}
	}
}

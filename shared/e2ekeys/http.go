package e2ekeys

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Register adds the key endpoints to rt behind requireAuth
// (accounts.Service.RequireAuth).
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	const v3 = "/_matrix/client/v3/keys"
	rt.HandleFunc("POST "+v3+"/upload", requireAuth(httpapi.Handle(s.handleUpload)))
	rt.HandleFunc("POST "+v3+"/query", requireAuth(httpapi.Handle(s.handleQuery)))
	rt.HandleFunc("POST "+v3+"/claim", requireAuth(httpapi.Handle(s.handleClaim)))
	rt.HandleFunc("POST "+v3+"/device_signing/upload", requireAuth(httpapi.Handle(s.handleSigningUpload)))
	rt.HandleFunc("POST "+v3+"/signatures/upload", requireAuth(httpapi.Handle(s.handleSignaturesUpload)))
}

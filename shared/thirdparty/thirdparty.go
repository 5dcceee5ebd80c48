// Package thirdparty serves the /thirdparty endpoints: the networks that
// bridges (application services) connect rooms and users to. This server
// runs no bridges, so it knows no protocols: the list is empty, as Synapse's
// is without application services, and a lookup in a protocol is 404.
package thirdparty

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Register adds the /thirdparty endpoints to rt behind requireAuth.
func Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	const base = "GET /_matrix/client/v3/thirdparty/"
	rt.HandleFunc(base+"protocols", requireAuth(handleProtocols))
	for _, p := range []string{"protocol/{protocol}", "location/{protocol}", "user/{protocol}"} {
		rt.HandleFunc(base+p, requireAuth(httpapi.Handle(handleUnknownProtocol)))
	}
	for _, p := range []string{"location", "user"} {
		rt.HandleFunc(base+p, requireAuth(handleReverseLookup))
	}
}

// handleProtocols serves GET /thirdparty/protocols: no protocol.
// Clients (Element among them) ask at start, for their room directory.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3thirdpartyprotocols
func handleProtocols(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
}

// handleUnknownProtocol serves GET /thirdparty/protocol/{protocol} and the
// lookups of portal rooms and users in a protocol: the spec's 404.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3thirdpartyprotocolprotocol
func handleUnknownProtocol(w http.ResponseWriter, r *http.Request) error {
	return httpapi.NotFound("unknown protocol %q: this server runs no bridges", r.PathValue("protocol"))
}

// handleReverseLookup serves GET /thirdparty/location?alias= and
// /thirdparty/user?userid=: no third-party location or user stands behind
// any room or user here, which Synapse answers with an empty list.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3thirdpartylocation
func handleReverseLookup(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, []any{})
}

package roomsapi

import "net/http"

// authForRemote puts requireAuth before next for a request that names
// another server to ask (GET /publicRooms?server=): this server signs the
// request it sends on, so anonymous callers may read its own directory
// only, as Synapse has it. A request without server passes on as it is.
func authForRemote(requireAuth func(http.HandlerFunc) http.HandlerFunc, next http.HandlerFunc) http.HandlerFunc {
	authed := requireAuth(next)
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("server") {
			authed(w, r)
			return
		}
		next(w, r)
	}
}

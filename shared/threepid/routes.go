package threepid

import (
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Register mounts the requestToken endpoints (no access token), the
// account's 3PID endpoints behind auth, and the validation page of the
// mail's link (SubmitPath).
func (s *Service) Register(rt *httpapi.Router, auth func(http.HandlerFunc) http.HandlerFunc) {
	const v3 = "/_matrix/client/v3"
	h := httpapi.Handle
	rt.HandleFunc("POST "+v3+"/account/3pid/email/requestToken", h(s.handleRequestToken(PurposeAdd)))
	rt.HandleFunc("POST "+v3+"/account/password/email/requestToken", h(s.handleRequestToken(PurposePassword)))
	rt.HandleFunc("POST "+v3+"/register/email/requestToken", h(s.handleRequestToken(PurposeRegister)))
	for _, p := range []string{"/account/3pid/msisdn/requestToken", "/account/password/msisdn/requestToken", "/register/msisdn/requestToken"} {
		rt.HandleFunc("POST "+v3+p, h(noMSISDN))
	}
	rt.HandleFunc("GET "+v3+"/account/3pid", auth(h(s.handleList)))
	rt.HandleFunc("POST "+v3+"/account/3pid", auth(h(s.handleLegacyAdd)))
	rt.HandleFunc("POST "+v3+"/account/3pid/add", auth(h(s.handleAdd)))
	rt.HandleFunc("POST "+v3+"/account/3pid/delete", auth(h(s.handleDelete)))
	rt.HandleFunc("POST "+v3+"/account/3pid/bind", auth(h(s.handleBind)))
	rt.HandleFunc("POST "+v3+"/account/3pid/unbind", auth(h(s.handleUnbind)))
	rt.HandleFunc("GET "+SubmitPath, s.withEmail(s.handleSubmitPage))
	rt.HandleFunc("POST "+SubmitPath, s.withEmail(s.handleSubmit))
}

// noMSISDN answers the phone number requestToken endpoints.
func noMSISDN(http.ResponseWriter, *http.Request) error {
	return httpapi.Errorf(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED",
		"phone numbers (msisdn) are not supported by this server: it sends no SMS; use an email address")
}

// withEmail serves the validation page only when mail is configured: no
// mail, no links to follow.
func (s *Service) withEmail(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Config.Email == nil {
			httpapi.WriteError(w, r, httpapi.NotFound("this server sends no validation mail (no email block)"))
			return
		}
		next(w, r)
	}
}

package profile

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
)

// Register adds the profile endpoints to rt; requireAuth guards those that
// need an access token (accounts.Service.RequireAuth). Only displayname and
// avatar_url have routes: other keyNames get M_UNRECOGNIZED, as the
// m.profile_fields capability announces.
func (s *Service) Register(rt *httpapi.Router, requireAuth func(http.HandlerFunc) http.HandlerFunc) {
	rt.HandleFunc("GET /_matrix/client/v3/profile/{userId}", httpapi.Handle(s.handleGetProfile))
	for _, f := range []Field{DisplayName, AvatarURL} {
		path := "/_matrix/client/v3/profile/{userId}/" + string(f)
		rt.HandleFunc("GET "+path, httpapi.Handle(s.getField(f)))
		rt.HandleFunc("PUT "+path, requireAuth(httpapi.Handle(s.putField(f))))
		rt.HandleFunc("DELETE "+path, requireAuth(httpapi.Handle(s.deleteField(f))))
	}
}

// handleGetProfile serves GET /_matrix/client/v3/profile/{userId}: the
// fields that are set, 404 when none is (as Synapse); another server's
// user is asked of that server (Lookup): 502 when it does not answer.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3profileuserid
func (s *Service) handleGetProfile(w http.ResponseWriter, r *http.Request) error {
	p, err := s.Lookup(r.Context(), r.PathValue("userId"))
	if err != nil {
		return httpError(err)
	}
	body := map[string]string{}
	if p.DisplayName != "" {
		body[string(DisplayName)] = p.DisplayName
	}
	if p.AvatarURL != "" {
		body[string(AvatarURL)] = p.AvatarURL
	}
	if len(body) == 0 {
		return httpapi.NotFound("profile not found")
	}
	httpapi.WriteJSON(w, http.StatusOK, body)
	return nil
}

// getField serves GET /_matrix/client/v3/profile/{userId}/{keyName}: 404
// for an unknown user and for a field that is not set, as the spec says.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3profileuseridkeyname
func (s *Service) getField(f Field) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.Lookup(r.Context(), r.PathValue("userId"))
		if err != nil {
			return httpError(err)
		}
		value := p.DisplayName
		if f == AvatarURL {
			value = p.AvatarURL
		}
		if value == "" {
			return httpapi.NotFound("%s is not set", f)
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{string(f): value})
		return nil
	}
}

// putField serves PUT /_matrix/client/v3/profile/{userId}/{keyName}: only
// for the caller's own user. The body is {keyName: string}; the empty
// string unsets the field.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3profileuseridkeyname
//
// The new name or avatar is not yet sent into the user's rooms as a
// membership event: the rooms package will do that once it exists.
func (s *Service) putField(f Field) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		userID := r.PathValue("userId")
		if _, err := ServerOf(userID); err != nil {
			return httpError(err)
		}
		var body map[string]json.RawMessage
		if err := httpapi.DecodeJSON(r, &body); err != nil {
			return err
		}
		raw, ok := body[string(f)]
		if !ok {
			return httpapi.MissingParam("the body must have the key %q", f)
		}
		var value string
		// A null or any other type is refused: "Servers MAY reject null values".
		if string(raw) == "null" || json.Unmarshal(raw, &value) != nil {
			return httpapi.BadJSON("%s must be a string", f)
		}
		if _, err := Normalize(f, value); err != nil {
			return httpError(err)
		}
		if err := s.checkOwn(r, userID); err != nil {
			return err
		}
		if err := s.Set(r.Context(), userID, f, value); err != nil {
			return httpError(err)
		}
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
}

// deleteField serves DELETE /_matrix/client/v3/profile/{userId}/{keyName}:
// it unsets the field, and succeeds when it was not set.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3profileuseridkeyname
func (s *Service) deleteField(f Field) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		userID := r.PathValue("userId")
		if _, err := ServerOf(userID); err != nil {
			return httpError(err)
		}
		if err := s.checkOwn(r, userID); err != nil {
			return err
		}
		if err := s.Set(r.Context(), userID, f, ""); err != nil {
			return httpError(err)
		}
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
}

// checkOwn lets users change only their own profile.
func (s *Service) checkOwn(r *http.Request, userID string) error {
	if caller := accounts.Caller(r.Context()).UserID; caller != userID {
		return httpapi.Forbidden("you may only change your own profile, not that of %s", userID)
	}
	return nil
}

// httpError turns the package's errors into Matrix errors; others stay
// as they are and become a 500.
func httpError(err error) error {
	switch {
	case errors.Is(err, ErrInvalidUserID):
		return httpapi.InvalidParam("%v", err)
	case errors.Is(err, ErrRemoteUser):
		// A server without federation (Remote nil) cannot ask.
		return httpapi.NotFound("profiles of users on other servers cannot be fetched by this server")
	case errors.Is(err, ErrNotFound):
		return httpapi.NotFound("profile not found")
	case errors.Is(err, ErrInvalidValue):
		return httpapi.InvalidParam("%v", err)
	}
	return err
}

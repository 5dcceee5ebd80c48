// Package push holds each user's push rules and pushers: the spec's
// predefined rules merged with the user's own, and the client-server
// endpoints that read and change them.
//
// Storage (docs/storage.md): all a user changed about push rules (their own
// rules, and the enabled state and actions they set on predefined ones) is
// one item, (user|<user ID>, push_rules), read with one GetItem and merged
// with the defaults on the way out. Each pusher is one item, (user|<user
// ID>, pusher|<app ID>|<pushkey>), listed with one Query and indexed in
// gsi1 by app ID and pushkey, so that setting a pusher can remove other
// users' pushers for the same device.
package push

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Service serves and stores push rules and pushers.
type Service struct {
	Store *store.Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Register adds the push endpoints to rt, each behind auth.
func (s *Service) Register(rt *httpapi.Router, auth func(http.HandlerFunc) http.HandlerFunc) {
	const rules = "/_matrix/client/v3/pushrules/"
	const rule = rules + "global/{kind}/{ruleId}"
	rt.HandleFunc("GET "+rules+"{$}", auth(s.GetRulesets))
	rt.HandleFunc("GET "+rules+"global/{$}", auth(s.GetGlobal))
	rt.HandleFunc("GET "+rule, auth(s.GetRule))
	rt.HandleFunc("PUT "+rule, auth(s.PutRule))
	rt.HandleFunc("DELETE "+rule, auth(s.DeleteRule))
	rt.HandleFunc("GET "+rule+"/enabled", auth(s.GetEnabled))
	rt.HandleFunc("PUT "+rule+"/enabled", auth(s.PutEnabled))
	rt.HandleFunc("GET "+rule+"/actions", auth(s.GetActions))
	rt.HandleFunc("PUT "+rule+"/actions", auth(s.PutActions))
	rt.HandleFunc("GET /_matrix/client/v3/pushers", auth(s.GetPushers))
	rt.HandleFunc("POST /_matrix/client/v3/pushers/set", auth(s.SetPusher))
}

// GetRulesets serves GET /_matrix/client/v3/pushrules/: every ruleset of the
// user, of which the spec defines one, global.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrules
func (s *Service) GetRulesets(w http.ResponseWriter, r *http.Request) {
	rs, err := s.Rules(r.Context(), accounts.Caller(r.Context()).UserID)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]Ruleset{"global": rs})
}

// GetGlobal serves GET /_matrix/client/v3/pushrules/global/.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobal
func (s *Service) GetGlobal(w http.ResponseWriter, r *http.Request) {
	rs, err := s.Rules(r.Context(), accounts.Caller(r.Context()).UserID)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, rs)
}

// target reads the kind and rule ID of the path; an unknown kind is 400
// M_INVALID_PARAM.
func target(r *http.Request) (Kind, string, error) {
	k, ok := ParseKind(r.PathValue("kind"))
	if !ok {
		return "", "", httpapi.InvalidParam("unknown push rule kind %q: it is one of override, content, room, sender, underride", r.PathValue("kind"))
	}
	return k, r.PathValue("ruleId"), nil
}

// findRule reads the user's ruleset and the rule of the path in it.
func (s *Service) findRule(r *http.Request) (Rule, error) {
	k, id, err := target(r)
	if err != nil {
		return Rule{}, err
	}
	rs, err := s.Rules(r.Context(), accounts.Caller(r.Context()).UserID)
	if err != nil {
		return Rule{}, err
	}
	rule, ok := rs.Find(k, id)
	if !ok {
		return Rule{}, notFound(k, id)
	}
	return rule, nil
}

// GetRule serves GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleid
func (s *Service) GetRule(w http.ResponseWriter, r *http.Request) {
	rule, err := s.findRule(r)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, rule)
}

// GetEnabled serves GET .../pushrules/global/{kind}/{ruleId}/enabled.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidenabled
func (s *Service) GetEnabled(w http.ResponseWriter, r *http.Request) {
	rule, err := s.findRule(r)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
}

// GetActions serves GET .../pushrules/global/{kind}/{ruleId}/actions.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidactions
func (s *Service) GetActions(w http.ResponseWriter, r *http.Request) {
	rule, err := s.findRule(r)
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	if rule.Actions == nil {
		rule.Actions = []json.RawMessage{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"actions": rule.Actions})
}

type putRuleRequest struct {
	Actions    json.RawMessage `json:"actions"`
	Conditions json.RawMessage `json:"conditions"`
	Pattern    *string         `json:"pattern"`
}

// PutRule serves PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}:
// it creates or replaces one of the user's own rules, placed by the before
// and after query parameters, which name other rules of the user's.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleid
func (s *Service) PutRule(w http.ResponseWriter, r *http.Request) {
	if err := s.putRule(r); err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
}

func (s *Service) putRule(r *http.Request) error {
	k, id, err := target(r)
	if err != nil {
		return err
	}
	if err := checkRuleID(k, id); err != nil {
		return err
	}
	q := r.URL.Query()
	before, after := q.Get("before"), q.Get("after")
	for name, rel := range map[string]string{"before": before, "after": after} {
		if len(rel) > 0 && rel[0] == '.' {
			return httpapi.InvalidParam("%s names a predefined rule, %s: a rule can only be placed relative to the user's own rules", name, rel)
		}
	}
	var req putRuleRequest
	if err := httpapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	if len(req.Actions) == 0 || string(req.Actions) == "null" {
		return httpapi.MissingParam("actions is required")
	}
	rule := Rule{RuleID: id, Enabled: true}
	if rule.Actions, err = parseActions(req.Actions); err != nil {
		return httpapi.BadJSON("%v", err)
	}
	switch {
	case k.hasConditions():
		if rule.Conditions, err = parseConditions(req.Conditions); err != nil {
			return httpapi.BadJSON("%v", err)
		}
	case k == Content:
		if req.Pattern == nil {
			return httpapi.MissingParam("content rules need a pattern")
		}
		rule.Pattern = req.Pattern
	}
	return s.update(r.Context(), accounts.Caller(r.Context()).UserID, func(u *userRules) error {
		return u.put(k, rule, before, after)
	})
}

// DeleteRule serves DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}.
// Only the user's own rules can be deleted: a predefined one is not found.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3pushrulesglobalkindruleid
func (s *Service) DeleteRule(w http.ResponseWriter, r *http.Request) {
	k, id, err := target(r)
	if err == nil {
		err = s.update(r.Context(), accounts.Caller(r.Context()).UserID, func(u *userRules) error {
			return u.remove(k, id)
		})
	}
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
}

// PutEnabled serves PUT .../pushrules/global/{kind}/{ruleId}/enabled, for
// predefined rules too.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidenabled
func (s *Service) PutEnabled(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		k, id, err := target(r)
		if err != nil {
			return err
		}
		var req struct {
			Enabled *bool `json:"enabled"`
		}
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return err
		}
		if req.Enabled == nil {
			return httpapi.MissingParam("enabled is required")
		}
		return s.update(r.Context(), accounts.Caller(r.Context()).UserID, func(u *userRules) error {
			return u.set(k, id, req.Enabled, nil)
		})
	}()
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
}

// PutActions serves PUT .../pushrules/global/{kind}/{ruleId}/actions, for
// predefined rules too.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidactions
func (s *Service) PutActions(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		k, id, err := target(r)
		if err != nil {
			return err
		}
		var req struct {
			Actions json.RawMessage `json:"actions"`
		}
		if err := httpapi.DecodeJSON(r, &req); err != nil {
			return err
		}
		if len(req.Actions) == 0 || string(req.Actions) == "null" {
			return httpapi.MissingParam("actions is required")
		}
		actions, err := parseActions(req.Actions)
		if err != nil {
			return httpapi.BadJSON("%v", err)
		}
		return s.update(r.Context(), accounts.Caller(r.Context()).UserID, func(u *userRules) error {
			return u.set(k, id, nil, actions)
		})
	}()
	if err != nil {
		httpapi.WriteError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
}

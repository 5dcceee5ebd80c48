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
	"context"
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
	// Changed is told after each change of a user's push rules, so that
	// their next /sync brings the new m.push_rules (AccountDataSince); nil
	// does nothing.
	Changed func(ctx context.Context, userID string) error
	// OwnsAddress reports whether the email address is bound to the user's
	// account: with it, email pushers to such addresses can be set
	// (email.go); nil refuses every email pusher.
	OwnsAddress func(ctx context.Context, userID, address string) (bool, error)
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
	h := func(f func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
		return auth(httpapi.Handle(f))
	}
	rt.HandleFunc("GET "+rules+"{$}", h(s.handleGetRulesets))
	rt.HandleFunc("GET "+rules+"global/{$}", h(s.handleGetGlobal))
	rt.HandleFunc("GET "+rule, h(s.handleGetRule))
	rt.HandleFunc("PUT "+rule, h(s.handlePutRule))
	rt.HandleFunc("DELETE "+rule, h(s.handleDeleteRule))
	rt.HandleFunc("GET "+rule+"/enabled", h(s.handleGetEnabled))
	rt.HandleFunc("PUT "+rule+"/enabled", h(s.handlePutEnabled))
	rt.HandleFunc("GET "+rule+"/actions", h(s.handleGetActions))
	rt.HandleFunc("PUT "+rule+"/actions", h(s.handlePutActions))
	rt.HandleFunc("GET /_matrix/client/v3/pushers", h(s.handleGetPushers))
	rt.HandleFunc("POST /_matrix/client/v3/pushers/set", h(s.handleSetPusher))
}

// handleGetRulesets serves GET /_matrix/client/v3/pushrules/: every ruleset
// of the user, of which the spec defines one, global.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrules
func (s *Service) handleGetRulesets(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.Rules(r.Context(), accounts.Caller(r.Context()).UserID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]Ruleset{"global": rs})
	return nil
}

// handleGetGlobal serves GET /_matrix/client/v3/pushrules/global/.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobal
func (s *Service) handleGetGlobal(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.Rules(r.Context(), accounts.Caller(r.Context()).UserID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rs)
	return nil
}

// target reads the kind and rule ID of the path; an unknown kind (such as
// MSC4306's postcontent, which clients probe) is 404 M_NOT_FOUND, as
// Synapse answers it.
func target(r *http.Request) (Kind, string, error) {
	k, ok := ParseKind(r.PathValue("kind"))
	if !ok {
		return "", "", httpapi.NotFound("unknown push rule kind %q: it is one of override, content, room, sender, underride", r.PathValue("kind"))
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

// handleGetRule serves GET
// /_matrix/client/v3/pushrules/global/{kind}/{ruleId}.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleid
func (s *Service) handleGetRule(w http.ResponseWriter, r *http.Request) error {
	rule, err := s.findRule(r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, rule)
	return nil
}

// handleGetEnabled serves GET .../pushrules/global/{kind}/{ruleId}/enabled.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidenabled
func (s *Service) handleGetEnabled(w http.ResponseWriter, r *http.Request) error {
	rule, err := s.findRule(r)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
	return nil
}

// handleGetActions serves GET .../pushrules/global/{kind}/{ruleId}/actions.
// https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidactions
func (s *Service) handleGetActions(w http.ResponseWriter, r *http.Request) error {
	rule, err := s.findRule(r)
	if err != nil {
		return err
	}
	if rule.Actions == nil {
		rule.Actions = []json.RawMessage{}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"actions": rule.Actions})
	return nil
}

type putRuleRequest struct {
	Actions    json.RawMessage `json:"actions"`
	Conditions json.RawMessage `json:"conditions"`
	Pattern    *string         `json:"pattern"`
}

// handlePutRule serves PUT
// /_matrix/client/v3/pushrules/global/{kind}/{ruleId}: it creates or
// replaces one of the user's own rules, placed by the before and after query
// parameters, which name other rules of the user's.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleid
func (s *Service) handlePutRule(w http.ResponseWriter, r *http.Request) error {
	if err := s.putRule(r); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
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

// handleDeleteRule serves DELETE
// /_matrix/client/v3/pushrules/global/{kind}/{ruleId}. Only the user's own
// rules can be deleted: a predefined one is not found.
// https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3pushrulesglobalkindruleid
func (s *Service) handleDeleteRule(w http.ResponseWriter, r *http.Request) error {
	k, id, err := target(r)
	if err != nil {
		return err
	}
	err = s.update(r.Context(), accounts.Caller(r.Context()).UserID, func(u *userRules) error {
		return u.remove(k, id)
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// handlePutEnabled serves PUT .../pushrules/global/{kind}/{ruleId}/enabled,
// for predefined rules too.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidenabled
func (s *Service) handlePutEnabled(w http.ResponseWriter, r *http.Request) error {
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
	err = s.update(r.Context(), accounts.Caller(r.Context()).UserID, func(u *userRules) error {
		return u.set(k, id, req.Enabled, nil)
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// handlePutActions serves PUT .../pushrules/global/{kind}/{ruleId}/actions,
// for predefined rules too.
// https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidactions
func (s *Service) handlePutActions(w http.ResponseWriter, r *http.Request) error {
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
	err = s.update(r.Context(), accounts.Caller(r.Context()).UserID, func(u *userRules) error {
		return u.set(k, id, nil, actions)
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

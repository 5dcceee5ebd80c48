package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/store"
)

// userRules is all a user changed about push rules: their own rules, and
// their changes to predefined ones. It is stored as JSON in one item.
type userRules struct {
	// Own holds the user's rules by kind, most important first.
	Own map[Kind][]Rule `json:"own,omitempty"`
	// Changed holds, by kind and rule ID, what differs from the spec in the
	// predefined rules.
	Changed map[Kind]map[string]change `json:"changed,omitempty"`
}

// change is what a user set on a predefined rule; nil fields are the spec's.
type change struct {
	Enabled *bool              `json:"enabled,omitempty"`
	Actions *[]json.RawMessage `json:"actions,omitempty"`
}

// merge lays the user's rules over the defaults the way the spec orders
// them: user-defined rules before the predefined ones of their kind, except
// .m.rule.master, which comes before everything.
func (u *userRules) merge(userID string) Ruleset {
	rs := Defaults(userID)
	for k, byID := range u.Changed {
		rules := *rs.Of(k)
		for i := range rules {
			c, ok := byID[rules[i].RuleID]
			if !ok {
				continue
			}
			if c.Enabled != nil {
				rules[i].Enabled = *c.Enabled
			}
			if c.Actions != nil {
				rules[i].Actions = slices.Clone(*c.Actions)
			}
		}
	}
	for _, k := range Kinds {
		own := u.Own[k]
		if len(own) == 0 {
			continue
		}
		defs := *rs.Of(k)
		merged := make([]Rule, 0, len(own)+len(defs))
		head := 0
		if k == Override && len(defs) > 0 && defs[0].RuleID == ".m.rule.master" {
			merged, head = append(merged, defs[0]), 1
		}
		for _, r := range own {
			merged = append(merged, r.clone())
		}
		*rs.Of(k) = append(merged, defs[head:]...)
	}
	return rs
}

func (u *userRules) ownIndex(k Kind, ruleID string) int {
	return slices.IndexFunc(u.Own[k], func(r Rule) bool { return r.RuleID == ruleID })
}

// put creates or replaces the user's rule r of kind k. A new rule goes
// first among the user's rules of its kind unless before or after place it;
// a replaced one keeps its place and its enabled state unless they move it.
func (u *userRules) put(k Kind, r Rule, before, after string) error {
	if u.Own == nil {
		u.Own = map[Kind][]Rule{}
	}
	rules := u.Own[k]
	at := 0
	if i := u.ownIndex(k, r.RuleID); i >= 0 {
		r.Enabled = rules[i].Enabled
		rules = slices.Delete(slices.Clone(rules), i, i+1)
		at = i
	}
	if before != "" || after != "" {
		// With both, before wins (pushrules.yaml).
		rel, offset := before, 0
		if rel == "" {
			rel, offset = after, 1
		}
		j := slices.IndexFunc(rules, func(x Rule) bool { return x.RuleID == rel })
		if j < 0 {
			return httpapi.InvalidParam("before/after rule not found: %s", rel)
		}
		at = j + offset
	}
	u.Own[k] = slices.Insert(rules, at, r)
	return nil
}

// remove deletes the user's rule; predefined rules cannot be deleted and,
// like unknown ones, give 404.
func (u *userRules) remove(k Kind, ruleID string) error {
	i := u.ownIndex(k, ruleID)
	if i < 0 {
		return notFound(k, ruleID)
	}
	u.Own[k] = slices.Delete(slices.Clone(u.Own[k]), i, i+1)
	if len(u.Own[k]) == 0 {
		delete(u.Own, k)
	}
	return nil
}

// set changes the enabled state or the actions of a rule, the user's own or
// a predefined one. A change that brings a predefined rule back to the spec
// is forgotten, so the item holds only real differences.
func (u *userRules) set(k Kind, ruleID string, enabled *bool, actions []json.RawMessage) error {
	if i := u.ownIndex(k, ruleID); i >= 0 {
		r := &u.Own[k][i]
		if enabled != nil {
			r.Enabled = *enabled
		}
		if actions != nil {
			r.Actions = actions
		}
		return nil
	}
	all := predefined()
	def, ok := all.Find(k, ruleID)
	if !ok {
		return notFound(k, ruleID)
	}
	if u.Changed == nil {
		u.Changed = map[Kind]map[string]change{}
	}
	if u.Changed[k] == nil {
		u.Changed[k] = map[string]change{}
	}
	c := u.Changed[k][ruleID]
	if enabled != nil {
		c.Enabled = enabled
		if *enabled == def.Enabled {
			c.Enabled = nil
		}
	}
	if actions != nil {
		c.Actions = &actions
		if sameActions(actions, def.Actions) {
			c.Actions = nil
		}
	}
	u.Changed[k][ruleID] = c
	if c.Enabled == nil && c.Actions == nil {
		delete(u.Changed[k], ruleID)
	}
	if len(u.Changed[k]) == 0 {
		delete(u.Changed, k)
	}
	return nil
}

func notFound(k Kind, ruleID string) error {
	return httpapi.NotFound("the push rule was not found: %s %s", k, ruleID)
}

// Storage: one item per user holds userRules, so that reading a whole
// ruleset is one GetItem. Writes are read-modify-write, made safe against
// concurrent writers (clients change several rules at once) by a revision:
// a write from revision r creates the marker (user|<id>, push_rules|rev|<r>)
// in the same transaction as the new item, so that of two writers that read
// r, one fails and retries. Revisions are random, never reused, and markers
// expire after an hour.
const (
	rulesSK      = "push_rules"
	revSKPrefix  = "push_rules|rev|"
	revLifetime  = time.Hour
	updateTries  = 12
	updateJitter = 15 * time.Millisecond
)

type rulesItem struct {
	PK    string `dynamodbav:"pk"`
	SK    string `dynamodbav:"sk"`
	Rev   string `dynamodbav:"rev"`
	Rules string `dynamodbav:"rules"`
	// UpdatedTS (Unix ms) lets /sync tell whether the rules changed since a
	// position, as account data's updated_ts does.
	UpdatedTS int64 `dynamodbav:"updated_ts"`
}

type revItem struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Expires int64  `dynamodbav:"expires_at"`
}

func userPK(userID string) string { return "user|" + userID }

// load reads a user's changes and their revision ("" when there is no item).
func (s *Service) load(ctx context.Context, userID string) (userRules, string, error) {
	u, it, err := s.loadItem(ctx, userID)
	return u, it.Rev, err
}

// loadItem reads a user's changes and the item holding them (the zero item
// when there is none).
func (s *Service) loadItem(ctx context.Context, userID string) (userRules, rulesItem, error) {
	var it rulesItem
	err := s.Store.Get(ctx, store.Key{PK: userPK(userID), SK: rulesSK}, &it)
	if errors.Is(err, store.ErrNotFound) {
		return userRules{}, rulesItem{}, nil
	}
	if err != nil {
		return userRules{}, rulesItem{}, fmt.Errorf("push rules of %s: %w", userID, err)
	}
	var u userRules
	if err := json.Unmarshal([]byte(it.Rules), &u); err != nil {
		return userRules{}, rulesItem{}, fmt.Errorf("push rules of %s: decode: %w", userID, err)
	}
	return u, it, nil
}

// Rules returns the user's whole ruleset, defaults and their own merged, as
// GET /pushrules/global/ shows it: one read.
func (s *Service) Rules(ctx context.Context, userID string) (Ruleset, error) {
	u, _, err := s.load(ctx, userID)
	if err != nil {
		return Ruleset{}, err
	}
	return u.merge(userID), nil
}

// update applies fn to the user's changes and stores the result, retrying
// when another writer got there first. Errors from fn are returned as they
// are; a result over DynamoDB's 400 KB item limit is 413 M_TOO_LARGE.
func (s *Service) update(ctx context.Context, userID string, fn func(*userRules) error) error {
	for try := 0; try < updateTries; try++ {
		u, rev, err := s.load(ctx, userID)
		if err != nil {
			return err
		}
		if err := fn(&u); err != nil {
			return err
		}
		doc, err := json.Marshal(u)
		if err != nil {
			return fmt.Errorf("push rules of %s: encode: %w", userID, err)
		}
		item := rulesItem{PK: userPK(userID), SK: rulesSK, Rev: newRev(), Rules: string(doc), UpdatedTS: s.now().UnixMilli()}
		if rev == "" {
			err = s.Store.Create(ctx, item)
		} else {
			marker := revItem{PK: userPK(userID), SK: revSKPrefix + rev, Expires: s.now().Add(revLifetime).Unix()}
			err = s.Store.Transact(ctx, store.CreateOp(marker), store.PutOp(item))
		}
		switch {
		case err == nil:
			if s.Changed != nil {
				if err := s.Changed(ctx, userID); err != nil {
					return fmt.Errorf("push rules of %s: tell syncs: %w", userID, err)
				}
			}
			return nil
		case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict):
			// Another write won the race: read again and reapply.
			if err := sleep(ctx, jitter(try)); err != nil {
				return err
			}
			continue
		case errors.Is(err, store.ErrItemTooLarge):
			return httpapi.TooLarge("push rules are limited to %d KB per user, and this change would go past it", store.MaxItemSize/1024)
		}
		return fmt.Errorf("push rules of %s: %w", userID, err)
	}
	return fmt.Errorf("push rules of %s: still losing to concurrent writes after %d tries", userID, updateTries)
}

func newRev() string {
	var b [9]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// jitter spreads the retries of writers that lost a race, a little more
// with each try.
func jitter(try int) time.Duration {
	return mrand.N(updateJitter) * time.Duration(1+try/3)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// checkRuleID applies the spec's rules for IDs of rules a user creates: no
// leading dot (kept for predefined rules), no slash or backslash; and, as
// the spec says their IDs are, a room ID for room rules and a user ID for
// sender rules.
func checkRuleID(k Kind, ruleID string) error {
	switch {
	case strings.HasPrefix(ruleID, "."):
		return httpapi.InvalidParam("rule IDs starting with '.' are reserved for predefined rules")
	case strings.ContainsAny(ruleID, `/\`):
		return httpapi.InvalidParam("rule IDs may not contain slashes or backslashes")
	case k == Room && !strings.HasPrefix(ruleID, "!"):
		return httpapi.InvalidParam("the ID of a room rule is the ID of its room, starting with '!'")
	case k == Sender && !strings.HasPrefix(ruleID, "@"):
		return httpapi.InvalidParam("the ID of a sender rule is the user ID of its sender, starting with '@'")
	}
	return nil
}

// AccountData is the m.push_rules account data event's content: the merged
// ruleset under "global", as GET .../account_data/m.push_rules and /sync
// give it.
func (s *Service) AccountData(ctx context.Context, userID string) (any, error) {
	rs, err := s.Rules(ctx, userID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"global": rs}, nil
}

// AccountDataSince is AccountData when the user's rules changed at or
// after since (the zero time: always), for an incremental /sync told of a
// change by Changed; ok is false, and nothing is returned, when they did
// not. One read, as AccountData.
func (s *Service) AccountDataSince(ctx context.Context, userID string, since time.Time) (content any, ok bool, err error) {
	u, it, err := s.loadItem(ctx, userID)
	if err != nil {
		return nil, false, err
	}
	if !since.IsZero() && (it.Rev == "" || it.UpdatedTS < since.UnixMilli()) {
		return nil, false, nil
	}
	return map[string]any{"global": u.merge(userID)}, true, nil
}

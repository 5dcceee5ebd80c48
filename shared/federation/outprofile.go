package federation

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/profile"
)

// ProfileQuery asks other servers for their users' profiles (GET
// /_matrix/federation/v1/query/profile): profile.Service.Remote. Nothing
// is cached, as Synapse caches nothing for the profile endpoints: each
// read is one request to the user's server and no table access.
type ProfileQuery struct {
	Client *fedclient.Client
	// Timeout bounds a query; 0 is 10 s.
	Timeout time.Duration
}

// Profile is userID's profile as their server answers it. A 404 from it
// is profile.ErrNotFound and a 403 stays 403; a server that does not
// answer, or answers anything else, is 502, as Synapse has it.
// https://spec.matrix.org/v1.19/server-server-api/#get_matrixfederationv1queryprofile
func (q *ProfileQuery) Profile(ctx context.Context, userID string) (profile.Profile, error) {
	server, err := profile.ServerOf(userID)
	if err != nil {
		return profile.Profile{}, err
	}
	limit := q.Timeout
	if limit == 0 {
		limit = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var answer struct {
		DisplayName *string `json:"displayname"`
		AvatarURL   *string `json:"avatar_url"`
	}
	err = q.Client.Get(ctx, server, "/_matrix/federation/v1/query/profile?"+url.Values{"user_id": {userID}}.Encode(), &answer)
	if e, ok := fedclient.AsError(err); ok && e.Status == http.StatusNotFound {
		return profile.Profile{}, fmt.Errorf("%s: %w", userID, profile.ErrNotFound)
	} else if ok && e.Status == http.StatusForbidden {
		return profile.Profile{}, httpapi.Forbidden("%s refused the profile of %s: %s", server, userID, e.Message)
	}
	if err != nil {
		return profile.Profile{}, httpapi.Errorf(http.StatusBadGateway, "M_UNKNOWN", "failed to fetch the profile of %s from %s", userID, server)
	}
	var p profile.Profile
	if answer.DisplayName != nil {
		p.DisplayName = *answer.DisplayName
	}
	if answer.AvatarURL != nil {
		p.AvatarURL = *answer.AvatarURL
	}
	return p, nil
}

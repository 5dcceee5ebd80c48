package rooms

import (
	"context"
	"errors"
	"slices"
	"strings"
)

// JoinRoom makes userID join the room roomOrAlias names: a room ID, or an
// alias of this server or of another (RemoteAlias). A room this server
// does not hold is joined through the servers of via, then those the
// alias's server names, then the alias's server (RemoteJoin). It returns
// the room's ID.
func (s *Service) JoinRoom(ctx context.Context, userID, roomOrAlias string, via []string, reason string) (string, error) {
	id, ctx, err := s.enterTarget(ctx, roomOrAlias, via)
	if err != nil {
		return "", err
	}
	return id, s.Join(ctx, userID, id, reason)
}

// KnockRoom is JoinRoom for a knock.
func (s *Service) KnockRoom(ctx context.Context, userID, roomOrAlias string, via []string, reason string) (string, error) {
	id, ctx, err := s.enterTarget(ctx, roomOrAlias, via)
	if err != nil {
		return "", err
	}
	return id, s.Knock(ctx, userID, id, reason)
}

// enterTarget resolves the room a join or knock names, with the servers
// to ask for it in the context (viaKey, read by joinCandidates). Another
// server's alias is resolved through that server (RemoteAlias), the
// servers it names added to the candidates.
func (s *Service) enterTarget(ctx context.Context, v string, via []string) (string, context.Context, error) {
	if len(via) > 0 {
		ctx = context.WithValue(ctx, viaKey{}, via)
	}
	_, server, _ := strings.Cut(v, ":")
	if !strings.HasPrefix(v, "#") || server == s.Signer.ServerName || s.RemoteAlias == nil {
		id, err := s.resolveRoom(ctx, v)
		return id, ctx, err
	}
	if err := ValidAlias(v); err != nil {
		return "", nil, refuse(ErrInvalid, "invalid room alias %q", v)
	}
	id, servers, err := s.RemoteAlias(ctx, v)
	if err != nil {
		return "", nil, err
	}
	return id, context.WithValue(ctx, viaKey{}, append(slices.Clone(via), append(servers, server)...)), nil
}

// resolveRoom turns a room ID or a local alias into a room ID.
func (s *Service) resolveRoom(ctx context.Context, v string) (string, error) {
	if strings.HasPrefix(v, "#") {
		id, err := s.ResolveAlias(ctx, v)
		if errors.Is(err, ErrUnknownAlias) {
			return "", refuse(ErrNotFound, "room alias %s not found", v)
		}
		return id, err
	}
	if !ValidRoomID(v) {
		return "", refuse(ErrInvalid, "invalid room ID or alias %q", v)
	}
	return v, nil
}

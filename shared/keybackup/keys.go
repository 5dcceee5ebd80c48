package keybackup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// Put stores sessions in a version of userID's backup, which must be the
// current one: else *WrongVersionError, or ErrUnknownVersion when the
// version does not exist or was deleted. For each session it keeps the
// better of the stored key and the new one (see better), and answers the
// version's etag and count after. The keys go 99 to a transaction with the
// version item; a transaction that loses a race is read and tried again,
// so the keys of one call may land in several transactions, each once.
func (s *Service) Put(ctx context.Context, userID, version string, sessions []Session) (Status, error) {
	pending, err := prepare(userID, version, sessions)
	if err != nil {
		return Status{}, err
	}
	defer s.lock(userID)()
	lost := 0
	for {
		v, err := s.writable(ctx, userID, version)
		if err != nil {
			return Status{}, err
		}
		rest, err := s.putChunks(ctx, userID, v, pending)
		switch {
		case err == nil:
			return v.status(), nil
		case !errors.Is(err, store.ErrConflict):
			return Status{}, fmt.Errorf("put keys in backup version %s of %s: %w", version, userID, err)
		case len(rest) < len(pending):
			lost = 0
		default:
			lost++
		}
		if lost == maxAttempts {
			return Status{}, fmt.Errorf("put keys in backup version %s of %s: %w", version, userID, ErrBusy)
		}
		pending = rest
		if err := wait(ctx, lost); err != nil {
			return Status{}, err
		}
	}
}

// prepare checks that each session fits in an item, compacts its data, and
// sorts the sessions by room and session, keeping the better key of a
// session given twice: a transaction may touch an item only once.
func prepare(userID, version string, sessions []Session) ([]Session, error) {
	out := make([]Session, 0, len(sessions))
	for _, sess := range sessions {
		data, err := compactObject(sess.Data.SessionData)
		if err != nil {
			return nil, fmt.Errorf("session %s of %s: session_data: %w", sess.SessionID, sess.RoomID, err)
		}
		sess.Data.SessionData = []byte(data)
		if itemSize(userID, version, sess) > store.MaxItemSize {
			return nil, fmt.Errorf("session %s of %s: %w", sess.SessionID, sess.RoomID, ErrTooLarge)
		}
		out = append(out, sess)
	}
	slices.SortStableFunc(out, func(a, b Session) int {
		return cmp.Or(cmp.Compare(a.RoomID, b.RoomID), cmp.Compare(a.SessionID, b.SessionID))
	})
	merged := out[:0]
	for _, sess := range out {
		last := len(merged) - 1
		if last < 0 || merged[last].RoomID != sess.RoomID || merged[last].SessionID != sess.SessionID {
			merged = append(merged, sess)
		} else if better(sess.Data, merged[last].Data) {
			merged[last] = sess
		}
	}
	return merged, nil
}

// writable returns the version item of version if it is the current one.
// One Query; a version that is not current costs a GetItem more to tell an
// old version (*WrongVersionError) from none (ErrUnknownVersion).
func (s *Service) writable(ctx context.Context, userID, version string) (*versionItem, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		_, cur, err := s.head(ctx, userID)
		if err != nil {
			return nil, fmt.Errorf("current backup version of %s: %w", userID, err)
		}
		if cur != nil && cur.Version == version {
			return cur, nil
		}
		if _, err := s.live(ctx, userID, version); err != nil {
			return nil, err
		}
		if cur != nil {
			return nil, &WrongVersionError{Current: cur.Version}
		}
		// The version was made after head read none: read again.
	}
	return nil, fmt.Errorf("current backup version of %s: %w", userID, ErrBusy)
}

// putChunks writes pending in transactions of at most txnKeys keys and
// txnBytes, each rewriting v under its rev. When a transaction fails it
// returns the sessions not yet written.
func (s *Service) putChunks(ctx context.Context, userID string, v *versionItem, pending []Session) ([]Session, error) {
	for len(pending) > 0 {
		n := chunkLen(userID, v.Version, pending)
		ops, added, err := s.changes(ctx, userID, v.Version, pending[:n])
		if err != nil {
			return pending, err
		}
		if len(ops) > 0 {
			next := *v
			next.Count += added
			next.ETag++
			next.Rev++
			ops = append(ops, store.PutIfOp(next, "rev", v.Rev))
			if err := s.Store.Transact(ctx, ops...); err != nil {
				return pending, err
			}
			*v = next
		}
		pending = pending[n:]
	}
	return nil, nil
}

// chunkLen is how many of pending the next transaction takes.
func chunkLen(userID, version string, pending []Session) int {
	size := 0
	for i, sess := range pending {
		size += itemSize(userID, version, sess)
		if i == txnKeys || (i > 0 && size > txnBytes) {
			return i
		}
	}
	return len(pending)
}

// changes reads the stored keys of chunk (one BatchGetItem, 1 RCU per
// key) and returns the writes that put the better keys in place, and how
// many of them are new sessions.
func (s *Service) changes(ctx context.Context, userID, version string, chunk []Session) ([]store.Op, int64, error) {
	pk := keysPK(userID, version)
	keys := make([]store.Key, len(chunk))
	for i, sess := range chunk {
		keys[i] = store.Key{PK: pk, SK: keySK(sess.RoomID, sess.SessionID)}
	}
	stored := make(map[string]KeyData, len(chunk))
	err := s.Store.GetMany(ctx, keys, func(k store.Key, decode func(any) error) error {
		var it keyItem
		if err := decode(&it); err != nil {
			return err
		}
		stored[k.SK] = it.data()
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	var ops []store.Op
	var added int64
	for i, sess := range chunk {
		cur, ok := stored[keys[i].SK]
		if ok && !better(sess.Data, cur) {
			continue
		}
		if !ok {
			added++
		}
		ops = append(ops, store.PutOp(keyItem{
			PK: pk, SK: keys[i].SK,
			FirstMessageIndex: sess.Data.FirstMessageIndex, ForwardedCount: sess.Data.ForwardedCount,
			IsVerified: sess.Data.IsVerified, SessionData: string(sess.Data.SessionData),
		}))
	}
	return ops, added, nil
}

// Keys returns the keys of a version of userID's backup by room ID: all of
// them, or those of roomID when it is not "". An unknown or deleted version
// gives ErrUnknownVersion. A GetItem, then a Query per MB of keys.
func (s *Service) Keys(ctx context.Context, userID, version, roomID string) (map[string]RoomKeys, error) {
	if _, err := s.live(ctx, userID, version); err != nil {
		return nil, err
	}
	q := store.Query{PK: keysPK(userID, version)}
	if roomID != "" {
		q.Prefix = roomPrefix(roomID)
	}
	out := map[string]RoomKeys{}
	for {
		var page []keyItem
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return nil, fmt.Errorf("keys of backup version %s of %s: %w", version, userID, err)
		}
		for i := range page {
			room, session := parseKeySK(page[i].SK)
			rk, ok := out[room]
			if !ok {
				rk = RoomKeys{Sessions: map[string]KeyData{}}
				out[room] = rk
			}
			rk.Sessions[session] = page[i].data()
		}
		if next == "" {
			return out, nil
		}
		q.Cursor = next
	}
}

// Key returns the key of one session in a version of userID's backup:
// ErrUnknownVersion for an unknown or deleted version, ErrKeyNotFound for
// a session it does not hold. The version item and the key are read in one
// BatchGetItem.
func (s *Service) Key(ctx context.Context, userID, version, roomID, sessionID string) (KeyData, error) {
	n, ok := parseVersion(version)
	if !ok {
		return KeyData{}, fmt.Errorf("backup version %q of %s: %w", version, userID, ErrUnknownVersion)
	}
	vk := store.Key{PK: versionsPK(userID), SK: versionSK(n)}
	kk := store.Key{PK: keysPK(userID, version), SK: keySK(roomID, sessionID)}
	var v *versionItem
	var key *keyItem
	err := s.Store.GetMany(ctx, []store.Key{vk, kk}, func(k store.Key, decode func(any) error) error {
		if k == vk {
			v = new(versionItem)
			return decode(v)
		}
		key = new(keyItem)
		return decode(key)
	})
	switch {
	case err != nil:
		return KeyData{}, fmt.Errorf("key of backup version %s of %s: %w", version, userID, err)
	case v == nil || v.Deleted:
		return KeyData{}, fmt.Errorf("backup version %s of %s: %w", version, userID, ErrUnknownVersion)
	case key == nil:
		return KeyData{}, fmt.Errorf("session %s of %s in backup version %s of %s: %w", sessionID, roomID, version, userID, ErrKeyNotFound)
	}
	return key.data(), nil
}

// DeleteKeys deletes keys from a version of userID's backup: all of them,
// those of roomID when sessionID is "", or the one of (roomID, sessionID).
// The version need not be the current one, as in Synapse; an unknown or
// deleted one gives ErrUnknownVersion. It answers the version's etag and
// count after: deleting nothing changes neither.
func (s *Service) DeleteKeys(ctx context.Context, userID, version, roomID, sessionID string) (Status, error) {
	defer s.lock(userID)()
	lost := 0
	for {
		v, err := s.live(ctx, userID, version)
		if err != nil {
			return Status{}, err
		}
		progressed, err := s.deleteMatching(ctx, userID, v, roomID, sessionID)
		switch {
		case err == nil:
			return v.status(), nil
		case !errors.Is(err, store.ErrConflict):
			return Status{}, fmt.Errorf("delete keys of backup version %s of %s: %w", version, userID, err)
		case progressed:
			lost = 0
		default:
			lost++
		}
		if lost == maxAttempts {
			return Status{}, fmt.Errorf("delete keys of backup version %s of %s: %w", version, userID, ErrBusy)
		}
		if err := wait(ctx, lost); err != nil {
			return Status{}, err
		}
	}
}

// deleteMatching deletes the keys DeleteKeys names, read after v, in
// transactions of txnKeys that rewrite v under its rev. It reports whether
// any transaction went through before an error.
func (s *Service) deleteMatching(ctx context.Context, userID string, v *versionItem, roomID, sessionID string) (bool, error) {
	pk := keysPK(userID, v.Version)
	if sessionID != "" {
		k := store.Key{PK: pk, SK: keySK(roomID, sessionID)}
		var it keyItem
		err := s.Store.Get(ctx, k, &it)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return false, s.deleteChunk(ctx, v, []store.Key{k})
	}
	q := store.Query{PK: pk}
	if roomID != "" {
		q.Prefix = roomPrefix(roomID)
	}
	progressed := false
	for {
		var page []store.Key
		next, err := s.Store.QueryPage(ctx, q, &page)
		if err != nil {
			return progressed, err
		}
		for len(page) > 0 {
			n := min(len(page), txnKeys)
			if err := s.deleteChunk(ctx, v, page[:n]); err != nil {
				return progressed, err
			}
			progressed = true
			page = page[n:]
		}
		if next == "" {
			return progressed, nil
		}
		q.Cursor = next
	}
}

// deleteChunk deletes keys and rewrites v under its rev, in one
// transaction.
func (s *Service) deleteChunk(ctx context.Context, v *versionItem, keys []store.Key) error {
	ops := make([]store.Op, 0, len(keys)+1)
	for _, k := range keys {
		ops = append(ops, store.DeleteOp(k))
	}
	next := *v
	next.Count -= int64(len(keys))
	next.ETag++
	next.Rev++
	ops = append(ops, store.PutIfOp(next, "rev", v.Rev))
	if err := s.Store.Transact(ctx, ops...); err != nil {
		return err
	}
	*v = next
	return nil
}

// Package keybackup holds server-side key backups, the spec's "Server-side
// key backups" module: the versions of each user's backup and the encrypted
// megolm session keys stored in them. The server never reads a key; it keeps
// the best one of each session by the spec's rule, and a count and an etag
// per version.
//
// Storage (docs/storage.md, "Key backup"): one item per version in the
// user's partition backup|<user ID>, sort key v|<version, 20 digits>, holding
// the algorithm, auth_data, count, etag and rev; one item per session in a
// partition per version, backupkeys|<user ID>|<version>, sort key <room ID>|
// <session ID> (the room ID escaped, '%' as %25 and '|' as %7C, so a room's
// keys are one prefix). Every write to a version's keys rewrites its version
// item in the same transaction, conditioned on rev: a writer that read the
// keys before another's change fails and reads again, so count never drifts,
// whatever the number of clients and server instances uploading at once.
package keybackup

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// AlgorithmCurve25519 is the backup algorithm the spec defines. Others are
// stored as given, as Synapse does: the server reads neither auth_data nor
// keys.
const AlgorithmCurve25519 = "m.megolm_backup.v1.curve25519-aes-sha2"

// MaxIDLength bounds room and session IDs, in bytes: with the room ID
// escaped (at most three bytes per byte) the sort key stays under
// DynamoDB's 1024 bytes.
const MaxIDLength = 255

// maxSafeInt is the largest integer canonical JSON carries exactly.
const maxSafeInt = 1<<53 - 1

const (
	// txnKeys is how many keys one transaction writes: DynamoDB's 100
	// actions, less one for the version item.
	txnKeys = store.MaxTransactActions - 1
	// txnBytes keeps a transaction under DynamoDB's 4 MB, which the store
	// does not check.
	txnBytes = 3 << 20
	// itemOverhead covers a key item's attribute names, numbers and flag.
	itemOverhead = 64
	// maxAttempts bounds the tries of a write that keeps losing races
	// without making progress.
	maxAttempts = 20
)

// Errors callers can test for with errors.Is.
var (
	ErrUnknownVersion    = errors.New("unknown backup version")
	ErrNoBackup          = errors.New("no current backup version")
	ErrKeyNotFound       = errors.New("key not found")
	ErrAlgorithmMismatch = errors.New("algorithm does not match")
	// ErrTooLarge is a key or auth_data that does not fit in one item.
	ErrTooLarge = errors.New("too large for one item")
	// ErrBusy is a write that lost maxAttempts races in a row.
	ErrBusy = errors.New("backup is busy with other writes")
)

// WrongVersionError is a write of keys to a version that exists but is not
// the current one.
type WrongVersionError struct {
	Current string
}

func (e *WrongVersionError) Error() string {
	return "wrong backup version: the current one is " + e.Current
}

// Service keeps key backups. Use it as a pointer: it holds locks.
type Service struct {
	Store *store.Store
	// locks serialize one process's writes to a user's backup. Across
	// processes the version item's rev decides; the locks only spare the
	// transactions that would lose, which DynamoDB bills too.
	locks [64]sync.Mutex
}

// Version describes one backup version, as GET /room_keys/version sends it.
type Version struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// KeyData is one backed-up session key: the spec's KeyBackupData.
type KeyData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// Session is the key of one megolm session of a room.
type Session struct {
	RoomID, SessionID string
	Data              KeyData
}

// Status is what a change of keys answers: the version's etag and count
// after it.
type Status struct {
	ETag  string `json:"etag"`
	Count int64  `json:"count"`
}

// RoomKeys holds the keys of one room by session ID.
type RoomKeys struct {
	Sessions map[string]KeyData `json:"sessions"`
}

// better reports whether cand should replace cur, by the spec's rule: a
// verified key beats an unverified one; between keys equally verified the
// lower first_message_index wins, then the lower forwarded_count. A key
// equal on all three stays as it is.
func better(cand, cur KeyData) bool {
	if cand.IsVerified != cur.IsVerified {
		return cand.IsVerified
	}
	if cand.FirstMessageIndex != cur.FirstMessageIndex {
		return cand.FirstMessageIndex < cur.FirstMessageIndex
	}
	return cand.ForwardedCount < cur.ForwardedCount
}

type versionItem struct {
	PK        string `dynamodbav:"pk"`
	SK        string `dynamodbav:"sk"`
	Version   string `dynamodbav:"version"`
	Algorithm string `dynamodbav:"algorithm"`
	// AuthData is the JSON object as compact text; dropped on deletion.
	AuthData string `dynamodbav:"auth_data,omitempty"`
	Count    int64  `dynamodbav:"count"`
	ETag     int64  `dynamodbav:"etag"`
	// Rev moves with every write of the item, keys' writes included: the
	// condition of optimistic concurrency.
	Rev     int64 `dynamodbav:"rev"`
	Deleted bool  `dynamodbav:"deleted,omitempty"`
}

func (v *versionItem) info() Version {
	return Version{
		Algorithm: v.Algorithm, AuthData: json.RawMessage(v.AuthData),
		Count: v.Count, ETag: strconv.FormatInt(v.ETag, 10), Version: v.Version,
	}
}

func (v *versionItem) status() Status {
	return Status{ETag: strconv.FormatInt(v.ETag, 10), Count: v.Count}
}

// Short attribute names: a key item is about 1 KB, and each byte over a KB
// costs a write unit more.
type keyItem struct {
	PK                string `dynamodbav:"pk"`
	SK                string `dynamodbav:"sk"`
	FirstMessageIndex int64  `dynamodbav:"fmi"`
	ForwardedCount    int64  `dynamodbav:"fwd"`
	IsVerified        bool   `dynamodbav:"verified"`
	// SessionData is the JSON object as compact text.
	SessionData string `dynamodbav:"data"`
}

func (k *keyItem) data() KeyData {
	return KeyData{FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount,
		IsVerified: k.IsVerified, SessionData: json.RawMessage(k.SessionData)}
}

// tombstone overwrites a key of a deleted version: an expired item reads as
// absent everywhere, and DynamoDB's TTL removes it at no cost.
type tombstone struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Expires int64  `dynamodbav:"expires_at"`
}

func versionsPK(userID string) string { return "backup|" + userID }

const versionPrefix = "v|"

func versionSK(n uint64) string { return fmt.Sprintf("%s%020d", versionPrefix, n) }

func keysPK(userID, version string) string { return "backupkeys|" + userID + "|" + version }

var (
	roomEscaper   = strings.NewReplacer("%", "%25", "|", "%7C")
	roomUnescaper = strings.NewReplacer("%25", "%", "%7C", "|")
)

// roomPrefix begins the sort keys of one room's keys.
func roomPrefix(roomID string) string { return roomEscaper.Replace(roomID) + "|" }

func keySK(roomID, sessionID string) string { return roomPrefix(roomID) + sessionID }

// parseKeySK splits a key item's sort key: the escaped room ID has no '|'.
func parseKeySK(sk string) (roomID, sessionID string) {
	room, session, _ := strings.Cut(sk, "|")
	return roomUnescaper.Replace(room), session
}

// parseVersion reads a version ID as this server makes them: "1", "2", ...
// Anything else names no version.
func parseVersion(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != s {
		return 0, false
	}
	return n, true
}

// itemSize estimates the size of a key item from its strings, on the high
// side.
func itemSize(userID, version string, sess Session) int {
	return len(keysPK(userID, version)) + len(keySK(sess.RoomID, sess.SessionID)) +
		len(sess.Data.SessionData) + itemOverhead
}

// lock serializes this process's writes to userID's backup; call the
// function it returns to unlock.
func (s *Service) lock(userID string) func() {
	h := fnv.New32a()
	h.Write([]byte(userID))
	mu := &s.locks[h.Sum32()%uint32(len(s.locks))]
	mu.Lock()
	return mu.Unlock
}

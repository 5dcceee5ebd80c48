// Package config loads Cirrus's settings: a YAML file locally, environment
// variables in Lambda, both with the keys a Synapse operator already knows
// where they mean the same thing.
//
// Every key can be set by an environment variable named CIRRUS_ followed by the
// key in upper case; nested keys join with an underscore (CIRRUS_EMAIL_NOTIF_FROM).
// The environment wins over the file, so a deployment can override one value
// without editing the file.
package config

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/protocol"
)

// Config is the whole of Cirrus's configuration. Field tags name the YAML key;
// the environment variable is derived from it.
type Config struct {
	// ServerName is the Matrix server name: the part after the colon in user IDs.
	ServerName string `yaml:"server_name"`
	// PublicBaseURL is where clients reach the client-server API.
	PublicBaseURL string `yaml:"public_baseurl"`
	// EnableRegistration opens POST /register to anyone; off, as in Synapse.
	EnableRegistration bool `yaml:"enable_registration"`
	// RegistrationRequiresToken limits open registration to holders of a
	// registration token (made with the admin API).
	RegistrationRequiresToken bool `yaml:"registration_requires_token"`
	// RegistrationSharedSecret lets an operator create users (cirrus register,
	// Synapse's register_new_matrix_user) while registration is closed.
	RegistrationSharedSecret string `yaml:"registration_shared_secret"`
	// RegistrationSharedSecretPath is a file holding the shared secret instead;
	// locally it is made on first start when no secret is configured.
	RegistrationSharedSecretPath string `yaml:"registration_shared_secret_path"`
	// SigningKeyPath is a Synapse-format signing key file, created on first start.
	SigningKeyPath string `yaml:"signing_key_path"`
	// SigningKey is the key file's content itself, for Lambda, where it comes
	// from a secret rather than a file.
	SigningKey string `yaml:"signing_key"`
	// SigningKeySeed is any secret string the key derives from (keys.FromSeed),
	// used when neither signing_key nor signing_key_path is set: the CDK stack
	// generates it into Secrets Manager.
	SigningKeySeed string `yaml:"signing_key_seed"`
	// ServeServerWellknown makes /.well-known/matrix/server delegate
	// federation to the host of public_baseurl.
	ServeServerWellknown bool `yaml:"serve_server_wellknown"`
	// WebClientLocation is the web client the page at / links to; empty, the
	// page names none. Synapse's key, but / shows a page with the link rather
	// than redirecting, so that a visitor sees the server runs.
	WebClientLocation string `yaml:"web_client_location"`
	// MaxRequestSize bounds request bodies, in bytes.
	MaxRequestSize int64 `yaml:"max_request_size"`
	// DefaultRoomVersion is the version of rooms created without a
	// room_version, and the default /capabilities announces; Synapse's key.
	// It must be one this server supports (events.Versions); 12, the spec's
	// default, unless set.
	DefaultRoomVersion string `yaml:"default_room_version"`
	// TURN is Synapse's TURN settings, at the top level as there.
	TURN `yaml:",inline"`
	// Email is the email block; nil when mail is not configured.
	Email *Email `yaml:"email"`
	// ServerNotices is Synapse's server_notices block; nil turns server
	// notices (the admin API's send_server_notice) off.
	ServerNotices *ServerNotices `yaml:"server_notices"`

	// DynamoDBTable is the one table all state lives in.
	DynamoDBTable string `yaml:"dynamodb_table"`
	// DynamoDBEndpoint points at a DynamoDB other than AWS's; locally, empty
	// means the embedded one. DYNAMODB_ENDPOINT sets it too.
	DynamoDBEndpoint string `yaml:"dynamodb_endpoint"`
	// QueueURL is the SQS queue of outbound federation work; empty locally,
	// where an in-process queue stands in.
	QueueURL string `yaml:"queue_url"`
	// LongQueueURL is the SQS queue of the jobs that outlast the sender's
	// timeout (loading the state of a room joined with partial state),
	// drained by a function whose timeout allows them; empty, they go to
	// queue_url. Locally one in-process queue runs both.
	LongQueueURL string `yaml:"long_queue_url"`
	// LambdaResponseLimit is the largest response a function may return, in
	// bytes, as Lambda counts it (shared/bigbody): a larger one is gzipped,
	// or put into LargeResponseBucket and redirected to; requests over
	// Lambda's 6 MB are refused. 6 MB in Lambda; 0 (off) locally, where
	// setting it runs the same behaviour.
	LambdaResponseLimit int64 `yaml:"lambda_response_limit"`
	// LargeResponseBucket is the S3 bucket of responses over the limit;
	// locally, empty means an embedded S3 API when the limit is set.
	LargeResponseBucket string `yaml:"large_response_bucket"`
	// S3Endpoint points at an S3 API other than AWS's, such as MinIO.
	S3Endpoint string `yaml:"s3_endpoint"`

	// Media (shared/media): the content repository.
	//
	// MediaBucket is the S3 bucket uploaded files are kept in; locally,
	// empty means the embedded S3 API (files under data_dir/media). In
	// Lambda, empty turns uploads off (the stack names its bucket).
	MediaBucket string `yaml:"media_bucket"`
	// MaxUploadSize is the largest upload in bytes, Synapse's
	// max_upload_size, advertised as m.upload.size. Its default,
	// MaxLambdaUpload, is the most API Gateway and Lambda let through; only
	// `cirrus serve` may be given more.
	MaxUploadSize int64 `yaml:"max_upload_size"`
	// MediaFreeze is the date (2006-01-02, or an RFC 3339 time) from which
	// newly uploaded media is served only by the authenticated endpoints
	// (spec v1.11's freeze of /_matrix/media/v3/download and thumbnail):
	// media uploaded before it stays readable without a token. Empty,
	// nothing is: the freeze is at the beginning.
	MediaFreeze string `yaml:"media_freeze"`
	// MaxPendingMediaUploads is how many media IDs a user may hold from
	// POST /_matrix/media/v1/create with nothing uploaded yet; Synapse's
	// key and default, 5.
	MaxPendingMediaUploads int64 `yaml:"max_pending_media_uploads"`
	// UnusedExpirationTime is how long such an ID waits for its upload
	// (Synapse's unused_expiration_time, a duration such as 24h, its
	// default).
	UnusedExpirationTime string `yaml:"unused_expiration_time"`
	// MediaRetention deletes media nobody downloaded for a while
	// (Synapse's media_retention, shared/media retention.go).
	MediaRetention MediaRetention `yaml:"media_retention"`
	// MediaUploadLimits are Synapse's media_upload_limits: how many bytes
	// a user may upload in any time_period (each a duration such as 1h,
	// max_size a size such as 100M); none, no budget. Past one an upload
	// is 400 M_RESOURCE_LIMIT_EXCEEDED, as in Synapse. Environment:
	// CIRRUS_MEDIA_UPLOAD_LIMITS as a JSON list.
	MediaUploadLimits []MediaUploadLimit `yaml:"media_upload_limits"`
	// RCMediaUpload limits each user's uploads (POST and PUT /upload)
	// in the shape of Synapse's rc_* settings (Synapse has no such limit
	// on uploads; rc_media_create is its nearest). 0 turns it off.
	RCMediaUpload RateLimit `yaml:"rc_media_upload"`
	// URL previews (GET /_matrix/client/v1/media/preview_url), Synapse's
	// keys. URLPreviewEnabled turns them on (off by default, as in
	// Synapse: the server then fetches pages its users name).
	URLPreviewEnabled bool `yaml:"url_preview_enabled"`
	// URLPreviewIPRangeBlacklist are the addresses (CIDR ranges or single
	// addresses) a preview never connects to; unset (nil, or an empty
	// environment variable) means urlpreview.DefaultBlacklist, Synapse's
	// recommended list: loopback, private, link-local, multicast and the
	// documentation ranges. URLPreviewIPRangeWhitelist are exceptions.
	URLPreviewIPRangeBlacklist []string `yaml:"url_preview_ip_range_blacklist"`
	URLPreviewIPRangeWhitelist []string `yaml:"url_preview_ip_range_whitelist"`
	// MaxSpiderSize bounds each body a preview reads, the page and its
	// og:image apart, in bytes (Synapse's max_spider_size, default 10M).
	MaxSpiderSize int64 `yaml:"max_spider_size"`

	// ClientListen and FederationListen are the local listeners of cirrus serve.
	// Unset, FederationListen is where the server name says other servers
	// connect (federationListenFor).
	ClientListen     string `yaml:"client_listen"`
	FederationListen string `yaml:"federation_listen"`
	// DataDir holds the local table snapshot, the signing key and mail.
	DataDir string `yaml:"data_dir"`
	// TLSCertificatePath and TLSPrivateKeyPath are the federation listener's
	// certificate; when empty, one is minted from the CA below or self-signed.
	TLSCertificatePath string `yaml:"tls_certificate_path"`
	TLSPrivateKeyPath  string `yaml:"tls_private_key_path"`
	// TLSCACertificatePath and TLSCAKeyPath are a CA that mints the federation
	// certificate, as test suites that run several servers provide.
	TLSCACertificatePath string `yaml:"tls_ca_certificate_path"`
	TLSCAKeyPath         string `yaml:"tls_ca_key_path"`

	// Outbound federation (shared/fedclient), with Synapse's keys.
	//
	// FederationVerifyCertificates checks the certificates of other
	// servers; on unless set off.
	FederationVerifyCertificates bool `yaml:"federation_verify_certificates"`
	// FederationCustomCAList are PEM files of CAs trusted for outbound
	// federation, in addition to the system's (Synapse replaces them).
	FederationCustomCAList []string `yaml:"federation_custom_ca_list"`
	// IPRangeBlacklist are the IP ranges (CIDR or single addresses)
	// outbound requests never connect to; unset, Synapse's default list of
	// private, loopback and link-local ranges (fedclient.DefaultIPRangeBlacklist).
	IPRangeBlacklist []string `yaml:"ip_range_blacklist"`
	// IPRangeWhitelist are exceptions to the blacklist, such as
	// 127.0.0.0/8 for a test deployment on one machine.
	IPRangeWhitelist []string `yaml:"ip_range_whitelist"`
	// FederationDomainWhitelist are the only servers this one federates
	// with; unset, all.
	FederationDomainWhitelist []string `yaml:"federation_domain_whitelist"`
	// FederationHosts maps server names to the host:port their federation
	// API is at, instead of server discovery: test deployments that run
	// several servers on one machine. In the environment, one variable of
	// name=host:port pairs separated by commas.
	FederationHosts map[string]string `yaml:"federation_hosts"`

	// RegistrationsRequire3PID are the kinds of address a new account must
	// validate (Synapse's key): only "email" is supported, and it needs
	// the email block.
	RegistrationsRequire3PID []string `yaml:"registrations_require_3pid"`
	// RequestTokenInhibit3PIDErrors hides whether an address is bound to an
	// account: requestToken answers as if it sent the mail (Synapse's key,
	// on by default here). Environment: CIRRUS_REQUEST_TOKEN_INHIBIT_3PID_ERRORS.
	RequestTokenInhibit3PIDErrors bool `yaml:"request_token_inhibit_3pid_errors"`
	// RC3PIDValidation limits validation mail, per address and per client
	// IP address (Synapse's rc_3pid_validation and its default).
	RC3PIDValidation RateLimit `yaml:"rc_3pid_validation"`

	// RateLimits bound login and registration attempts per minute.
	RateLimits RateLimits `yaml:"rate_limits"`
	// Sync tunes /sync long-polling.
	Sync Sync `yaml:"sync"`
	// Federation is Synapse's federation block: the backoff of servers
	// that do not answer.
	Federation Federation `yaml:"federation"`
	// Presence is Synapse's presence block.
	Presence Presence `yaml:"presence"`
	// UserDirectory is Synapse's user_directory block.
	UserDirectory UserDirectory `yaml:"user_directory"`
	// EnableSearch indexes messages, names and topics as they are sent and
	// serves POST /search (shared/search); Synapse's key, on by default.
	// Off, nothing is indexed and /search answers 400: operators who want
	// no search index pay no write units for it.
	EnableSearch bool `yaml:"enable_search"`

	// TrustedKeyServers are Synapse's trusted_key_servers: the notaries
	// asked for another server's signing keys when that server does not
	// answer for itself (shared/serverkeys). None unless set, unlike
	// Synapse's matrix.org: a notary is trusted with every server's keys,
	// so an operator names one. In the environment, one variable holding
	// the list as JSON: CIRRUS_TRUSTED_KEY_SERVERS='[{"server_name":
	// "matrix.org","verify_keys":{"ed25519:auto":"Noi6..."}}]'.
	TrustedKeyServers []TrustedKeyServer `yaml:"trusted_key_servers"`

	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`

	// baseURLDerived says PublicBaseURL came from ClientListen, not the operator.
	baseURLDerived bool
}

// Email is the email block: Synapse's keys where they exist.
type Email struct {
	// NotifFrom is the sender address, such as "Cirrus <noreply@example.org>".
	NotifFrom string `yaml:"notif_from"`
	// AppName names the service in mail text.
	AppName string `yaml:"app_name"`
	// SESConfigurationSet is the SES configuration set mail is sent with;
	// its event destination reports bounces and complaints (shared/mail
	// suppression).
	SESConfigurationSet string `yaml:"ses_configuration_set"`
	// ClientBaseURL is the web client that notification mail links to;
	// empty, web_client_location.
	ClientBaseURL string `yaml:"client_base_url"`
	// ValidationTokenLifetime is how long the link in a validation mail
	// works, a duration such as 1h (Synapse's key and default).
	ValidationTokenLifetime string `yaml:"validation_token_lifetime"`
	// EnableNotifs sends notification mail through email pushers (off by
	// default, as in Synapse).
	EnableNotifs bool `yaml:"enable_notifs"`
	// NotifForNewUsers gives each user who registers with an email address
	// an email pusher for it when enable_notifs is on; Synapse's key. Unset
	// means on, as in Synapse.
	NotifForNewUsers *bool `yaml:"notif_for_new_users"`
	// NotifDelayBeforeMail is how long a notification stays unread before
	// it is mailed, a duration such as 10m (Synapse's key and default).
	NotifDelayBeforeMail string `yaml:"notif_delay_before_mail"`
	// TemplateDir holds templates that replace the embedded ones, file by
	// file (shared/mail templates); a file there that is not one of the
	// expected names, or that does not parse, stops the server at start-up.
	TemplateDir string `yaml:"template_dir"`
}

// Defaults of the email block, Synapse's.
const (
	DefaultValidationTokenLifetime = time.Hour
	DefaultNotifDelayBeforeMail    = 10 * time.Minute
	DefaultAppName                 = "Matrix"
)

// ValidationLifetime is validation_token_lifetime, its default when unset.
func (e *Email) ValidationLifetime() time.Duration {
	return durationOr(e.ValidationTokenLifetime, DefaultValidationTokenLifetime)
}

// NotifDelay is notif_delay_before_mail, its default when unset.
func (e *Email) NotifDelay() time.Duration {
	return durationOr(e.NotifDelayBeforeMail, DefaultNotifDelayBeforeMail)
}

// NotifNewUsers reports whether new users get an email pusher: only with
// enable_notifs, and unless notif_for_new_users is off.
func (e *Email) NotifNewUsers() bool {
	return e.EnableNotifs && (e.NotifForNewUsers == nil || *e.NotifForNewUsers)
}

// App is app_name, "Matrix" when unset.
func (e *Email) App() string {
	if e.AppName == "" {
		return DefaultAppName
	}
	return e.AppName
}

// durationOr parses v (checked by Validate), or gives def when v is empty.
func durationOr(v string, def time.Duration) time.Duration {
	d, err := time.ParseDuration(v)
	if v == "" || err != nil {
		return def
	}
	return d
}

// ServerNotices is Synapse's server_notices block: who sends server notices
// and how the room each user gets them in looks. In the environment,
// CIRRUS_SERVER_NOTICES_SYSTEM_MXID_LOCALPART and so on.
type ServerNotices struct {
	// SystemMxidLocalpart is the localpart of the user notices come from,
	// such as "server"; required. That account is made on first use.
	SystemMxidLocalpart string `yaml:"system_mxid_localpart"`
	// SystemMxidDisplayName and SystemMxidAvatarURL are that user's profile.
	SystemMxidDisplayName string `yaml:"system_mxid_display_name"`
	SystemMxidAvatarURL   string `yaml:"system_mxid_avatar_url"`
	// RoomName is the notices room's name; "Server Notices" when empty,
	// Synapse's default.
	RoomName string `yaml:"room_name"`
	// RoomAvatarURL and RoomTopic are the room's avatar and topic.
	RoomAvatarURL string `yaml:"room_avatar_url"`
	RoomTopic     string `yaml:"room_topic"`
	// AutoJoin joins users to their notices room instead of inviting them.
	AutoJoin bool `yaml:"auto_join"`
}

// TrustedKeyServer is one notary of trusted_key_servers: its server name
// and the keys its answers must be signed with. Unlike Synapse, the keys
// are required: a notary's answers are believed only with its signature.
type TrustedKeyServer struct {
	ServerName string `yaml:"server_name"`
	// VerifyKeys maps key IDs (ed25519:...) to unpadded base64 public keys.
	VerifyKeys map[string]string `yaml:"verify_keys"`
}

// DecodeVerifyKey reads an ed25519 public key in base64, padded or not.
func DecodeVerifyKey(b64 string) (ed25519.PublicKey, error) {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("not a 32-byte ed25519 key in base64")
	}
	return ed25519.PublicKey(raw), nil
}

// DefaultServerNoticesRoomName is Synapse's default room_name.
const DefaultServerNoticesRoomName = "Server Notices"

// TURN names the TURN servers that clients relay VoIP calls through, and
// how they get credentials: Synapse's keys, with their meaning.
type TURN struct {
	// TurnURIs are the servers' URIs, such as turn:turn.example.org?transport=udp;
	// none, and /voip/turnServer answers {}, as Synapse does. In the
	// environment: one variable, the URIs separated by commas.
	TurnURIs []string `yaml:"turn_uris"`
	// TurnSharedSecret is the secret the TURN server shares (coturn's
	// static-auth-secret): each user gets a username and password of their
	// own that the server accepts until they expire.
	TurnSharedSecret string `yaml:"turn_shared_secret"`
	// TurnUsername and TurnPassword are credentials everyone gets, when
	// there is no shared secret.
	TurnUsername string `yaml:"turn_username"`
	TurnPassword string `yaml:"turn_password"`
	// TurnUserLifetime is how long credentials made from the shared secret
	// last: Synapse's duration, milliseconds or a number with s, m, h, d, w
	// or y; one hour when empty.
	TurnUserLifetime string `yaml:"turn_user_lifetime"`
}

// DefaultTurnUserLifetime is Synapse's default turn_user_lifetime.
const DefaultTurnUserLifetime = time.Hour

// TurnLifetime is turn_user_lifetime as a duration (Validate has checked it).
func (t TURN) TurnLifetime() time.Duration {
	d, err := ParseDuration(t.TurnUserLifetime)
	if err != nil || t.TurnUserLifetime == "" {
		return DefaultTurnUserLifetime
	}
	return d
}

// ParseDuration reads a duration as Synapse's config does: a whole number of
// milliseconds, or a number followed by s, m, h, d, w or y (a year being
// 365 days).
func ParseDuration(v string) (time.Duration, error) {
	units := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour,
		'd': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}
	v = strings.TrimSpace(v)
	unit := time.Millisecond
	if v != "" {
		if u, ok := units[v[len(v)-1]]; ok {
			unit, v = u, v[:len(v)-1]
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n > int64(1<<62)/int64(unit) {
		return 0, fmt.Errorf("%q is not a duration such as 1h, 30m or 86400000 (milliseconds)", v)
	}
	return time.Duration(n) * unit, nil
}

// ParseDate reads a day (2006-01-02, midnight UTC) or an RFC 3339 time.
func ParseDate(v string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a date such as 2024-09-01 or a time such as 2024-09-01T12:00:00Z", v)
	}
	return t, nil
}

// MediaFreezeTime is media_freeze as a time (Validate has checked it); the
// zero time when unset, before every upload.
func (c *Config) MediaFreezeTime() time.Time {
	t, _ := ParseDate(c.MediaFreeze)
	return t
}

// MediaRetention is Synapse's media_retention block: durations such as
// 90d; unset keeps media for ever. Local media is deleted once unused for
// LocalMediaLifetime, cached copies of other servers' for
// RemoteMediaLifetime, by the hourly job of the media.retention kind.
// Environment: CIRRUS_MEDIA_RETENTION_LOCAL_MEDIA_LIFETIME and _REMOTE_.
type MediaRetention struct {
	LocalMediaLifetime  string `yaml:"local_media_lifetime"`
	RemoteMediaLifetime string `yaml:"remote_media_lifetime"`
}

// Local and Remote are the lifetimes as durations (Validate has checked
// them); 0 when unset.
func (r MediaRetention) Local() time.Duration {
	d, _ := ParseDuration(r.LocalMediaLifetime)
	return d
}
func (r MediaRetention) Remote() time.Duration {
	d, _ := ParseDuration(r.RemoteMediaLifetime)
	return d
}

// MediaUploadLimit is one of media_upload_limits.
type MediaUploadLimit struct {
	TimePeriod string `yaml:"time_period"`
	MaxSize    string `yaml:"max_size"`
}

// Period and Bytes are the limit's values (Validate has checked them).
func (l MediaUploadLimit) Period() time.Duration {
	d, _ := ParseDuration(l.TimePeriod)
	return d
}
func (l MediaUploadLimit) Bytes() int64 {
	n, _ := ParseSize(l.MaxSize)
	return n
}

// RateLimit is Synapse's shape of a rate limit: per_second requests on
// average, burst_count at once.
type RateLimit struct {
	PerSecond  float64 `yaml:"per_second"`
	BurstCount float64 `yaml:"burst_count"`
}

// DefaultRCMediaUpload is Synapse's default rc_media_create: uploads are
// no cheaper than creates.
var DefaultRCMediaUpload = RateLimit{PerSecond: 10, BurstCount: 50}

// DefaultRC3PIDValidation is Synapse's default rc_3pid_validation: a burst
// of five mails, then one every five minutes or so.
var DefaultRC3PIDValidation = RateLimit{PerSecond: 0.003, BurstCount: 5}

// ParseSize reads a size as Synapse's config does: a whole number of
// bytes, or one followed by K, M, G or T (powers of 1024).
func ParseSize(v string) (int64, error) {
	units := map[byte]int64{'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
	v = strings.TrimSpace(v)
	unit := int64(1)
	if v != "" {
		if u, ok := units[v[len(v)-1]]; ok {
			unit, v = u, v[:len(v)-1]
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/unit {
		return 0, fmt.Errorf("%q is not a size such as 100M, 1G or 1048576 (bytes)", v)
	}
	return n * unit, nil
}

// UnusedExpiration is unused_expiration_time as a duration (Validate has
// checked it).
func (c *Config) UnusedExpiration() time.Duration {
	d, err := ParseDuration(c.UnusedExpirationTime)
	if err != nil || c.UnusedExpirationTime == "" {
		return DefaultUnusedExpiration
	}
	return d
}

// Sync tunes /sync long-polling: how often a waiting request looks for news
// (each look is one small read) and the longest it waits, which must stay
// under API Gateway's 30 s.
type Sync struct {
	PollIntervalMS int64 `yaml:"poll_interval_ms"`
	MaxTimeoutMS   int64 `yaml:"max_timeout_ms"`
	// NewsQueueURL is the SQS queue through which the processes that
	// write news wake the sync tier's waiting syncs (cirrus sync-tier);
	// empty when there is no tier.
	NewsQueueURL string `yaml:"news_queue_url"`
}

var defaultSync = Sync{PollIntervalMS: 1000, MaxTimeoutMS: 25000}

// Federation holds Synapse's destination backoff: after a failed
// transaction a server is tried again after DestinationMinRetryInterval,
// that multiplied by DestinationRetryMultiplier after each further failure,
// up to DestinationMaxRetryInterval. The intervals are Synapse's durations
// (ParseDuration); empty, and a zero multiplier, mean Synapse's defaults
// (10m, 2, 1w), which shared/sender holds.
type Federation struct {
	DestinationMinRetryInterval string `yaml:"destination_min_retry_interval"`
	DestinationRetryMultiplier  int64  `yaml:"destination_retry_multiplier"`
	DestinationMaxRetryInterval string `yaml:"destination_max_retry_interval"`
}

// RetryIntervals returns the least and greatest backoff, zero where unset
// (Validate has checked them).
func (f Federation) RetryIntervals() (least, most time.Duration) {
	if f.DestinationMinRetryInterval != "" {
		least, _ = ParseDuration(f.DestinationMinRetryInterval)
	}
	if f.DestinationMaxRetryInterval != "" {
		most, _ = ParseDuration(f.DestinationMaxRetryInterval)
	}
	return least, most
}

// Presence turns presence on or off. On, a change of a user's presence
// costs a write for each local user sharing a room with them; off, everyone
// is offline and no presence is stored or sent.
type Presence struct {
	Enabled bool `yaml:"enabled"`
}

// UserDirectory is Synapse's user_directory block: whether
// /user_directory/search finds anyone, and whom.
type UserDirectory struct {
	// Enabled off makes every search find no one; on unless set.
	Enabled bool `yaml:"enabled"`
	// SearchAllUsers finds every local user, not only those who share a
	// room with the searcher or sit in a public room; off unless set.
	SearchAllUsers bool `yaml:"search_all_users"`
}

// RateLimits are attempts allowed per minute; 0 turns a limit off (for
// benchmarks and test suites, never for a public server).
type RateLimits struct {
	LoginPerAddress    int64 `yaml:"login_per_address"`
	LoginPerAccount    int64 `yaml:"login_per_account"`
	RegisterPerAddress int64 `yaml:"register_per_address"`
}

// defaultRateLimits let a person retry a mistyped password a few times a
// minute and stop a password-guessing loop.
var defaultRateLimits = RateLimits{LoginPerAddress: 20, LoginPerAccount: 10, RegisterPerAddress: 10}

// DefaultWebClient is the web_client_location of a server that names none:
// Element's public instance, which connects to any homeserver.
const DefaultWebClient = "https://app.element.io/"

// LambdaPayloadLimit is the most a Lambda function's request or response
// carries: 6 MB, counted as the JSON document of the invocation.
const LambdaPayloadLimit = 6 << 20

// MaxLambdaUpload is the largest upload that reaches a Lambda function
// through API Gateway's HTTP API: the default max_upload_size. The request
// event is at most LambdaPayloadLimit (6 MB) as a JSON document, and a binary
// body travels in it base64-encoded, 4 bytes for every 3; the rest of the
// event (headers, which the HTTP API caps at 10 KB, the path and query twice
// over, the request context) is kept under 64 KB. (6 MiB - 64 KiB) * 3/4 =
// 4,669,440 bytes, about 4.45 MiB: the largest file that arrives whole.
const MaxLambdaUpload = (LambdaPayloadLimit - 64<<10) / 4 * 3

// DefaultMaxPendingMediaUploads and DefaultUnusedExpiration are Synapse's
// defaults for asynchronous uploads (MSC2246).
const (
	DefaultMaxPendingMediaUploads = 5
	DefaultUnusedExpiration       = 24 * time.Hour
)

// DefaultMaxSpiderSize is Synapse's max_spider_size, 10M.
const DefaultMaxSpiderSize = 10 << 20

// minResponseLimit leaves room for headers and any small answer.
const minResponseLimit = 16 << 10

// LookupFunc reads one environment variable; os.LookupEnv is one.
type LookupFunc func(key string) (string, bool)

// Defaults are the settings of `cirrus serve` with no config file: everything
// on loopback, registration closed, data under ./data.
func Defaults() Config {
	return Config{
		ServerName:                    "localhost:8008",
		ServeServerWellknown:          true,
		WebClientLocation:             DefaultWebClient,
		MaxRequestSize:                1 << 20,
		MaxUploadSize:                 MaxLambdaUpload,
		MaxPendingMediaUploads:        DefaultMaxPendingMediaUploads,
		MaxSpiderSize:                 DefaultMaxSpiderSize,
		RCMediaUpload:                 DefaultRCMediaUpload,
		RC3PIDValidation:              DefaultRC3PIDValidation,
		RequestTokenInhibit3PIDErrors: true,
		DefaultRoomVersion:            events.DefaultVersion,
		DynamoDBTable:                 "cirrus",
		ClientListen:                  "127.0.0.1:8008",
		DataDir:                       "data",
		RateLimits:                    defaultRateLimits,
		Sync:                          defaultSync,
		Presence:                      Presence{Enabled: true},
		UserDirectory:                 UserDirectory{Enabled: true},
		FederationVerifyCertificates:  true,
		EnableSearch:                  true,
		LogLevel:                      "info",
	}
}

// Load reads the optional YAML file at path (empty for none) over the local
// defaults, then the environment, then fills derived values and validates.
func Load(path string, lookup LookupFunc) (*Config, error) {
	c := Defaults()
	if path != "" {
		if err := c.readFile(path); err != nil {
			return nil, err
		}
	}
	if err := c.applyEnv(lookup); err != nil {
		return nil, err
	}
	c.fillLocal()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// LoadLambda reads the configuration of a Lambda function from the
// environment alone. There are no local defaults: a server name must be
// given, and nothing listens or writes to disk.
func LoadLambda(lookup LookupFunc) (*Config, error) {
	c := Config{
		ServeServerWellknown:          true,
		WebClientLocation:             DefaultWebClient,
		MaxRequestSize:                1 << 20,
		MaxUploadSize:                 MaxLambdaUpload,
		MaxPendingMediaUploads:        DefaultMaxPendingMediaUploads,
		MaxSpiderSize:                 DefaultMaxSpiderSize,
		RCMediaUpload:                 DefaultRCMediaUpload,
		RC3PIDValidation:              DefaultRC3PIDValidation,
		RequestTokenInhibit3PIDErrors: true,
		DefaultRoomVersion:            events.DefaultVersion,
		DynamoDBTable:                 "cirrus",
		LambdaResponseLimit:           LambdaPayloadLimit,
		RateLimits:                    defaultRateLimits,
		Sync:                          defaultSync,
		Presence:                      Presence{Enabled: true},
		UserDirectory:                 UserDirectory{Enabled: true},
		FederationVerifyCertificates:  true,
		EnableSearch:                  true,
		LogLevel:                      "info",
	}
	if err := c.applyEnv(lookup); err != nil {
		return nil, err
	}
	if c.ServerName == "" {
		return nil, errors.New("config: server_name is missing: set CIRRUS_SERVER_NAME to the Matrix server name, such as example.org")
	}
	if c.PublicBaseURL == "" && protocol.ValidServerName(c.ServerName) {
		c.PublicBaseURL = "https://" + c.ServerName + "/"
		c.baseURLDerived = true
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.MaxUploadSize > MaxLambdaUpload {
		return nil, fmt.Errorf("config: max_upload_size %d is over %d, the largest upload API Gateway and Lambda let through (a 6 MB event, the body in base64): lower it", c.MaxUploadSize, MaxLambdaUpload)
	}
	return &c, nil
}

func (c *Config) readFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelt key must not be silently ignored
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}

// fillLocal derives what a local operator need not say: where clients and
// other servers reach this one, and where the signing key lives.
func (c *Config) fillLocal() {
	if c.PublicBaseURL == "" || c.baseURLDerived {
		c.baseURLDerived = true
		c.PublicBaseURL = "http://" + c.ClientListen + "/"
		if host, port, err := net.SplitHostPort(c.ClientListen); err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
			c.PublicBaseURL = "http://" + net.JoinHostPort("localhost", port) + "/"
		}
	}
	if c.FederationListen == "" {
		c.FederationListen = c.federationListenFor()
	}
	if c.SigningKeyPath == "" && c.SigningKey == "" && c.SigningKeySeed == "" {
		c.SigningKeyPath = c.DataDir + "/signing.key"
	}
	if c.RegistrationSharedSecret == "" && c.RegistrationSharedSecretPath == "" {
		c.RegistrationSharedSecretPath = c.DataDir + "/registration_shared_secret"
	}
}

// federationListenFor is the federation listener when none is configured.
// A server name with an explicit port is reached over TLS at that port, with
// no delegation (server discovery in the spec), so the listener takes it: on
// the name's IP for an IP literal, else on loopback. Otherwise, and when the
// client listener has that port (the default localhost:8008), 8448.
func (c *Config) federationListenFor() string {
	host, port, err := net.SplitHostPort(c.ServerName)
	if err != nil || port == "" {
		return "127.0.0.1:8448"
	}
	if _, clientPort, err := net.SplitHostPort(c.ClientListen); err == nil && clientPort == port {
		return "127.0.0.1:8448"
	}
	if net.ParseIP(host) == nil {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// LoadSharedSecret fills registration_shared_secret from
// registration_shared_secret_path when only the path is set. With create, a
// missing file is made with a new random secret (mode 0600), as `cirrus
// serve` does on first start so that `cirrus register` works at once.
func (c *Config) LoadSharedSecret(create bool) error {
	if c.RegistrationSharedSecret != "" || c.RegistrationSharedSecretPath == "" {
		return nil
	}
	data, err := os.ReadFile(c.RegistrationSharedSecretPath)
	if errors.Is(err, os.ErrNotExist) && create {
		var b [32]byte
		rand.Read(b[:])
		data = []byte(hex.EncodeToString(b[:]) + "\n")
		if err := os.MkdirAll(filepath.Dir(c.RegistrationSharedSecretPath), 0o700); err != nil {
			return fmt.Errorf("config: registration_shared_secret_path: %w", err)
		}
		err = os.WriteFile(c.RegistrationSharedSecretPath, data, 0o600)
	}
	if err != nil {
		return fmt.Errorf("config: registration_shared_secret_path: %w", err)
	}
	c.RegistrationSharedSecret = strings.TrimSpace(string(data))
	if c.RegistrationSharedSecret == "" {
		return fmt.Errorf("config: registration_shared_secret_path %s is empty", c.RegistrationSharedSecretPath)
	}
	return nil
}

// Listening records the addresses the local listeners got (a port of 0 in
// the config is chosen by the system) and updates what derives from them.
func (c *Config) Listening(client, federation string) {
	c.ClientListen, c.FederationListen = client, federation
	c.fillLocal()
}

// Validate checks every key and names the wrong one with what to do about it.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("config: "+format, args...)) }

	if !protocol.ValidServerName(c.ServerName) {
		bad("server_name %q is not a valid Matrix server name: use a host name or IP literal with an optional port, such as example.org or localhost:8008", c.ServerName)
	}
	if c.PublicBaseURL != "" {
		u, err := url.Parse(c.PublicBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("public_baseurl %q is not an absolute http(s) URL: use the address clients reach, such as https://matrix.example.org/", c.PublicBaseURL)
		} else if !strings.HasSuffix(c.PublicBaseURL, "/") {
			c.PublicBaseURL += "/"
		}
	}
	if c.WebClientLocation != "" {
		if u, err := url.Parse(c.WebClientLocation); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("web_client_location %q is not an absolute http(s) URL: use the web client's address, such as %s, or \"\" for none", c.WebClientLocation, DefaultWebClient)
		}
	}
	if c.TurnUserLifetime != "" {
		if _, err := ParseDuration(c.TurnUserLifetime); err != nil {
			bad("turn_user_lifetime: %v", err)
		}
	}
	for _, d := range []struct{ key, v string }{
		{"federation.destination_min_retry_interval", c.Federation.DestinationMinRetryInterval},
		{"federation.destination_max_retry_interval", c.Federation.DestinationMaxRetryInterval},
	} {
		if d.v != "" {
			if _, err := ParseDuration(d.v); err != nil {
				bad("%s: %v", d.key, err)
			}
		}
	}
	if least, most := c.Federation.RetryIntervals(); least > 0 && most > 0 && least > most {
		bad("federation.destination_min_retry_interval (%v) is longer than destination_max_retry_interval (%v)", least, most)
	}
	if c.Federation.DestinationRetryMultiplier < 0 {
		bad("federation.destination_retry_multiplier must be 1 or more, got %d", c.Federation.DestinationRetryMultiplier)
	}
	for _, u := range c.TurnURIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") && !strings.HasPrefix(u, "stun:") {
			bad("turn_uris: %q is not a TURN URI such as turn:turn.example.org:3478?transport=udp", u)
		}
	}
	if (c.TurnUsername == "") != (c.TurnPassword == "") {
		bad("turn_username and turn_password go together: set both or neither")
	}
	if n := c.ServerNotices; n != nil && n.SystemMxidLocalpart == "" {
		bad("server_notices needs system_mxid_localpart: the localpart of the user notices come from, such as server")
	}
	if c.Email != nil {
		if c.PublicBaseURL == "" || c.baseURLDerived {
			bad("the email block needs public_baseurl: set it to the address users reach, such as https://matrix.example.org/, since links in mail point there")
		}
		if _, err := mail.ParseAddress(c.Email.NotifFrom); err != nil {
			bad("email.notif_from %q is not a mail address: use one such as \"Cirrus <noreply@example.org>\"", c.Email.NotifFrom)
		}
		for key, v := range map[string]string{"validation_token_lifetime": c.Email.ValidationTokenLifetime, "notif_delay_before_mail": c.Email.NotifDelayBeforeMail} {
			if d, err := time.ParseDuration(v); v != "" && (err != nil || d <= 0) {
				bad("email.%s %q is not a positive duration such as 1h or 10m", key, v)
			}
		}
		if u := c.Email.ClientBaseURL; u != "" {
			if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
				bad("email.client_base_url %q is not a URL such as https://app.element.io/", u)
			}
		}
	}
	for _, m := range c.RegistrationsRequire3PID {
		if m != "email" {
			bad("registrations_require_3pid: %q is not supported: only email is (this server sends no SMS)", m)
		} else if c.Email == nil {
			bad("registrations_require_3pid names email, but there is no email block to send the validation mail: add one")
		}
	}
	if !events.Supported(c.DefaultRoomVersion) {
		bad("default_room_version %q is not a room version this server supports: use one of %s", c.DefaultRoomVersion, strings.Join(events.Versions(), ", "))
	}
	if c.MaxRequestSize <= 0 {
		bad("max_request_size must be a positive number of bytes, got %d", c.MaxRequestSize)
	}
	if c.LambdaResponseLimit != 0 && (c.LambdaResponseLimit < minResponseLimit || c.LambdaResponseLimit > LambdaPayloadLimit) {
		bad("lambda_response_limit must be 0 (off) or a number of bytes from %d to %d (Lambda's 6 MB), got %d", minResponseLimit, LambdaPayloadLimit, c.LambdaResponseLimit)
	}
	if c.S3Endpoint != "" {
		if u, err := url.Parse(c.S3Endpoint); err != nil || u.Scheme == "" || u.Host == "" {
			bad("s3_endpoint %q is not a URL such as http://127.0.0.1:9000", c.S3Endpoint)
		} else if c.LargeResponseBucket == "" && c.MediaBucket == "" {
			bad("s3_endpoint needs media_bucket or large_response_bucket: name the buckets to use there")
		}
	}
	if c.MaxUploadSize <= 0 {
		bad("max_upload_size must be a positive number of bytes, got %d", c.MaxUploadSize)
	}
	if c.MediaFreeze != "" {
		if _, err := ParseDate(c.MediaFreeze); err != nil {
			bad("media_freeze: %v", err)
		}
	}
	for i, l := range c.MediaUploadLimits {
		if _, err := ParseDuration(l.TimePeriod); err != nil {
			bad("media_upload_limits[%d].time_period: %v", i, err)
		}
		if _, err := ParseSize(l.MaxSize); err != nil {
			bad("media_upload_limits[%d].max_size: %v", i, err)
		}
	}
	if r := c.RCMediaUpload; r.PerSecond < 0 || r.BurstCount < 0 || (r.PerSecond == 0) != (r.BurstCount == 0) {
		bad("rc_media_upload: per_second and burst_count must both be positive, or both 0 (off), got %v and %v", r.PerSecond, r.BurstCount)
	}
	if c.MaxPendingMediaUploads <= 0 {
		bad("max_pending_media_uploads must be 1 or more, got %d", c.MaxPendingMediaUploads)
	}
	if c.UnusedExpirationTime != "" {
		if _, err := ParseDuration(c.UnusedExpirationTime); err != nil {
			bad("unused_expiration_time: %v", err)
		}
	}
	for _, l := range []struct{ key, v string }{{"local_media_lifetime", c.MediaRetention.LocalMediaLifetime}, {"remote_media_lifetime", c.MediaRetention.RemoteMediaLifetime}} {
		if _, err := ParseDuration(l.v); l.v != "" && err != nil {
			bad("media_retention.%s: %v", l.key, err)
		}
	}
	// Up to the longest wait: with a news queue (the sync tier) the poll
	// is only a safety net, and a wait may read its stream just at its
	// start and its end.
	if c.Sync.PollIntervalMS < 50 || c.Sync.PollIntervalMS > 29000 {
		bad("sync.poll_interval_ms must be between 50 and 29000, got %d", c.Sync.PollIntervalMS)
	}
	if c.Sync.MaxTimeoutMS < 0 || c.Sync.MaxTimeoutMS > 29000 {
		bad("sync.max_timeout_ms must be between 0 and 29000 (API Gateway ends requests at 30 s), got %d", c.Sync.MaxTimeoutMS)
	}
	if c.DynamoDBTable == "" {
		bad("dynamodb_table must not be empty")
	}
	if c.DynamoDBEndpoint != "" {
		if u, err := url.Parse(c.DynamoDBEndpoint); err != nil || u.Scheme == "" || u.Host == "" {
			bad("dynamodb_endpoint %q is not a URL such as http://127.0.0.1:8000", c.DynamoDBEndpoint)
		}
	}
	for key, addr := range map[string]string{"client_listen": c.ClientListen, "federation_listen": c.FederationListen} {
		if addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			bad("%s %q is not a host:port address such as 127.0.0.1:8008", key, addr)
		}
	}
	if (c.TLSCertificatePath == "") != (c.TLSPrivateKeyPath == "") {
		bad("tls_certificate_path and tls_private_key_path go together: set both or neither")
	}
	if (c.TLSCACertificatePath == "") != (c.TLSCAKeyPath == "") {
		bad("tls_ca_certificate_path and tls_ca_key_path go together: set both or neither")
	}
	if c.MaxSpiderSize <= 0 {
		bad("max_spider_size must be a positive number of bytes, got %d", c.MaxSpiderSize)
	}
	for key, list := range map[string][]string{"ip_range_blacklist": c.IPRangeBlacklist, "ip_range_whitelist": c.IPRangeWhitelist,
		"url_preview_ip_range_blacklist": c.URLPreviewIPRangeBlacklist, "url_preview_ip_range_whitelist": c.URLPreviewIPRangeWhitelist} {
		for _, r := range list {
			if _, err := netip.ParsePrefix(r); err != nil {
				if _, err := netip.ParseAddr(r); err != nil {
					bad("%s: %q is not an IP range such as 10.0.0.0/8 or an address such as 192.168.1.1", key, r)
				}
			}
		}
	}
	for _, name := range c.FederationDomainWhitelist {
		if !protocol.ValidServerName(name) {
			bad("federation_domain_whitelist: %q is not a server name such as example.org", name)
		}
	}
	for name, addr := range c.FederationHosts {
		if !protocol.ValidServerName(name) {
			bad("federation_hosts: %q is not a server name such as hs1.test or hs1.test:8448", name)
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			bad("federation_hosts: %s: %q is not a host:port address such as 127.0.0.1:8448", name, addr)
		}
	}
	for key, n := range map[string]int64{"login_per_address": c.RateLimits.LoginPerAddress,
		"login_per_account": c.RateLimits.LoginPerAccount, "register_per_address": c.RateLimits.RegisterPerAddress} {
		if n < 0 {
			bad("rate_limits.%s must be 0 (off) or a number of attempts per minute, got %d", key, n)
		}
	}
	for i, t := range c.TrustedKeyServers {
		if !protocol.ValidServerName(t.ServerName) {
			bad("trusted_key_servers[%d].server_name %q is not a valid Matrix server name, such as matrix.org", i, t.ServerName)
		}
		if len(t.VerifyKeys) == 0 {
			bad("trusted_key_servers[%d] (%s) needs verify_keys: the notary's key IDs and base64 public keys, such as {\"ed25519:auto\": \"Noi6...\"}", i, t.ServerName)
		}
		for id, key := range t.VerifyKeys {
			if !strings.HasPrefix(id, "ed25519:") {
				bad("trusted_key_servers[%d] (%s): key ID %q is not an ed25519:... key ID", i, t.ServerName, id)
			} else if _, err := DecodeVerifyKey(key); err != nil {
				bad("trusted_key_servers[%d] (%s): key %s is %v", i, t.ServerName, id, err)
			}
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level %q is not one of debug, info, warn, error", c.LogLevel)
	}
	return errors.Join(errs...)
}

// applyEnv sets each field whose CIRRUS_ variable is present. DYNAMODB_ENDPOINT
// is honoured as well because that is the name the AWS tooling uses.
func (c *Config) applyEnv(lookup LookupFunc) error {
	if v, ok := lookup("DYNAMODB_ENDPOINT"); ok && v != "" {
		c.DynamoDBEndpoint = v
	}
	return applyEnvStruct(reflect.ValueOf(c).Elem(), "CIRRUS_", lookup)
}

func applyEnvStruct(v reflect.Value, prefix string, lookup LookupFunc) error {
	t := v.Type()
	for i := range t.NumField() {
		field, value := t.Field(i), v.Field(i)
		name := prefix + strings.ToUpper(strings.Split(field.Tag.Get("yaml"), ",")[0])
		if field.Anonymous {
			// An inline block's keys are top-level keys.
			if err := applyEnvStruct(value, prefix, lookup); err != nil {
				return err
			}
			continue
		}
		if field.Type.Kind() == reflect.Struct {
			if err := applyEnvStruct(value, name+"_", lookup); err != nil {
				return err
			}
			continue
		}
		if field.Type.Kind() == reflect.Pointer && field.Type.Elem().Kind() == reflect.Struct {
			// A nested block exists as soon as one of its variables is set.
			block := reflect.New(field.Type.Elem())
			if !value.IsNil() {
				block.Elem().Set(value.Elem())
			}
			before := block.Elem().Interface()
			if err := applyEnvStruct(block.Elem(), name+"_", lookup); err != nil {
				return err
			}
			if !value.IsNil() || !reflect.DeepEqual(before, block.Elem().Interface()) {
				value.Set(block)
			}
			continue
		}
		raw, ok := lookup(name)
		if !ok {
			continue
		}
		if value.Kind() == reflect.Pointer && value.Type().Elem().Kind() == reflect.Bool {
			// An optional boolean: unset keeps its own default.
			b, err := strconv.ParseBool(raw)
			if err != nil {
				return fmt.Errorf("config: %s=%q is not a boolean: use true or false", name, raw)
			}
			value.Set(reflect.ValueOf(&b))
			continue
		}
		switch value.Kind() {
		case reflect.String:
			value.SetString(raw)
		case reflect.Bool:
			b, err := strconv.ParseBool(raw)
			if err != nil {
				return fmt.Errorf("config: %s=%q is not a boolean: use true or false", name, raw)
			}
			value.SetBool(b)
		case reflect.Float64:
			f, err := strconv.ParseFloat(raw, 64)
			if err != nil {
				return fmt.Errorf("config: %s=%q is not a number", name, raw)
			}
			value.SetFloat(f)
		case reflect.Int64:
			n, err := strconv.ParseInt(raw, 10, 64)
			if err != nil {
				return fmt.Errorf("config: %s=%q is not a whole number", name, raw)
			}
			value.SetInt(n)
		case reflect.Slice:
			if value.Type().Elem().Kind() == reflect.Struct {
				// A list of blocks is given as JSON, which YAML reads.
				list := reflect.New(value.Type())
				if err := yaml.Unmarshal([]byte(raw), list.Interface()); err != nil {
					return fmt.Errorf("config: %s is not a JSON list of objects: %v", name, err)
				}
				value.Set(list.Elem())
				continue
			}
			if value.Type().Elem().Kind() != reflect.String {
				return fmt.Errorf("config: %s: unsupported kind %s", name, value.Type())
			}
			value.Set(reflect.ValueOf(splitList(raw)))
		case reflect.Map:
			if value.Type().Key().Kind() != reflect.String || value.Type().Elem().Kind() != reflect.String {
				return fmt.Errorf("config: %s: unsupported kind %s", name, value.Type())
			}
			m := map[string]string{}
			for _, item := range splitList(raw) {
				k, v, ok := strings.Cut(item, "=")
				if !ok {
					return fmt.Errorf("config: %s: %q is not a key=value pair", name, item)
				}
				m[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			value.Set(reflect.ValueOf(m))
		default:
			return fmt.Errorf("config: %s: unsupported kind %s", name, value.Kind())
		}
	}
	return nil
}

// splitList reads a list given in one environment variable: items
// separated by commas, blanks around them ignored.
func splitList(raw string) []string {
	var list []string
	for _, item := range strings.Split(raw, ",") {
		if item = strings.TrimSpace(item); item != "" {
			list = append(list, item)
		}
	}
	return list
}

// WellKnownServer is the value of m.server in /.well-known/matrix/server: where
// other servers reach this one's federation API. Behind public_baseurl over
// HTTPS (API Gateway) that is its host on port 443; locally it is the
// federation listener's port on the server name's host.
func (c *Config) WellKnownServer() string {
	u, err := url.Parse(c.PublicBaseURL)
	if err == nil && u.Scheme == "https" {
		port := u.Port()
		if port == "" {
			port = "443"
		}
		return net.JoinHostPort(u.Hostname(), port)
	}
	host := c.ServerName
	if h, _, err := net.SplitHostPort(c.ServerName); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	_, port, err := net.SplitHostPort(c.FederationListen)
	if err != nil {
		port = "8448"
	}
	return net.JoinHostPort(host, port)
}

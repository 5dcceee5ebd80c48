// Package server assembles Cirrus: the client and federation handler trees
// over the shared dependencies. A Lambda entry point serves one tree; `cirrus
// serve` mounts both on local listeners. The same code runs in both.
package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"golang.org/x/sync/errgroup"

	"github.com/cirrus-matrix/cirrus/shared/accountdata"
	"github.com/cirrus-matrix/cirrus/shared/accounts"
	"github.com/cirrus-matrix/cirrus/shared/bigbody"
	"github.com/cirrus-matrix/cirrus/shared/capabilities"
	"github.com/cirrus-matrix/cirrus/shared/config"
	"github.com/cirrus-matrix/cirrus/shared/discovery"
	"github.com/cirrus-matrix/cirrus/shared/e2ekeys"
	"github.com/cirrus-matrix/cirrus/shared/ephemeral"
	"github.com/cirrus-matrix/cirrus/shared/events"
	"github.com/cirrus-matrix/cirrus/shared/fedclient"
	"github.com/cirrus-matrix/cirrus/shared/federation"
	"github.com/cirrus-matrix/cirrus/shared/filters"
	"github.com/cirrus-matrix/cirrus/shared/httpapi"
	"github.com/cirrus-matrix/cirrus/shared/keybackup"
	"github.com/cirrus-matrix/cirrus/shared/keys"
	"github.com/cirrus-matrix/cirrus/shared/mail"
	"github.com/cirrus-matrix/cirrus/shared/media"
	"github.com/cirrus-matrix/cirrus/shared/notices"
	"github.com/cirrus-matrix/cirrus/shared/notify"
	"github.com/cirrus-matrix/cirrus/shared/objects"
	"github.com/cirrus-matrix/cirrus/shared/presence"
	"github.com/cirrus-matrix/cirrus/shared/profile"
	"github.com/cirrus-matrix/cirrus/shared/push"
	"github.com/cirrus-matrix/cirrus/shared/queue"
	"github.com/cirrus-matrix/cirrus/shared/ratelimit"
	"github.com/cirrus-matrix/cirrus/shared/rooms"
	"github.com/cirrus-matrix/cirrus/shared/roomsapi"
	"github.com/cirrus-matrix/cirrus/shared/search"
	"github.com/cirrus-matrix/cirrus/shared/secrets"
	"github.com/cirrus-matrix/cirrus/shared/sender"
	"github.com/cirrus-matrix/cirrus/shared/serverkeys"
	"github.com/cirrus-matrix/cirrus/shared/spaces"
	"github.com/cirrus-matrix/cirrus/shared/store"
	"github.com/cirrus-matrix/cirrus/shared/sync"
	"github.com/cirrus-matrix/cirrus/shared/synctier"
	"github.com/cirrus-matrix/cirrus/shared/thirdparty"
	"github.com/cirrus-matrix/cirrus/shared/threepid"
	"github.com/cirrus-matrix/cirrus/shared/todevice"
	"github.com/cirrus-matrix/cirrus/shared/unread"
	"github.com/cirrus-matrix/cirrus/shared/urlpreview"
	"github.com/cirrus-matrix/cirrus/shared/userdir"
	"github.com/cirrus-matrix/cirrus/shared/voip"
)

// Server holds what the handlers share.
type Server struct {
	Config *config.Config
	Store  *store.Store
	Key    keys.Key
	Logger *slog.Logger
	// SyncDemand tallies how long sync requests hold the client tree
	// (tallySyncWaits): set in a Lambda function of a stack with a sync
	// tier, whose controller reads the tally.
	SyncDemand bool
	// Queue carries work for the sender (outbound federation); nil in a
	// Lambda function without queue_url.
	Queue *queue.Queue
	// LongQueue, when set, takes the queue jobs that run long (loading
	// the state of a room joined with partial state: queue.HandleLong's
	// kinds), drained by a function whose timeout allows them; nil sends
	// them to Queue.
	LongQueue *queue.Queue
	// Jobs runs queued work by its kind: the sender function and `cirrus
	// serve` drain the queue through it. Packages register their kinds here.
	Jobs *queue.Dispatcher
	// Mail sends verification and reset mail; nil when no email block is set.
	Mail mail.Sender
	// Templates are the mails and pages of the email block: the embedded
	// ones, with email.template_dir's in their place.
	Templates *mail.Templates
	// Accounts holds users, devices and access tokens.
	Accounts *accounts.Service
	// Push holds push rules and pushers.
	Push *push.Service
	// Rooms holds rooms and their events.
	Rooms *rooms.Service
	// Profiles holds display names and avatars.
	Profiles *profile.Service
	// Sync serves /sync from each user's stream of news.
	Sync *sync.Service
	// AccountData holds users' account data.
	AccountData *accountdata.Service
	// Filters holds users' stored filters.
	Filters *filters.Service
	// Ephemeral holds typing notifications, receipts and read markers.
	Ephemeral *ephemeral.Service
	// Presence holds whether users are online.
	Presence *presence.Service
	// Unread counts notifications.
	Unread *unread.Service
	// ToDevice holds send-to-device messages until their devices sync.
	ToDevice *todevice.Service
	// UserDir is the user directory: the index of names and its search.
	UserDir *userdir.Service
	// KeyBackup holds server-side backups of room keys.
	KeyBackup *keybackup.Service
	// E2EKeys holds device keys, one-time keys and cross-signing keys.
	E2EKeys *e2ekeys.Service
	// Search indexes events as they are appended and serves /search.
	Search *search.Service
	// LargeResponses holds answers over lambda_response_limit; nil without
	// large_response_bucket.
	LargeResponses bigbody.Bucket
	// Media is the content repository (uploads and downloads).
	Media *media.Service
	// Previews serves preview_url; nil when url_preview_enabled is off.
	Previews *media.Previews
	// Federation sends this server's requests to other servers.
	Federation *fedclient.Client
	// ServerKeys holds other servers' signing keys: it answers the notary
	// API and checks the X-Matrix signature of federation requests.
	ServerKeys *serverkeys.Keys
	// Inbox takes other servers' transactions (/send) and its queue
	// worker gives their PDUs to the room engine.
	Inbox *federation.Inbox
	// Joiner joins local users to rooms other servers hold
	// (rooms.Service.RemoteJoin).
	Joiner *federation.Joiner
	// Sender sends this server's events and EDUs to the other servers in
	// their rooms, through the queue (shared/sender).
	Sender *sender.Sender
	// EDUs routes the EDUs of inbound transactions by type to the
	// services that own them.
	EDUs *federation.EDUMux
	// ThreePIDs holds email validation sessions and accounts' addresses.
	ThreePIDs *threepid.Service
	// Notify tells pushers of the events that notify their users, from
	// the queue (shared/notify).
	Notify *notify.Service
	// NotifMail mails users' unread notifications to their email pushers;
	// nil unless email.enable_notifs is on.
	NotifMail *notify.Mailer
}

// Open connects to the table named in cfg and loads the signing key: from
// the config itself (Lambda) or from its file, created on first start.
func Open(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*Server, error) {
	key, err := loadKey(cfg)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Options{Table: cfg.DynamoDBTable, Endpoint: cfg.DynamoDBEndpoint})
	if err != nil {
		return nil, err
	}
	if err := cfg.LoadSharedSecret(false); err != nil {
		return nil, err
	}
	fed, err := fedclient.New(cfg.ServerName, key, fedclient.FromConfig(cfg))
	if err != nil {
		return nil, err
	}
	serverKeys, err := serverkeys.New(serverkeys.Options{Store: st, ServerName: cfg.ServerName, Key: key,
		Client: fed.Federation(), Trusted: cfg.TrustedKeyServers})
	if err != nil {
		return nil, err
	}
	var large bigbody.Bucket
	if cfg.LambdaResponseLimit > 0 && cfg.LargeResponseBucket != "" {
		b, err := bigbody.OpenS3(ctx, cfg.LargeResponseBucket, cfg.S3Endpoint)
		if err != nil {
			return nil, err
		}
		if cfg.S3Endpoint != "" {
			// A local S3 API, whose bucket is made as the table is.
			if err := b.CreateBucket(ctx); err != nil {
				return nil, err
			}
		}
		large = b
	}
	templates := mail.DefaultTemplates()
	if cfg.Email != nil && cfg.Email.TemplateDir != "" {
		if templates, err = mail.LoadTemplates(cfg.Email.TemplateDir); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	mediaSvc, err := openMedia(ctx, cfg, st)
	if err != nil {
		return nil, err
	}
	previews, err := openPreviews(cfg, mediaSvc, st)
	if err != nil {
		return nil, err
	}
	// Other servers' media is fetched over federation and cached under
	// remote/ (shared/media/remote.go).
	mediaSvc.Remote = &media.Fetcher{Service: mediaSvc, Client: fed, Logger: logger,
		IPRangeBlacklist: cfg.IPRangeBlacklist, IPRangeWhitelist: cfg.IPRangeWhitelist, SkipVerify: !cfg.FederationVerifyCertificates}
	pushes := &push.Service{Store: st}
	data := &accountdata.Service{Store: st, Computed: map[string]func(context.Context, string) (any, error){
		"m.push_rules": pushes.AccountData,
	}}
	toDevice := &todevice.Service{Store: st, ServerName: cfg.ServerName}
	e2e := &e2ekeys.Service{Store: st, ServerName: cfg.ServerName}
	accts := &accounts.Service{
		Store:      st,
		ServerName: cfg.ServerName,
		TokenKey:   accounts.TokenKey(key.Private.Seed()),
		BaseURL:    cfg.PublicBaseURL,
		Limiter:    &ratelimit.Limiter{Store: st},
		Limits: accounts.PerMinute(cfg.RateLimits.LoginPerAddress,
			cfg.RateLimits.LoginPerAccount, cfg.RateLimits.RegisterPerAddress),
		// A device's pushers, pending to-device messages and notification
		// settings (MSC3890) go with it, as Synapse's do.
		DeviceDeleted: func(ctx context.Context, userID, deviceID string) error {
			if err := pushes.DeleteDevicePushers(ctx, userID, deviceID); err != nil {
				return err
			}
			if err := toDevice.DeleteDevice(ctx, userID, deviceID); err != nil {
				return err
			}
			if err := data.DeleteDevice(ctx, userID, deviceID); err != nil {
				return err
			}
			return e2e.DeleteDevice(ctx, userID, deviceID)
		},
		DeviceRenamed: e2e.DeviceRenamed,
	}
	e2e.Devices, e2e.UIA = accts.DeviceNames, accts.PasswordUIA
	toDevice.Devices = accts.DeviceIDs
	profiles := &profile.Service{Store: st, ServerName: cfg.ServerName}
	profiles.Remote = (&federation.ProfileQuery{Client: fed}).Profile
	// The profile package owns the profile item: registration and the admin
	// API go through it, so an admin's change of a display name reaches the
	// user's rooms like the user's own.
	accts.Profiles = profiles
	// The admin API for media: deletes by date keep users' avatars.
	mediaSvc.Admin = media.Admin{RequireAdmin: accts.RequireAdmin, Avatar: func(ctx context.Context, userID string) (string, error) {
		_, avatar, err := profiles.Names(ctx, userID)
		return avatar, err
	}}
	rms := &rooms.Service{
		Store:              st,
		Signer:             events.Signer{ServerName: cfg.ServerName, Key: key},
		DefaultRoomVersion: cfg.DefaultRoomVersion,
		Profile: func(ctx context.Context, userID string) (string, string) {
			p, err := profiles.Get(ctx, userID)
			if err != nil {
				return "", ""
			}
			return p.DisplayName, p.AvatarURL
		},
	}
	joiner := &federation.Joiner{Rooms: rms, Client: fed, Verifier: serverKeys.Ring(), Logger: logger}
	rms.RemoteJoin, rms.RemoteAlias = joiner.Join, joiner.LookupAlias
	rms.RemoteMembers = &federation.Memberships{Rooms: rms, Client: fed, Verifier: serverKeys.Ring(), Logger: logger}
	backfiller := &federation.Backfiller{Rooms: rms, Client: fed, Verifier: serverKeys.Ring(), Logger: logger}
	rms.Backfiller = backfiller.Fetch
	rms.RemoteReads = rooms.RemoteReads{PublicRooms: (&federation.RemoteDirectory{Client: fed}).PublicRooms,
		Event: backfiller.Event, Logger: logger}
	syncs := &sync.Service{
		Store: st, Rooms: rms,
		PollInterval:     time.Duration(cfg.Sync.PollIntervalMS) * time.Millisecond,
		MaxTimeout:       time.Duration(cfg.Sync.MaxTimeoutMS) * time.Millisecond,
		AccountData:      accountData(data, pushes),
		RoomsAccountData: roomsAccountData(data),
	}
	data.Changed = func(ctx context.Context, userID, roomID string) error {
		return syncs.Touch(ctx, roomID, []string{userID})
	}
	pushes.Changed = func(ctx context.Context, userID string) error {
		return syncs.Touch(ctx, "", []string{userID})
	}
	searches := &search.Service{Store: st, Rooms: rms, Disabled: !cfg.EnableSearch}
	minRetry, maxRetry := cfg.Federation.RetryIntervals()
	snd := &sender.Sender{Store: st, ServerName: cfg.ServerName, Members: rms.Members,
		Client: fed.Federation(), Logger: logger, ServerACL: (&federation.Service{Rooms: rms}).ACLFilter,
		MinRetry: minRetry, Multiplier: float64(cfg.Federation.DestinationRetryMultiplier), MaxRetry: maxRetry}
	// Every append reaches the members' sync streams, the search index and
	// the other servers' outboxes, side by side: no write waits for
	// another, so a send pays one round trip for all, and a failed index
	// write does not cut the fan-out short.
	rms.Appended = func(ctx context.Context, evs []rooms.Appended) error {
		var g errgroup.Group
		g.Go(func() error { return syncs.Fanout(ctx, evs) })
		g.Go(func() error { return searches.Index(ctx, evs) })
		g.Go(func() error { return snd.Appended(ctx, evs) })
		return g.Wait()
	}
	// A lone message's entries and index go beside its slot instead, in
	// one BatchWriteItem where they fit (25 items: two members and a
	// chat line's words): a send waits for one round trip for the slot
	// and both, and pays for one call fewer.
	rms.Landing = func(a rooms.Appended) (func(context.Context) error, error) {
		puts, err := st.Prepare(append(syncs.Landing(a), searches.Items([]rooms.Appended{a})...))
		if err != nil {
			return nil, fmt.Errorf("stream entries and search index: %w", err)
		}
		return func(ctx context.Context) error {
			if err := puts.Put(ctx); err != nil {
				return fmt.Errorf("stream entries and search index: %w", err)
			}
			return nil
		}, nil
	}
	rms.SyncPosition = syncs.RoomPosition
	pres := &presence.Service{Store: st, Rooms: rms, Enabled: cfg.Presence.Enabled, Touch: func(ctx context.Context, userID string, users []string) error {
		return syncs.Touch(ctx, userID, users)
	}, ServerName: cfg.ServerName, Federate: snd.SendRoomsEDU}
	if cfg.Presence.Enabled {
		// Presence keeps the rooms of remote members, whom inbound
		// presence is told to, from the member events appended.
		appended := rms.Appended
		rms.Appended = func(ctx context.Context, evs []rooms.Appended) error {
			var g errgroup.Group
			g.Go(func() error { return appended(ctx, evs) })
			g.Go(func() error { return pres.MembersChanged(ctx, evs) })
			return g.Wait()
		}
		syncs.Presence = pres.Events
		syncs.SetPresence = func(ctx context.Context, userID, p string) error { return pres.Set(ctx, userID, p, "") }
	}
	eph := &ephemeral.Service{Store: st, Rooms: rms, AccountData: data, Touch: syncs.Touch, Federate: snd.SendRoomEDU}
	counter := &unread.Service{Rooms: rms, Push: pushes, Receipts: eph}
	syncs.ShareReceipts = eph.ShareReadMarks
	syncs.Unread = func(ctx context.Context, userID, roomID string, threads bool) (sync.Unread, map[string]sync.Unread, error) {
		main, perThread, err := counter.Count(ctx, userID, roomID, threads)
		out := map[string]sync.Unread{}
		for root, c := range perThread {
			out[root] = sync.Unread(c)
		}
		return sync.Unread(main), out, err
	}
	syncs.Ephemeral = eph.Events
	syncs.Ignored, rms.Ignored = data.IgnoredUsers, data.IgnoredUsers
	syncs.ToDevice, syncs.ToDeviceAtMost = toDevice.Deliver, toDevice.DeliverAtMost
	e2e.Changed, e2e.CountsChanged, e2e.Uploading = syncs.DeviceListChanged, syncs.KeyCountsChanged, syncs.Uploading
	syncs.KeyCounts = func(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
		c, err := e2e.Counts(ctx, userID, deviceID)
		return c.OneTimeKeys, c.UnusedFallbackKeyTypes, err
	}
	toDevice.Notify = syncs.TouchDevices
	profiles.Changed = func(ctx context.Context, userID string, p profile.Profile) error {
		return rms.ProfileChanged(ctx, userID, p.DisplayName, p.AvatarURL)
	}
	dir := &userdir.Service{
		Store: st, ServerName: cfg.ServerName,
		Enabled: cfg.UserDirectory.Enabled, SearchAllUsers: cfg.UserDirectory.SearchAllUsers,
		JoinedRooms: rms.JoinedRooms, PublicRooms: rms.PublicRooms, Profile: profiles.Names,
	}
	// The user directory follows names as they change, after the rooms.
	roomsChanged := profiles.Changed
	profiles.Changed = func(ctx context.Context, userID string, p profile.Profile) error {
		if err := roomsChanged(ctx, userID, p); err != nil {
			return err
		}
		return dir.ProfileChanged(ctx, userID, p.DisplayName, p.AvatarURL)
	}
	accts.NewUserOps, accts.ActiveChanged = dir.NewUserOps, dir.ActiveChanged
	srv := &Server{
		Config:      cfg,
		Store:       st,
		Key:         key,
		Logger:      logger,
		Jobs:        &queue.Dispatcher{Logger: logger},
		Accounts:    accts,
		Push:        pushes,
		Rooms:       rms,
		Joiner:      joiner,
		Profiles:    profiles,
		Sync:        syncs,
		AccountData: data,
		Filters:     &filters.Service{Store: st},
		Presence:    pres,
		Unread:      counter,
		Ephemeral:   eph,
		ToDevice:    toDevice,
		KeyBackup:   &keybackup.Service{Store: st},
		E2EKeys:     e2e,
		Search:      searches,
		UserDir:     dir,
		Federation:  fed,
		ServerKeys:  serverKeys,

		LargeResponses: large,
		Templates:      templates,
		Media:          mediaSvc,
		Previews:       previews,
	}
	srv.EDUs = &federation.EDUMux{}
	eph.ACLAllows = (&federation.Service{Rooms: rms}).ACLAllows
	srv.EDUs.Handle(ephemeral.TypingEDU, eph.ReceiveTyping)
	srv.EDUs.Handle(ephemeral.ReceiptEDU, eph.ReceiveReceipts)
	srv.EDUs.Handle(presence.EDU, pres.ReceivePresence)
	srv.Inbox = srv.newInbox()
	srv.Inbox.EDU = srv.EDUs.Serve
	srv.Jobs.Handle(federation.InboxKind, srv.Inbox.Work)
	// The queue is set after Open (Lambda, `cirrus serve`): read when sent.
	snd.Queue = func() sender.Queue {
		if srv.Queue == nil {
			return nil
		}
		return srv.Queue
	}
	srv.Sender = snd
	srv.Jobs.Handle(sender.Kind, snd.Handle)
	srv.federateE2EE(e2e, toDevice, syncs, rms)
	joiner.Resync = srv.newResync(pres, e2e)
	srv.Jobs.HandleLong(federation.ResyncKind, joiner.Resync.Work)
	srv.Jobs.Handle(media.RetentionKind, srv.Media.HandleRetention) // the stack's hourly schedule
	// Email validation and accounts' addresses; the mail sender is set
	// after Open (Lambda, `cirrus serve`, tests): read when a mail is sent.
	srv.ThreePIDs = &threepid.Service{Store: st, Config: cfg, Templates: templates,
		Mail:    func() mail.Sender { return srv.Mail },
		Limiter: &ratelimit.Limiter{Store: st}, UIA: accts.PasswordUIA,
		Caller: func(ctx context.Context) string { return accounts.Caller(ctx).UserID },
		Sign:   fed.NewRequest,
		Removed: func(ctx context.Context, userID, medium, address string) error {
			if medium != threepid.MediumEmail {
				return nil
			}
			return pushes.RemovePusher(ctx, userID, push.EmailAppID, address)
		}}
	// Accounts log in, reset passwords and register by email address only
	// when mail is configured to validate them.
	if cfg.Email != nil {
		accts.ThreePIDs = srv.ThreePIDs
		accts.RegistrationRequiresEmail = slices.Contains(cfg.RegistrationsRequire3PID, threepid.MediumEmail)
	}
	// Pushers hear of new events from the queue, never in the send: each
	// appended batch queues one push job (shared/notify), and gateways are
	// reached through the ip_range_blacklist as federation is.
	pushClient, err := notify.NewClient(notify.ClientOptions{IPRangeBlacklist: cfg.IPRangeBlacklist, IPRangeWhitelist: cfg.IPRangeWhitelist})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	notifier := &notify.Service{Rooms: rms, Push: pushes, Unread: counter, Client: pushClient, Logger: logger,
		Ignored: data.IgnoredUsers,
		Queue: func() notify.Queue {
			if srv.Queue == nil {
				return nil
			}
			return srv.Queue
		}}
	srv.Notify = notifier
	beforeNotify := rms.Appended
	rms.Appended = func(ctx context.Context, evs []rooms.Appended) error {
		var g errgroup.Group
		g.Go(func() error { return beforeNotify(ctx, evs) })
		g.Go(func() error { return notifier.Appended(ctx, evs) })
		return g.Wait()
	}
	srv.Jobs.Handle(notify.Kind, notifier.Handle)
	srv.Jobs.Handle(notify.RetryKind, notifier.HandleRetry)
	// Notification mail (shared/notify/mail.go): email pushers to the
	// addresses users own, a delayed job per user that mails what is still
	// unread, and the unsubscribe page its links lead to.
	if cfg.Email != nil && cfg.Email.EnableNotifs {
		srv.NotifMail = &notify.Mailer{Store: st, Unread: counter, Rooms: rms, Push: pushes, Templates: templates,
			Mail: func() mail.Sender { return srv.Mail },
			Queue: func() notify.Delayer {
				if srv.Queue == nil {
					return nil
				}
				return srv.Queue
			},
			Delay: cfg.Email.NotifDelay(), AppName: cfg.Email.App(), BaseURL: cfg.PublicBaseURL,
			ClientURL: cmp.Or(cfg.Email.ClientBaseURL, cfg.WebClientLocation),
			Key:       notify.UnsubscribeKey(key.Private.Seed()), Logger: logger}
		notifier.Notified = srv.NotifMail.Notified
		srv.Jobs.Handle(notify.MailKind, srv.NotifMail.HandleMail)
		pushes.OwnsAddress = srv.ThreePIDs.Owns
		if cfg.Email.NotifNewUsers() {
			accts.EmailBound = pushes.AddEmailPusher
		}
	}
	return srv, nil
}

// openMedia builds the content repository over media_bucket, made when it
// is in a local S3 API, as the table is; without a bucket (a Lambda
// function the stack gave none) uploads are refused.
func openMedia(ctx context.Context, cfg *config.Config, st *store.Store) (*media.Service, error) {
	m := &media.Service{Store: st, ServerName: cfg.ServerName, MaxUploadSize: cfg.MaxUploadSize,
		Freeze: cfg.MediaFreezeTime(), MaxPending: int(cfg.MaxPendingMediaUploads), UnusedExpiration: cfg.UnusedExpiration(),
		Thumbnailer: media.ImageThumbnailer{}}
	m.Retention = media.Retention{Local: cfg.MediaRetention.Local(), Remote: cfg.MediaRetention.Remote()}
	m.Limits = media.Limits{Limiter: &ratelimit.Limiter{Store: st},
		Rate: media.RateLimit("media.upload", cfg.RCMediaUpload.PerSecond, cfg.RCMediaUpload.BurstCount)}
	for _, l := range cfg.MediaUploadLimits {
		m.Limits.Uploads = append(m.Limits.Uploads, media.UploadLimit{Period: l.Period(), MaxBytes: l.Bytes()})
	}
	if cfg.MediaBucket == "" {
		return m, nil
	}
	b, err := objects.Open(ctx, cfg.MediaBucket, cfg.S3Endpoint)
	if err != nil {
		return nil, err
	}
	if cfg.S3Endpoint != "" {
		if err := b.CreateBucket(ctx); err != nil {
			return nil, err
		}
	}
	m.Objects = b
	return m, nil
}

// openPreviews builds URL previews over the content repository when
// url_preview_enabled is on; nil otherwise.
func openPreviews(cfg *config.Config, m *media.Service, st *store.Store) (*media.Previews, error) {
	if !cfg.URLPreviewEnabled {
		return nil, nil
	}
	pc := urlpreview.Config{MaxBytes: cfg.MaxSpiderSize}
	if cfg.URLPreviewIPRangeBlacklist != nil {
		black, err := urlpreview.ParsePrefixes(cfg.URLPreviewIPRangeBlacklist)
		if err != nil {
			return nil, fmt.Errorf("config: url_preview_ip_range_blacklist: %w", err)
		}
		pc.Blacklist = black
	}
	white, err := urlpreview.ParsePrefixes(cfg.URLPreviewIPRangeWhitelist)
	if err != nil {
		return nil, fmt.Errorf("config: url_preview_ip_range_whitelist: %w", err)
	}
	pc.Whitelist = white
	return &media.Previews{Media: m, Previewer: urlpreview.New(pc),
		Limiter: &ratelimit.Limiter{Store: st}, Limit: media.DefaultPreviewLimit}, nil
}

// newResync builds the loading of the state of rooms joined with partial
// state. The members it adds reach the indexes of remote members that
// the append hooks keep (presence, device lists), as if appended.
func (s *Server) newResync(pres *presence.Service, e2e *e2ekeys.Service) *federation.Resync {
	r := &federation.Resync{Rooms: s.Rooms, Remote: s.Federation.Federation(), ServerName: s.Config.ServerName,
		Verifier: s.ServerKeys.Ring(), Logger: s.Logger}
	r.Queue = func() interface {
		Send(ctx context.Context, kind string, body []byte) error
	} {
		if s.LongQueue != nil {
			return s.LongQueue
		}
		if s.Queue == nil {
			return nil
		}
		return s.Queue
	}
	r.Loaded = func(ctx context.Context, roomID string, added []events.PDU) error {
		evs := make([]rooms.Appended, len(added))
		for i, ev := range added {
			evs[i] = rooms.Appended{RoomID: roomID, Event: ev}
		}
		var g errgroup.Group
		g.Go(func() error { return pres.MembersChanged(ctx, evs) })
		g.Go(func() error { return e2e.MembersChanged(ctx, remoteMembers(evs, s.Config.ServerName)) })
		return g.Wait()
	}
	return r
}

// newInbox builds the inbound /send and its worker over the room engine.
// Its messages go to s.Queue, which is set after Open (Lambda, `cirrus
// serve`), hence read when a message is sent.
func (s *Server) newInbox() *federation.Inbox {
	rms := s.Rooms
	return &federation.Inbox{
		Store:       s.Store,
		ServerName:  s.Config.ServerName,
		Verifier:    s.ServerKeys.Ring(),
		Remote:      s.Federation.Federation(),
		Logger:      s.Logger,
		Engine:      federation.RoomEngine{Rooms: rms, Logger: s.Logger},
		ACLAllows:   (&federation.Service{Rooms: rms}).ACLAllows,
		Extremities: rms.Extremities,
		Held: func(ctx context.Context, roomID string, ids []string) (map[string]events.PDU, error) {
			evs, err := rms.EventsByID(ctx, roomID, ids)
			out := make(map[string]events.PDU, len(evs))
			for id, ev := range evs {
				out[id] = ev.PDU
			}
			return out, err
		},
		RoomVersion: func(ctx context.Context, roomID string) (string, error) {
			info, err := rms.Info(ctx, roomID)
			if errors.Is(err, rooms.ErrUnknownRoom) {
				return "", fmt.Errorf("%w: %v", federation.ErrUnknownRoom, err)
			}
			return info.Version, err
		},
		Send: func(ctx context.Context, kind string, body []byte) error {
			if s.Queue == nil {
				return errors.New("no queue for inbound federation (queue_url)")
			}
			return s.Queue.Send(ctx, kind, body)
		},
	}
}

// OpenLambda is Open for a Lambda function: configuration from the
// environment alone, logs to standard output where CloudWatch collects them.
// The signing key seed and the registration shared secret are read from
// Secrets Manager when the environment names them by ARN (shared/secrets).
func OpenLambda(ctx context.Context) (*Server, error) {
	srv, err := OpenEnv(ctx, os.Stdout)
	if err != nil {
		return nil, err
	}
	// A news queue means the stack has a sync tier, whose controller
	// weighs what the syncs held here cost.
	srv.SyncDemand = srv.Config.Sync.NewsQueueURL != ""
	return srv, nil
}

// OpenEnv is OpenLambda with the logs going to logs: the sync tier's
// process (cirrus sync-tier) is configured as the functions are.
func OpenEnv(ctx context.Context, logs io.Writer) (*Server, error) {
	cfg, err := config.LoadLambda(os.LookupEnv)
	if err != nil {
		return nil, err
	}
	if err := secrets.FillFromEnv(ctx, cfg, os.LookupEnv); err != nil {
		return nil, err
	}
	srv, err := Open(ctx, cfg, NewLogger(cfg, logs))
	if err != nil {
		return nil, err
	}
	if cfg.QueueURL == "" && cfg.LongQueueURL == "" && cfg.Email == nil && cfg.Sync.NewsQueueURL == "" {
		return srv, nil
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	if cfg.QueueURL != "" {
		srv.Queue = queue.New(sqs.NewFromConfig(awsCfg), cfg.QueueURL)
	}
	if cfg.LongQueueURL != "" {
		srv.LongQueue = queue.New(sqs.NewFromConfig(awsCfg), cfg.LongQueueURL)
	}
	if cfg.Sync.NewsQueueURL != "" {
		srv.SetNews(queue.New(sqs.NewFromConfig(awsCfg), cfg.Sync.NewsQueueURL))
	}
	if cfg.Email != nil {
		ses := mail.NewSES(sesv2.NewFromConfig(awsCfg), cfg.Email.NotifFrom)
		ses.ConfigurationSet = cfg.Email.SESConfigurationSet
		srv.SetMail(ses)
	}
	return srv, nil
}

// SetNews sends the news this process writes to the sync tier's queue, whose
// processes then wake the syncs waiting for it at once. A send that fails
// is logged: the tier finds the news at its next poll.
func (s *Server) SetNews(q *queue.Queue) {
	s.Sync.Notify = func(ctx context.Context, keys []string) {
		bodies, err := sync.NewsBodies(keys)
		for _, b := range bodies {
			if err == nil {
				err = q.Send(ctx, sync.NewsKind, b)
			}
		}
		if err != nil {
			s.Logger.LogAttrs(ctx, slog.LevelWarn, "sync news not sent; the sync tier finds it at its next poll",
				slog.Int("keys", len(keys)), slog.Any("error", err))
		}
	}
}

// SetMail makes m the server's mail sender (SES in Lambda, a folder in
// `cirrus serve`) behind the suppression list: nothing is sent to an
// address that bounced for good or complained (mail.Suppressing, fed by
// the sender function from SES's events); such a send fails with
// mail.ErrSuppressed.
func (s *Server) SetMail(m mail.Sender) {
	s.Mail = &mail.Suppressing{Next: m, List: &mail.Suppressions{Store: s.Store, Logger: s.Logger}, Logger: s.Logger}
}

// accountData lists a user's account data for /sync: what was written
// since the time given, and the push rules too, which live in their own
// item: always at the zero time (an initial sync), otherwise when they
// changed since (push.Service.Changed told the sync of it).
func accountData(data *accountdata.Service, pushes *push.Service) func(context.Context, string, string, time.Time) ([]json.RawMessage, error) {
	return func(ctx context.Context, userID, roomID string, since time.Time) ([]json.RawMessage, error) {
		evs, err := data.Since(ctx, userID, roomID, since)
		if err != nil {
			return nil, err
		}
		if roomID == "" {
			rules, changed, err := pushes.AccountDataSince(ctx, userID, since)
			if err != nil {
				return nil, err
			}
			if changed {
				evs = append(evs, accountdata.Event{Type: "m.push_rules", Content: mustJSON(rules)})
			}
		}
		out := make([]json.RawMessage, 0, len(evs))
		for _, ev := range evs {
			out = append(out, mustJSON(ev))
		}
		return out, nil
	}
}

// roomsAccountData is sync's RoomsAccountData: every room's account data of
// a user, as account data events by room.
func roomsAccountData(data *accountdata.Service) func(context.Context, string) (map[string][]json.RawMessage, error) {
	return func(ctx context.Context, userID string) (map[string][]json.RawMessage, error) {
		byRoom, err := data.Rooms(ctx, userID)
		if err != nil {
			return nil, err
		}
		out := make(map[string][]json.RawMessage, len(byRoom))
		for roomID, evs := range byRoom {
			for _, ev := range evs {
				out[roomID] = append(out[roomID], mustJSON(ev))
			}
		}
		return out, nil
	}
}

// mustJSON encodes values this server built, which always encode.
func mustJSON(v any) json.RawMessage {
	doc, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err))
	}
	return doc
}

// loadFilter reads a stored filter for /sync; an unknown ID is the
// client's mistake.
func (s *Server) loadFilter(ctx context.Context, userID, filterID string) (json.RawMessage, error) {
	doc, err := s.Filters.Get(ctx, userID, filterID)
	if errors.Is(err, filters.ErrNotFound) {
		return nil, httpapi.InvalidParam("no filter with ID %q", filterID)
	}
	return doc, err
}

func loadKey(cfg *config.Config) (keys.Key, error) {
	if cfg.SigningKey != "" {
		k, err := keys.Parse(cfg.SigningKey)
		if err != nil {
			return keys.Key{}, fmt.Errorf("config: signing_key: %w", err)
		}
		return k, nil
	}
	if cfg.SigningKeyPath == "" && cfg.SigningKeySeed != "" {
		return keys.FromSeed(cfg.SigningKeySeed)
	}
	if cfg.SigningKeyPath == "" {
		return keys.Key{}, fmt.Errorf("config: no signing key: set signing_key (CIRRUS_SIGNING_KEY), signing_key_seed (CIRRUS_SIGNING_KEY_SEED) or signing_key_path")
	}
	return keys.LoadOrCreate(cfg.SigningKeyPath)
}

// ClientHandler is the tree API Gateway routes /_matrix/client, /_matrix/media,
// /_synapse/admin and /.well-known/matrix to.
func (s *Server) ClientHandler() http.Handler {
	d := s.discovery()
	rt := httpapi.NewRouter()
	rt.HandleFunc("GET /{$}", d.Root)
	rt.HandleFunc("GET /_matrix/client/versions", d.Versions)
	rt.HandleFunc("GET /.well-known/matrix/client", d.WellKnownClient)
	rt.HandleFunc("GET /.well-known/matrix/server", d.WellKnownServer)
	s.Accounts.Routes(rt, s.Config.EnableRegistration, s.Config.RegistrationRequiresToken, s.Config.RegistrationSharedSecret)
	s.Profiles.Register(rt, s.Accounts.RequireAuth)
	(&roomsapi.API{Rooms: s.Rooms}).Routes(rt, s.Accounts.RequireAuth, s.Accounts.IsAdmin)
	s.AccountData.Register(rt, s.Accounts.RequireAuth)
	(&notices.Service{Store: s.Store, Rooms: s.Rooms, Accounts: s.Accounts, AccountData: s.AccountData,
		Profiles: s.Profiles, ServerName: s.Config.ServerName, Config: s.Config.ServerNotices}).Register(rt, s.Accounts.RequireAdmin)
	s.Filters.Register(rt, s.Accounts.RequireAuth)
	s.Sync.Register(rt, s.Accounts.RequireAuth, s.loadFilter)
	s.Presence.Register(rt, s.Accounts.RequireAuth)
	s.Unread.Register(rt, s.Accounts.RequireAuth)
	s.Ephemeral.Register(rt, s.Accounts.RequireAuth)
	s.ToDevice.Register(rt, s.Accounts.RequireAuth)
	s.KeyBackup.Register(rt, s.Accounts.RequireAuth)
	s.E2EKeys.Register(rt, s.Accounts.RequireAuth)
	s.Search.Register(rt, s.Accounts.RequireAuth)
	s.ThreePIDs.Register(rt, s.Accounts.RequireAuth)
	rt.HandleFunc("GET /_matrix/client/v3/capabilities", s.Accounts.RequireAuth(capabilities.Handler(s.Config.DefaultRoomVersion, s.Config.Email != nil)))
	s.Push.Register(rt, s.Accounts.RequireAuth)
	if s.NotifMail != nil {
		s.NotifMail.Register(rt) // the unsubscribe page of notification mail
	}
	(&voip.Service{TURN: s.Config.TURN}).Register(rt, s.Accounts.RequireAuth)
	thirdparty.Register(rt, s.Accounts.RequireAuth)
	(&spaces.Service{Rooms: s.Rooms, Store: s.Store, Client: s.Federation, ServerName: s.Config.ServerName,
		Logger: s.Logger}).Register(rt, s.Accounts.RequireAuth)
	s.UserDir.Register(rt, s.Accounts.RequireAuth)
	s.Media.Register(rt, s.Accounts.RequireAuth)
	if s.Previews != nil {
		// Off, preview_url is not routed: 404 M_UNRECOGNIZED, as Synapse
		// (media.Previews.Register).
		s.Previews.Register(rt, s.Accounts.RequireAuth)
	}
	// Uploads may be larger than other requests (max_upload_size).
	h := httpapi.Logging(s.Logger, httpapi.CORS(s.limitResponses(media.LimitBody(s.Config.MaxRequestSize, s.Config.MaxUploadSize, rt))))
	if s.SyncDemand {
		h = s.tallySyncWaits(h)
	}
	return h
}

// limitResponses keeps answers within lambda_response_limit (shared/bigbody):
// inside CORS, so that a redirect to the bucket carries CORS headers too.
func (s *Server) limitResponses(next http.Handler) http.Handler {
	if s.Config.LambdaResponseLimit <= 0 {
		return next
	}
	return bigbody.Handler(bigbody.Options{
		Limit:        int(s.Config.LambdaResponseLimit),
		RequestLimit: config.LambdaPayloadLimit,
		Bucket:       s.LargeResponses,
	}, next)
}

// tallySyncWaits records how long each sync request held the function
// (synctier.RecordWait), which the tier's controller reads to decide when
// the tier would cost less. A failed tally is logged; the answer stands.
func (s *Server) tallySyncWaits(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !slices.Contains(SyncPaths, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		next.ServeHTTP(w, r)
		end := time.Now()
		if err := synctier.RecordWait(context.WithoutCancel(r.Context()), s.Store, end, end.Sub(start)); err != nil {
			s.Logger.LogAttrs(r.Context(), slog.LevelWarn, "sync wait not tallied", slog.Any("error", err))
		}
	})
}

// SyncPaths are the routes of the sync tier: the long-polls, which a
// long-running process holds for much less than a Lambda function billed
// for every second they wait.
var SyncPaths = []string{
	"/_matrix/client/v3/sync",
	"/_matrix/client/r0/sync",
	"/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
	"/_matrix/client/v4/sync",
}

// HealthPath answers 200 in the sync tier while it serves.
const HealthPath = "/_cirrus/health"

// SyncHandler is the sync tier's tree: SyncPaths as the client tree serves
// them (the same auth, logging and CORS), HealthPath, and 404
// M_UNRECOGNIZED for anything else, which API Gateway never routes there.
func (s *Server) SyncHandler() http.Handler {
	client := s.ClientHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case slices.Contains(SyncPaths, r.URL.Path):
			client.ServeHTTP(w, r)
		case r.URL.Path == HealthPath && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			// The stack routes the health check from the internet (the
			// controller checks the tier through the API): how many wait
			// is told only to the host itself.
			body := map[string]int{}
			if fromLoopback(r) {
				body["waiting"], _ = s.Sync.Waiting()
			}
			httpapi.WriteJSON(w, http.StatusOK, body)
		default:
			httpapi.WriteError(w, r, httpapi.Unrecognized(http.StatusNotFound, r))
		}
	})
}

// fromLoopback reports whether r came from this host.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ListenNews wakes the syncs waiting here on the news other processes send
// to the sync tier's queue (SetNews), until ctx ends.
func (s *Server) ListenNews(ctx context.Context, api queue.API) {
	d := &queue.Dispatcher{Logger: s.Logger}
	d.Handle(sync.NewsKind, s.Sync.HandleNews)
	d.Poll(ctx, api, s.Config.Sync.NewsQueueURL)
}

// FederationHandler is the tree API Gateway routes /_matrix/federation and
// /_matrix/key to.
func (s *Server) FederationHandler() http.Handler {
	d := s.discovery()
	rt := httpapi.NewRouter()
	rt.HandleFunc("GET /_matrix/federation/v1/version", d.FederationVersion)
	rt.HandleFunc("GET /_matrix/key/v2/server", d.ServerKeys)
	// The key ID path segment is deprecated but still asked for by older servers.
	rt.HandleFunc("GET /_matrix/key/v2/server/{keyID}", d.ServerKeys)
	// The notary API needs no signature: servers ask it before they can
	// verify anyone.
	s.ServerKeys.Register(rt)
	s.Inbox.Register(rt, s.ServerKeys.RequireServer)
	(&federation.Service{ServerName: s.Config.ServerName, Rooms: s.Rooms, Profiles: s.Profiles, E2EKeys: s.E2EKeys,
		Spaces: &spaces.Service{Rooms: s.Rooms, Store: s.Store}, Media: s.Media}).Register(rt, s.ServerKeys.RequireServer)
	(&federation.Joins{ServerName: s.Config.ServerName, Rooms: s.Rooms, Verifier: s.ServerKeys.Ring(),
		UserExists: s.Accounts.Exists}).Register(rt, s.ServerKeys.RequireServer)
	// Every /_matrix/federation route but /version goes behind
	// s.ServerKeys.RequireServer, which answers 401 M_UNAUTHORIZED unless
	// the X-Matrix signature verifies and gives the handler the origin
	// (serverkeys.Origin), such as:
	//   rt.Handle("PUT /_matrix/federation/v1/send/{txnID}", s.ServerKeys.RequireServer(...))
	return httpapi.Logging(s.Logger, s.limitResponses(httpapi.LimitBody(s.Config.MaxRequestSize, rt)))
}

func (s *Server) discovery() *discovery.Handlers {
	return &discovery.Handlers{Config: s.Config, Key: s.Key}
}

// NewLogger makes the JSON logger of cfg's level, the format CloudWatch
// indexes and a terminal can still read.
func NewLogger(cfg *config.Config, w interface{ Write([]byte) (int, error) }) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

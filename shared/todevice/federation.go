package todevice

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cirrus-matrix/cirrus/shared/store"
)

// DirectToDevice is the EDU type of to-device messages between servers.
const DirectToDevice = "m.direct_to_device"

// directToDevice is the content of m.direct_to_device.
// https://spec.matrix.org/v1.19/server-server-api/#send-to-device-messaging
type directToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// inboundTTL is how long an inbound message ID is remembered: a server
// retries a transaction for much less than a day.
const inboundTTL = txnTTL

// inboundRecord says that an m.direct_to_device EDU was delivered here:
// pk todevice|<sender>|, sk in|<message ID>. Sender IDs hold no '|' past
// their server name's, so the partition is apart from every device's.
type inboundRecord struct {
	PK      string `dynamodbav:"pk"`
	SK      string `dynamodbav:"sk"`
	Expires int64  `dynamodbav:"expires_at"`
}

// sendRemote queues the messages of out for users of other servers: one
// m.direct_to_device EDU per server, with a message ID made of the
// transaction (the same for a retry, which the receiver then drops).
func (s *Service) sendRemote(ctx context.Context, out Outgoing) error {
	byServer := map[string]map[string]map[string]json.RawMessage{}
	for u, msgs := range out.Messages {
		if s.isLocal(u) {
			continue
		}
		_, server, _ := strings.Cut(u, ":")
		if byServer[server] == nil {
			byServer[server] = map[string]map[string]json.RawMessage{}
		}
		byServer[server][u] = msgs
	}
	if len(byServer) == 0 || s.SendEDU == nil {
		return nil
	}
	servers := make([]string, 0, len(byServer))
	for srv := range byServer {
		servers = append(servers, srv)
	}
	slices.Sort(servers)
	id := messageID(out)
	var errs []error
	for _, srv := range servers {
		// The messages' bound leaves room for the rest of the EDU.
		envelope := len(out.Sender) + len(out.Type) + len(id) + 64
		for i, msgs := range split(byServer[srv], maxEDUBytes-envelope) {
			edu := directToDevice{Sender: out.Sender, Type: out.Type, MessageID: partID(id, i), Messages: msgs}
			content, err := json.Marshal(edu)
			if err != nil {
				return fmt.Errorf("send to device: %w", err)
			}
			if err := s.SendEDU(ctx, []string{srv}, DirectToDevice, content); err != nil {
				errs = append(errs, fmt.Errorf("send to device via %s: %w", srv, err))
			}
		}
	}
	return errors.Join(errs...)
}

// maxEDUBytes bounds the messages of one m.direct_to_device EDU: a
// transaction holds up to 100 EDUs and travels in one request, and an
// EDU waits in the outbox as one item, so a large send goes in several
// EDUs, as Synapse splits them. A single message over it (one of
// MaxEventBytes, with its user and device IDs) goes alone.
const maxEDUBytes = 65536

// split parts messages (user, device, content) into groups whose JSON is
// at most max bytes each, in user then device order, so that a retry of
// the transaction splits them the same way and keeps the message IDs.
func split(messages map[string]map[string]json.RawMessage, max int) []map[string]map[string]json.RawMessage {
	var parts []map[string]map[string]json.RawMessage
	var part map[string]map[string]json.RawMessage
	size := 0
	for _, user := range slices.Sorted(maps.Keys(messages)) {
		byDevice := messages[user]
		for _, device := range slices.Sorted(maps.Keys(byDevice)) {
			// "user":{"device":content}, with quotes, colons and commas.
			n := len(user) + len(device) + len(byDevice[device]) + 8
			if part == nil || size+n > max {
				part = map[string]map[string]json.RawMessage{}
				parts = append(parts, part)
				size = 0
			}
			if part[user] == nil {
				part[user] = map[string]json.RawMessage{}
			}
			part[user][device] = byDevice[device]
			size += n
		}
	}
	return parts
}

// partID is the message ID of the EDU holding part i of a send: the
// first keeps the send's ID.
func partID(id string, i int) string {
	if i == 0 {
		return id
	}
	return fmt.Sprintf("%s.%d", id, i)
}

// messageID names a transaction of a device for other servers.
func messageID(out Outgoing) string {
	h := sha256.Sum256([]byte(out.Sender + "\x00" + out.SenderDevice + "\x00" + out.Type + "\x00" + out.TxnID))
	return base64.RawURLEncoding.EncodeToString(h[:18])
}

// HandleDirectToDevice takes an inbound m.direct_to_device EDU from
// origin: its messages go to the local devices named (or every device of
// the user for "*") as a local sender's do. A sender of another server
// than origin is refused; a message ID delivered before is dropped, so
// that a transaction sent again delivers nothing twice. Cost: one
// conditional PutItem of the message ID, then as a local send (one read
// of each user's devices, one write per device).
// https://spec.matrix.org/v1.19/server-server-api/#send-to-device-messaging
func (s *Service) HandleDirectToDevice(ctx context.Context, origin string, content json.RawMessage) error {
	var edu directToDevice
	if err := json.Unmarshal(content, &edu); err != nil {
		return fmt.Errorf("to-device EDU from %s: %w", origin, err)
	}
	_, server, _ := strings.Cut(edu.Sender, ":")
	if !strings.HasPrefix(edu.Sender, "@") || server != origin {
		return fmt.Errorf("to-device EDU from %s: sender %q is not of that server", origin, edu.Sender)
	}
	if edu.Type == "" || edu.MessageID == "" || len(edu.MessageID) > maxKeyPart || len(edu.Sender) > maxKeyPart {
		return fmt.Errorf("to-device EDU from %s: no type or message ID", origin)
	}
	out := Outgoing{Sender: edu.Sender, Type: edu.Type, Messages: map[string]map[string]json.RawMessage{}}
	for u, msgs := range edu.Messages {
		if !s.isLocal(u) {
			continue
		}
		for d, c := range msgs {
			ev, err := Event(edu.Type, edu.Sender, c)
			if err != nil || len(ev) > MaxEventBytes || len(c) == 0 || c[0] != '{' {
				delete(msgs, d)
			}
		}
		out.Messages[u] = msgs
	}
	if len(out.Messages) == 0 {
		return nil
	}
	rec := inboundRecord{PK: "todevice|" + edu.Sender + "|", SK: "in|" + edu.MessageID, Expires: s.now().Add(inboundTTL).Unix()}
	err := s.Store.Create(ctx, rec)
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("to-device EDU from %s: %w", origin, err)
	}
	if err := s.sendMessages(ctx, out); err != nil {
		// The sender's retry delivers again.
		_ = s.Store.Delete(context.WithoutCancel(ctx), store.Key{PK: rec.PK, SK: rec.SK})
		return err
	}
	return nil
}

#!/usr/bin/env node
// sliding_e2ee.mjs: end-to-end encryption with matrix-js-sdk's Rust crypto
// over simplified sliding sync (MSC4186) only: each client syncs through the
// SDK's SlidingSync class (client.startClient({ slidingSync })), which posts
// to /_matrix/client/unstable/org.matrix.simplified_msc3575/sync, and never
// calls /v3/sync; the to_device and e2ee extensions carry the room keys, the
// one-time key counts and the device list changes.
//
//   CIRRUS_URL=http://127.0.0.1:PORT CIRRUS_USERS=@alice:example.org,@bob:example.org \
//   CIRRUS_PASSWORD=... node sliding_e2ee.mjs
//
// Steps: /versions lists org.matrix.simplified_msc3575; alice and bob log in
// with Rust crypto and start sliding sync with a room list as Element Web
// configures it; alice creates an encrypted room and invites bob, who sees
// the invite in his room list and joins;
// both subscribe to the room, as a client does when the room is opened;
// alice's message decrypts at bob's and bob's reply at alice's; neither
// client made a /v3/sync request. Exit status and output as in scenario.mjs
// (lib.mjs).
import { ClientEvent, SyncState } from "matrix-js-sdk";
import {
  MSC3575_STATE_KEY_LAZY,
  MSC3575_STATE_KEY_ME,
  MSC3575_WILDCARD,
  SlidingSync,
} from "matrix-js-sdk/lib/sliding-sync.js";
import { baseUrl, describe, fail, login, mustEnv, pass, poll, requests, say, step, until } from "./lib.mjs";

const [aliceId, bobId] = mustEnv("CIRRUS_USERS").split(",");

const unstablePath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

// roomList is the list Element Web's SlidingSyncManager asks for: the
// top rooms by recency with the state a room list tile needs.
function roomList() {
  return {
    ranges: [[0, 19]],
    timeline_limit: 1,
    required_state: [
      ["m.room.join_rules", ""],
      ["m.room.avatar", ""],
      ["m.room.canonical_alias", ""],
      ["m.room.tombstone", ""],
      ["m.room.encryption", ""],
      ["m.room.create", ""],
      ["m.space.child", MSC3575_WILDCARD],
      ["m.space.parent", MSC3575_WILDCARD],
      ["m.room.member", MSC3575_STATE_KEY_ME],
    ],
    filters: {},
  };
}

// openRoom is the subscription of a room the user opens: all its state but
// lazily loaded members, and a screenful of timeline.
const openRoom = {
  timeline_limit: 20,
  required_state: [
    [MSC3575_WILDCARD, MSC3575_WILDCARD],
    ["m.room.member", MSC3575_STATE_KEY_LAZY],
    ["m.room.member", MSC3575_STATE_KEY_ME],
  ],
};

// slidingClient logs userId in with Rust crypto and starts its sync loop on
// sliding sync only; it resolves once the client is PREPARED.
// refusals holds the answers other than 200 to sliding sync requests, with
// their bodies, to say why the SDK had to start a connection over.
const refusals = [];

async function keepRefusals(input, init) {
  const res = await fetch(input, init);
  const url = String(input instanceof Request ? input.url : input);
  if (res.status !== 200 && new URL(url).pathname === unstablePath) {
    refusals.push(`${res.status} ${await res.clone().text()} to ${new URL(url).search} ${init?.body ?? ""}`);
  }
  return res;
}

async function slidingClient(userId) {
  const client = await login(userId, { cryptoCallbacks: {}, fetchFn: keepRefusals });
  await client.initRustCrypto({ useIndexedDB: false });
  // The long poll stays under API Gateway's 30 s cap, as Element does.
  const slidingSync = new SlidingSync(baseUrl, new Map([["room_list", roomList()]]), openRoom, client, 10000);
  const prepared = until(client, [ClientEvent.Sync], (state, _prev, data) => {
    if (state === SyncState.Error) say(`  ${userId}: sync error ${describe(data?.error)}`);
    return state === SyncState.Prepared ? true : undefined;
  });
  await client.startClient({ slidingSync, lazyLoadMembers: true });
  await prepared;
  return { client, slidingSync };
}

// decryptedMessage waits until client holds a message of roomId from sender
// that decrypts to body. The sliding sync SDK leaves most timeline events
// encrypted until something decrypts them (it decrypts the last event for
// the room list preview), so the check decrypts them itself.
async function decryptedMessage(client, roomId, sender, body) {
  return poll(async () => {
    for (const ev of client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []) {
      if (ev.getSender() !== sender || ev.getWireType() !== "m.room.encrypted") continue;
      await client.decryptEventIfNeeded(ev);
      if (ev.getClearContent()?.body === body) return ev;
    }
    return undefined;
  }, 250);
}

// joined waits until client's sliding sync shows userId joined to roomId.
function joined(client, roomId, userId) {
  return poll(async () => (client.getRoom(roomId)?.getMember(userId)?.membership === "join" ? true : undefined), 250);
}

async function main() {
  step("/versions lists org.matrix.simplified_msc3575");
  const versions = await (await fetch(`${baseUrl}/_matrix/client/versions`)).json();
  if (versions.unstable_features?.["org.matrix.simplified_msc3575"] !== true) {
    fail(`unstable_features: ${JSON.stringify(versions.unstable_features)}`);
  }

  step("log in alice and bob with Rust crypto; both start sliding sync");
  const [a, b] = await Promise.all([slidingClient(aliceId), slidingClient(bobId)]);
  const alice = a.client;
  const bob = b.client;

  step("alice creates an encrypted room and invites bob; bob sees the invite and joins");
  const { room_id: roomId } = await alice.createRoom({
    name: "sliding e2ee scenario",
    preset: "private_chat",
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  await alice.invite(roomId, bobId);
  // The invite reaches bob's room list with its stripped state
  // (invite_state on the unstable path).
  const invite = await poll(async () => {
    const room = bob.getRoom(roomId);
    return room?.getMyMembership() === "invite" ? room : undefined;
  }, 250);
  say(`  bob is invited to "${invite.name}"`);
  await bob.joinRoom(roomId);
  // Both open the room: the subscription brings its state and timeline.
  a.slidingSync.modifyRoomSubscriptions(new Set([roomId]));
  b.slidingSync.modifyRoomSubscriptions(new Set([roomId]));
  say(`  room ${roomId}`);
  step("alice's and bob's clients see bob joined");
  await joined(alice, roomId, bobId);
  step("bob's client sees himself joined");
  await joined(bob, roomId, bobId);

  step("both clients see the room as encrypted through required_state");
  await poll(async () => ((await alice.getCrypto().isEncryptionEnabledInRoom(roomId)) ? true : undefined), 250);
  await poll(async () => ((await bob.getCrypto().isEncryptionEnabledInRoom(roomId)) ? true : undefined), 250);

  step("alice sends an encrypted message; bob decrypts it (room key from the to_device extension)");
  const first = `the first secret ${Date.now()}`;
  const { event_id: firstId } = await alice.sendMessage(roomId, { msgtype: "m.text", body: first });
  const got = await decryptedMessage(bob, roomId, aliceId, first);
  if (got.getId() !== firstId) fail(`bob decrypted ${got.getId()}, alice sent ${firstId}`);
  say(`  ${firstId}`);

  step("bob replies encrypted; alice decrypts it");
  const reply = `bob's secret ${Date.now()}`;
  const { event_id: replyId } = await bob.sendMessage(roomId, { msgtype: "m.text", body: reply });
  const back = await decryptedMessage(alice, roomId, bobId, reply);
  if (back.getId() !== replyId) fail(`alice decrypted ${back.getId()}, bob sent ${replyId}`);
  say(`  ${replyId}`);

  step("the clients synced through sliding sync only");
  const sliding = requests.filter((r) => new URL(r.url).pathname === unstablePath);
  const v3 = requests.filter((r) => new URL(r.url).pathname === "/_matrix/client/v3/sync");
  for (const user of [aliceId, bobId]) {
    if (!sliding.some((r) => r.user === user && r.status === 200)) fail(`${user} made no sliding sync request`);
  }
  if (v3.length > 0) fail(`${v3.length} /v3/sync request(s): ${v3[0].url}`);
  const failed = sliding.filter((r) => r.status !== 200);
  say(`  ${sliding.length} sliding sync requests, ${failed.length} not 200`);
  for (const r of refusals) say(`  refused: ${r}`);

  step("stop the clients");
  alice.stopClient();
  bob.stopClient();
  pass();
}

main().catch((err) => fail(describe(err)));

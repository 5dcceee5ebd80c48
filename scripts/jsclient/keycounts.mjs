#!/usr/bin/env node
// keycounts.mjs: matrix-js-sdk's Rust crypto keeps its one-time keys topped
// up from the counts in each /sync, taking counts that are missing for zero.
// Two clients sync for CIRRUS_SYNC_SECONDS (30 by default) with traffic: an
// encrypted room, a message each way every two seconds (the first of each
// claims a one-time key of the other's device), receipts and typing. Each
// client uploads its first keys, then once more to replace the key the
// other claimed (see the last step for the one race a loaded machine adds),
// and ends with the 50 signed_curve25519 keys the SDK keeps on the server.
//
//   CIRRUS_URL=... CIRRUS_USERS=@alice:x,@bob:x CIRRUS_PASSWORD=... node keycounts.mjs
//
// Exit status and output as in scenario.mjs (lib.mjs).
import { Method } from "matrix-js-sdk";
import { cryptoClient, decrypted, describe, encryptedRoom, fail, mustEnv, pass, say, step } from "./lib.mjs";

const [aliceId, bobId] = mustEnv("CIRRUS_USERS").split(",");
const seconds = Number(process.env.CIRRUS_SYNC_SECONDS || 30);
// The number of signed_curve25519 keys the Rust crypto keeps uploaded.
const target = 50;

// uploads counts, by user, the /keys/upload requests that carry one-time keys.
const uploads = {};

// countingFetch is fetch that counts the one-time key uploads of userId.
function countingFetch(userId) {
  uploads[userId] = [];
  return async (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    if (url.includes("/keys/upload") && typeof init?.body === "string") {
      const n = Object.keys(JSON.parse(init.body).one_time_keys ?? {}).length;
      if (n > 0) uploads[userId].push(n);
    }
    return fetch(input, init);
  };
}

// serverCount asks the server how many signed_curve25519 keys the client's
// device has: an upload of nothing answers with the counts.
async function serverCount(client) {
  const res = await client.http.authedRequest(Method.Post, "/keys/upload", undefined, {});
  return res.one_time_key_counts?.signed_curve25519 ?? 0;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  step("log in alice and bob with Rust crypto; both sync");
  const [alice, bob] = await Promise.all([aliceId, bobId].map((u) => cryptoClient(u, { fetchFn: countingFetch(u) })));

  step("alice creates an encrypted room and invites bob; bob joins");
  const roomId = await encryptedRoom(alice, bob);

  step(`both sync for ${seconds} s, a message each way every 2 s, with typing and receipts`);
  const end = Date.now() + seconds * 1000;
  for (let i = 0; Date.now() < end; i++) {
    for (const [from, to, fromId] of [[alice, bob, aliceId], [bob, alice, bobId]]) {
      const body = `message ${i} from ${fromId}`;
      const got = decrypted(to, roomId, fromId, body);
      await from.sendTyping(roomId, true, 5000);
      await from.sendMessage(roomId, { msgtype: "m.text", body });
      const ev = await got;
      await to.sendReadReceipt(ev);
    }
    await sleep(2000);
  }
  say(`  one-time key uploads: alice ${JSON.stringify(uploads[aliceId])}, bob ${JSON.stringify(uploads[bobId])}`);

  // After its first upload a client replaces the key the other claimed:
  // one upload of one key. A loaded machine can add a race of the SDK's own
  // order: a sync answered just before that upload landed, processed after
  // the upload's answer, says one key is missing again, and the SDK uploads
  // one more (Synapse shows the same). What the old bug did, a top-up of 50
  // keys at every sync, fails here however loaded the machine.
  step("each client made its first upload, then replaced the claimed key; the server holds the SDK's 50 keys each");
  for (const [client, userId] of [[alice, aliceId], [bob, bobId]]) {
    const [first, ...later] = uploads[userId];
    if (first !== target || later.length > 3 || later.some((n) => n > 2)) {
      fail(`${userId} uploaded one-time keys ${JSON.stringify(uploads[userId])}: want ${target}, then at most a few single keys`);
    }
    const raced = Math.max(0, later.length - 1);
    if (raced > 0) say(`  ${userId}: ${raced} upload(s) after a sync answered during its upload (the SDK's processing order)`);
    const count = await serverCount(client);
    say(`  ${userId}: ${count} signed_curve25519 keys on the server`);
    if (count < target || count > target + raced) fail(`${userId} has ${count} signed_curve25519 keys on the server, want ${target}`);
  }

  step("stop the clients");
  alice.stopClient();
  bob.stopClient();
  pass();
}

main().catch((err) => fail(describe(err)));

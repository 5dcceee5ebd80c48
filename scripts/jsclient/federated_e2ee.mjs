#!/usr/bin/env node
// federated_e2ee.mjs: end-to-end encryption between two homeservers with
// matrix-js-sdk's Rust crypto: alice on server A, bob on server B, every
// key query, key claim and to-device message between them going over
// federation (shared/jsclient/federation_test.go):
//
//   CIRRUS_URL=<A's client API> CIRRUS_URL_B=<B's client API> CIRRUS_SERVER_A=<A's server name> \
//   CIRRUS_USERS=@alice:A,@bob:B CIRRUS_PASSWORD=... [CIRRUS_ROOM_VERSION=10] node federated_e2ee.mjs
//
// B may be another implementation: Dendrite (TestFederatedEncryptionWithDendrite).
//
// Steps: alice and bob log in on their own servers and sync with Rust
// crypto; each bootstraps cross-signing; alice creates an encrypted public
// room, bob joins it through A; alice's message decrypts on bob's side and
// bob's reply on alice's (room keys as Olm to-device messages, after a
// /keys/query and /keys/claim of the other's device through the other's
// server); bob asks alice's device to verify, alice accepts, both compare
// the SAS emoji and confirm: each ends with the other's device verified
// (every verification message a to-device message across the servers),
// and then the other's identity verified by cross-signing (the signature
// of the other's master key kept by the signer's server).
// Exit status and output as in scenario.mjs (lib.mjs).
import { createClient } from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/index.js";
import { VerificationPhase, VerificationRequestEvent, VerifierEvent } from "matrix-js-sdk/lib/crypto-api/verification.js";
import { decrypted, describe, fail, mustEnv, pass, password, poll, say, startSyncing, step, until } from "./lib.mjs";
import { RoomMemberEvent } from "matrix-js-sdk";

const [aliceId, bobId] = mustEnv("CIRRUS_USERS").split(",");
const urlA = mustEnv("CIRRUS_URL");
const urlB = mustEnv("CIRRUS_URL_B");
const serverA = mustEnv("CIRRUS_SERVER_A");
// The room version, when the other server does not know the default (v12):
// Dendrite 0.13.8 knows 1 to 11.
const roomVersion = process.env.CIRRUS_ROOM_VERSION;

// login logs userId in on the server at baseUrl and returns a client of
// the new device with Rust crypto, syncing.
async function login(userId, baseUrl) {
  const anon = createClient({ baseUrl });
  const res = await anon.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: userId },
    password,
    initial_device_display_name: `federated scenario ${userId}`,
  });
  if (res.user_id !== userId || !res.access_token || !res.device_id) fail(`login of ${userId} answered ${JSON.stringify(res)}`);
  const client = createClient({ baseUrl, userId, accessToken: res.access_token, deviceId: res.device_id });
  await client.initRustCrypto({ useIndexedDB: false });
  await startSyncing(client);
  return client;
}

function passwordAuth(userId) {
  return async (makeRequest) => {
    await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password });
  };
}

// sasConfirmed runs one side of a SAS verification: it confirms the emoji
// when they show and resolves when the verifier is done.
async function sasConfirmed(who, verifier) {
  verifier.on(VerifierEvent.ShowSas, (sas) => {
    say(`  ${who} sees ${sas.sas.emoji?.map((e) => e[1]).join(" ")}`);
    sas.confirm().catch((err) => fail(`${who} confirms: ${describe(err)}`));
  });
  await verifier.verify();
}

async function main() {
  step("alice logs in on A, bob on B, both with Rust crypto; both sync");
  const [alice, bob] = await Promise.all([login(aliceId, urlA), login(bobId, urlB)]);
  const aliceCrypto = alice.getCrypto();
  const bobCrypto = bob.getCrypto();

  step("each bootstraps cross-signing on their own server");
  await aliceCrypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordAuth(aliceId) });
  await bobCrypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordAuth(bobId) });

  step("alice creates an encrypted public room; bob joins it through A");
  const { room_id: roomId } = await alice.createRoom({
    preset: "public_chat",
    name: "federated e2ee",
    ...(roomVersion ? { room_version: roomVersion } : {}),
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
  });
  const aliceSeesJoin = until(alice, [RoomMemberEvent.Membership], () =>
    alice.getRoom(roomId)?.getMember(bobId)?.membership === "join" ? true : undefined,
  );
  await bob.joinRoom(roomId, { viaServers: [serverA] });
  await aliceSeesJoin;
  await poll(async () => ((await bobCrypto.isEncryptionEnabledInRoom(roomId)) ? true : undefined), 100);
  say(`  room ${roomId}`);

  step("each sees the other's device and cross-signing keys (keys/query across servers)");
  await poll(async () => {
    const devs = await aliceCrypto.getUserDeviceInfo([bobId], true);
    return devs.get(bobId)?.has(bob.getDeviceId()) ? true : undefined;
  }, 250);
  await poll(async () => {
    const devs = await bobCrypto.getUserDeviceInfo([aliceId], true);
    return devs.get(aliceId)?.has(alice.getDeviceId()) ? true : undefined;
  }, 250);
  say(`  alice sees bob's cross-signing keys: ${await aliceCrypto.userHasCrossSigningKeys(bobId, true)}; bob sees alice's: ${await bobCrypto.userHasCrossSigningKeys(aliceId, true)}`);

  step("alice sends an encrypted message; bob on B decrypts it");
  const first = `alice's secret across servers ${Date.now()}`;
  const bobGets = decrypted(bob, roomId, aliceId, first);
  const { event_id: firstId } = await alice.sendMessage(roomId, { msgtype: "m.text", body: first });
  const got = await bobGets;
  if (got.getId() !== firstId) fail(`bob decrypted ${got.getId()}, alice sent ${firstId}`);
  if (got.getWireType() !== "m.room.encrypted") fail(`the event went over the wire as ${got.getWireType()}`);
  say(`  ${firstId}`);

  step("bob replies encrypted; alice on A decrypts it");
  const reply = `bob's secret across servers ${Date.now()}`;
  const aliceGets = decrypted(alice, roomId, bobId, reply);
  await bob.sendMessage(roomId, { msgtype: "m.text", body: reply });
  const back = await aliceGets;
  if (back.getWireType() !== "m.room.encrypted") fail(`the reply went over the wire as ${back.getWireType()}`);

  step("bob asks to verify alice's device; alice accepts (to-device across servers)");
  const aliceRequest = until(alice, [CryptoEvent.VerificationRequestReceived], (req) => (req ? req : undefined));
  const bobRequest = await bobCrypto.requestDeviceVerification(aliceId, alice.getDeviceId());
  const incoming = await aliceRequest;
  if (incoming.otherUserId !== bobId) fail(`alice's request is from ${incoming.otherUserId}`);
  await incoming.accept();
  await until(bobRequest, [VerificationRequestEvent.Change], () => (bobRequest.phase === VerificationPhase.Ready ? true : undefined));

  step("both compare the SAS emoji and confirm");
  const bobVerifier = await bobRequest.startVerification("m.sas.v1");
  const aliceVerifier = await until(incoming, [VerificationRequestEvent.Change], () => incoming.verifier);
  await Promise.all([sasConfirmed("bob", bobVerifier), sasConfirmed("alice", aliceVerifier)]);
  await until(bobRequest, [VerificationRequestEvent.Change], () => (bobRequest.phase === VerificationPhase.Done ? true : undefined));

  step("each holds the other's device as verified");
  const aliceOnBob = await bobCrypto.getDeviceVerificationStatus(aliceId, alice.getDeviceId());
  const bobOnAlice = await aliceCrypto.getDeviceVerificationStatus(bobId, bob.getDeviceId());
  say(`  bob's view of alice's device: ${JSON.stringify(aliceOnBob)}; alice's of bob's: ${JSON.stringify(bobOnAlice)}`);
  if (!aliceOnBob?.isVerified()) fail("bob does not hold alice's device as verified");
  if (!bobOnAlice?.isVerified()) fail("alice does not hold bob's device as verified");

  step("each holds the other's identity as cross-signing verified");
  // Each client signed the other's master key with its user-signing key
  // and uploaded the signature to its own server, which checked it against
  // the other server's copy of the key; the next /keys/query shows it.
  await poll(async () => ((await bobCrypto.getUserVerificationStatus(aliceId)).isCrossSigningVerified() ? true : undefined), 250);
  await poll(async () => ((await aliceCrypto.getUserVerificationStatus(bobId)).isCrossSigningVerified() ? true : undefined), 250);
  const bobSeen = await aliceCrypto.getDeviceVerificationStatus(bobId, bob.getDeviceId());
  if (!bobSeen?.crossSigningVerified) fail(`alice's view of bob's device: ${JSON.stringify(bobSeen)}`);

  step("stop the clients");
  alice.stopClient();
  bob.stopClient();
  pass();
}

main().catch((err) => fail(describe(err)));

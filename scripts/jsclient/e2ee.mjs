#!/usr/bin/env node
// e2ee.mjs: end-to-end encryption as Element Web does it, with
// matrix-js-sdk's Rust crypto (initRustCrypto), through a Cirrus homeserver:
//
//   CIRRUS_URL=http://127.0.0.1:PORT CIRRUS_USERS=@alice:example.org,@bob:example.org \
//   CIRRUS_PASSWORD=... node e2ee.mjs
//
// Steps: alice and bob log in and sync with Rust crypto; alice bootstraps
// cross-signing (user-interactive auth with her password), secret storage
// with a recovery key, and key backup; she creates an encrypted room and
// invites bob, who joins; a message each way decrypts on the other side;
// alice's room key reaches the backup; alice logs in a second device that
// loads the backup key from secret storage with the recovery key, restores
// the backup and decrypts the first message, sent before that device
// existed; the second device logs out, and bob's view of alice's devices
// loses it. Exit status and output as in scenario.mjs (lib.mjs).
import { Method } from "matrix-js-sdk";
import { cryptoClient, decrypted, describe, encryptedRoom, fail, mustEnv, pass, password, poll, recovery, requests, say, step } from "./lib.mjs";

const [aliceId, bobId] = mustEnv("CIRRUS_USERS").split(",");

// passwordAuth answers the user-interactive auth that replacing
// cross-signing keys may ask for.
function passwordAuth(userId) {
  return async (makeRequest) => {
    await makeRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password });
  };
}

async function main() {
  step("log in alice and bob with Rust crypto; both sync");
  const [alice, bob] = await Promise.all([cryptoClient(aliceId), cryptoClient(bobId)]);
  const aliceCrypto = alice.getCrypto();
  const bobCrypto = bob.getCrypto();

  step("alice bootstraps cross-signing, secret storage with a recovery key, and key backup");
  await aliceCrypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordAuth(aliceId) });
  recovery.key = await aliceCrypto.createRecoveryKeyFromPassphrase();
  await aliceCrypto.bootstrapSecretStorage({
    createSecretStorageKey: async () => recovery.key,
    setupNewSecretStorage: true,
    setupNewKeyBackup: true,
  });
  if (!(await aliceCrypto.isCrossSigningReady())) fail("cross-signing is not ready");
  if (!(await aliceCrypto.isSecretStorageReady())) fail("secret storage is not ready");
  const backupVersion = await poll(async () => (await aliceCrypto.getActiveSessionBackupVersion()) ?? undefined);
  say(`  backup version ${backupVersion}; bob sees alice's cross-signing keys: ${await bobCrypto.userHasCrossSigningKeys(aliceId, true)}`);

  step("alice creates an encrypted room and invites bob; bob joins");
  const roomId = await encryptedRoom(alice, bob, { name: "e2ee scenario" });
  if (!(await aliceCrypto.isEncryptionEnabledInRoom(roomId))) fail("alice's client does not see the room as encrypted");

  step("alice sends an encrypted message, loading the members at her sync token first; bob decrypts it");
  const first = `the first secret ${Date.now()}`;
  const bobGets = decrypted(bob, roomId, aliceId, first);
  const { event_id: firstId } = await alice.sendMessage(roomId, { msgtype: "m.text", body: first });
  const membersPath = `/rooms/${encodeURIComponent(roomId)}/members?`;
  const loads = requests.filter((r) => r.user === aliceId && r.url.includes(membersPath));
  say(`  alice's member loads: ${loads.map((r) => `${r.status} ${r.url.slice(r.url.indexOf("?"))}`).join(", ")}`);
  if (!loads.some((r) => r.status === 200 && new URL(r.url).searchParams.get("at")?.startsWith("s"))) {
    fail("alice's client did not load the members at its sync token before sending");
  }
  const got = await bobGets;
  if (got.getId() !== firstId) fail(`bob decrypted ${got.getId()}, alice sent ${firstId}`);
  if (got.getWireType() !== "m.room.encrypted") fail(`the event went over the wire as ${got.getWireType()}`);
  say(`  ${firstId}`);

  step("bob replies encrypted; alice decrypts it");
  const reply = `bob's secret ${Date.now()}`;
  const aliceGets = decrypted(alice, roomId, bobId, reply);
  await bob.sendMessage(roomId, { msgtype: "m.text", body: reply });
  await aliceGets;

  step("alice's room keys reach the key backup");
  const stored = await poll(async () => {
    const info = await alice.http.authedRequest(Method.Get, "/room_keys/version");
    return info.count > 0 ? info.count : undefined;
  }, 250);
  say(`  ${stored} session(s) in backup version ${backupVersion}`);

  step("alice logs in a second device, restores the backup with the recovery key");
  const second = await cryptoClient(aliceId);
  const secondCrypto = second.getCrypto();
  await secondCrypto.loadSessionBackupPrivateKeyFromSecretStorage();
  await secondCrypto.checkKeyBackupAndEnable();
  const restored = await secondCrypto.restoreKeyBackup();
  say(`  imported ${restored.imported} of ${restored.total} key(s)`);
  if (restored.imported < 1) fail(`the restore imported ${restored.imported} keys`);

  step("the second device decrypts the first message, sent before it existed");
  const old = await poll(async () => {
    const ev = second.getRoom(roomId)?.findEventById(firstId);
    if (!ev) return undefined;
    await second.decryptEventIfNeeded(ev, { isRetry: true });
    return ev.getClearContent()?.body === first ? ev : undefined;
  }, 250);
  say(`  ${old.getId()}: "${old.getClearContent().body}"`);

  step("the second device logs out; bob's view of alice's devices loses it");
  const secondDevice = second.getDeviceId();
  // bob's client learns of the new device from device_lists in his sync,
  // then fetches alice's keys again.
  await poll(async () => {
    const now = await bobCrypto.getUserDeviceInfo([aliceId], true);
    return now.get(aliceId)?.has(secondDevice) ? true : undefined;
  }, 250);
  second.stopClient();
  await second.logout(true);
  await poll(async () => {
    const now = await bobCrypto.getUserDeviceInfo([aliceId], true);
    return now.get(aliceId)?.has(secondDevice) ? undefined : true;
  }, 250);

  step("stop the clients");
  alice.stopClient();
  bob.stopClient();
  pass();
}

main().catch((err) => fail(describe(err)));

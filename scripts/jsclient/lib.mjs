// lib.mjs: what the scenarios share: their output, the deadline, waiting for
// client events, logging in and starting a sync loop. Each step is printed as
// it happens; a scenario exits 0 only when it prints PASS.
import { ClientEvent, MatrixEventEvent, RoomEvent, RoomMemberEvent, SyncState, createClient } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

// The SDK's own log: warnings and errors only, unless CIRRUS_JS_LOG=debug.
// Its child loggers (sync, MatrixRTC, ...) each set their own level, so
// the chatter is silenced at the console; the scenarios write to stdout.
if (process.env.CIRRUS_JS_LOG !== "debug") {
  logger.setLevel("warn");
  console.log = console.info = console.debug = () => {};
}

export function say(line) {
  process.stdout.write(line + "\n");
}

const began = Date.now();
let current = "start";

export function step(name) {
  current = name;
  say(`[${((Date.now() - began) / 1000).toFixed(3)}s] ${name}`);
}

export function fail(why) {
  say(`FAIL at step "${current}": ${why}`);
  process.exit(1);
}

export function pass() {
  clearTimeout(deadline);
  say(`PASS in ${Date.now() - began} ms`);
  process.exit(0);
}

export function mustEnv(name) {
  const v = process.env[name];
  if (!v) {
    say(`FAIL: ${name} is not set`);
    process.exit(2);
  }
  return v;
}

export const baseUrl = mustEnv("CIRRUS_URL");
export const password = mustEnv("CIRRUS_PASSWORD");
const timeoutMs = Number(process.env.CIRRUS_TIMEOUT_MS || 30000);

// The scenario fails when it is not done by the deadline, and when its stdin
// reaches end of file, which happens when the test binary that started it
// dies, so no run leaves a process.
const deadline = setTimeout(() => fail(`not done after ${timeoutMs} ms`), timeoutMs);
process.stdin.on("end", () => fail("stdin closed: the test that started this scenario has gone"));
process.stdin.resume();
process.on("unhandledRejection", (err) => fail(`unhandled rejection: ${describe(err)}`));

export function describe(err) {
  if (err && err.httpStatus) {
    return `HTTP ${err.httpStatus} ${err.errcode ?? ""} ${err.data ? JSON.stringify(err.data) : err.message}`;
  }
  return err && err.stack ? err.stack : String(err);
}

// until resolves with the first value of check(...args) that is not
// undefined, checking once now and then on every emission of each event of
// emitter in events. Register it before the action that causes the event.
export function until(emitter, events, check) {
  return new Promise((resolve, reject) => {
    const done = (v) => {
      for (const e of events) emitter.off(e, on);
      resolve(v);
    };
    const on = (...args) => {
      try {
        const v = check(...args);
        if (v !== undefined) done(v);
      } catch (err) {
        reject(err);
      }
    };
    for (const e of events) emitter.on(e, on);
    on();
  });
}

// poll resolves with the first value of the async check that is not
// undefined, trying every interval ms: for state the server holds that no
// client event announces.
export async function poll(check, interval = 200) {
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, interval));
  }
}

// requests lists what the scenario's clients asked and what they were
// answered, { user, method, url, status }, for steps that check the calls
// the SDK makes.
export const requests = [];

// recording wraps a fetch so that userId's requests land in requests.
function recording(userId, inner = fetch) {
  return async (input, init) => {
    const res = await inner(input, init);
    const url = String(input instanceof Request ? input.url : input);
    // redirected and finalUrl tell a body fetched from the bucket of large
    // responses (shared/bigbody) after a 307 or 303.
    requests.push({ user: userId, method: init?.method ?? "GET", url, status: res.status, redirected: res.redirected, finalUrl: res.url });
    return res;
  };
}

// login logs userId in with the password and returns a client for the new
// device; opts go to createClient (such as cryptoCallbacks, or a fetchFn
// under the recording one).
export async function login(userId, opts = {}) {
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
  return createClient({
    baseUrl,
    userId: res.user_id,
    accessToken: res.access_token,
    deviceId: res.device_id,
    ...opts,
    fetchFn: recording(userId, opts.fetchFn),
  });
}

export async function startSyncing(client) {
  const prepared = until(client, [ClientEvent.Sync], (state, _prev, data) => {
    if (state === SyncState.Error) {
      say(`  ${client.getUserId()}: sync error ${describe(data?.error)}`);
    }
    return state === SyncState.Prepared ? true : undefined;
  });
  // As Element Web starts it: members are loaded lazily, so that the
  // first message in an encrypted room loads them with /members?at=<the
  // last sync's next_batch>.
  await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: true });
  await prepared;
}

// timelineMessage waits for a live m.room.message in roomId from sender with body.
export function timelineMessage(client, roomId, sender, body) {
  return until(client, [RoomEvent.Timeline], (event, room, toStartOfTimeline) => {
    if (!event || toStartOfTimeline || room?.roomId !== roomId) return undefined;
    if (event.getType() !== "m.room.message" || event.getSender() !== sender) return undefined;
    return event.getContent().body === body ? event : undefined;
  });
}

// decrypted waits until client holds a message of roomId from sender whose
// decrypted body is body, and returns that event.
export function decrypted(client, roomId, sender, body) {
  const find = () => {
    const room = client.getRoom(roomId);
    for (const ev of room?.getLiveTimeline().getEvents() ?? []) {
      if (ev.getSender() === sender && ev.isEncrypted() && ev.getClearContent()?.body === body) return ev;
    }
    return undefined;
  };
  return until(client, [RoomEvent.Timeline, MatrixEventEvent.Decrypted], find);
}

// encryptedRoom has alice create an encrypted room (opts go to createRoom),
// invite bob and wait until each client sees bob joined, through its sync;
// it returns the room ID.
export async function encryptedRoom(alice, bob, opts = {}) {
  const bobId = bob.getUserId();
  const { room_id: roomId } = await alice.createRoom({
    preset: "private_chat",
    initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    ...opts,
  });
  const invited = until(bob, [ClientEvent.Room, RoomEvent.MyMembership], () =>
    bob.getRoom(roomId)?.getMyMembership() === "invite" ? true : undefined,
  );
  await alice.invite(roomId, bobId);
  await invited;
  const aliceSeesJoin = until(alice, [RoomMemberEvent.Membership], () =>
    alice.getRoom(roomId)?.getMember(bobId)?.membership === "join" ? true : undefined,
  );
  await bob.joinRoom(roomId);
  await aliceSeesJoin;
  return roomId;
}

// recovery holds the recovery key once a scenario has made one: what the
// user would type when asked for their security key.
export const recovery = { key: undefined };

const cryptoCallbacks = {
  getSecretStorageKey: async ({ keys }) => {
    const key = recovery.key;
    if (!key) return null;
    const keyId = Object.keys(keys).find((id) => id === key.keyId) ?? Object.keys(keys)[0];
    return [keyId, key.privateKey];
  },
};

// cryptoClient logs userId in with matrix-js-sdk's Rust crypto, as Element
// Web does, and starts its sync loop; opts go to login (a fetchFn, say).
export async function cryptoClient(userId, opts = {}) {
  const client = await login(userId, { cryptoCallbacks, ...opts });
  await client.initRustCrypto({ useIndexedDB: false });
  await startSyncing(client);
  return client;
}

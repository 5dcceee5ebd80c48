#!/usr/bin/env node
// discovery.mjs: what Element finds through matrix-js-sdk's own methods, in a
// world the Go test made (shared/jsclient/discovery_test.go, described in
// CIRRUS_WORLD): a space's hierarchy walked one room a page, room
// summaries, server-side search paged back, the user directory, a room's
// threads paged and filtered, and account data deleted the SDK's way (a
// PUT of {}) and MSC3391's (DELETE). Each step checks what it is answered.
//
//   CIRRUS_URL=... CIRRUS_USERS=@alice:x,@bob:x CIRRUS_PASSWORD=... CIRRUS_WORLD='{...}' node discovery.mjs
//
// Exit status and output as in scenario.mjs (lib.mjs).
import { ClientEvent, Direction, Method, ThreadFilterType } from "matrix-js-sdk";
import { describe, fail, login, mustEnv, pass, say, startSyncing, step, until } from "./lib.mjs";

const [aliceId, bobId] = mustEnv("CIRRUS_USERS").split(",");
const w = JSON.parse(mustEnv("CIRRUS_WORLD"));
const names = { [w.Space]: "Discovery", [w.Garden]: "Garden", [w.Library]: "Library", [w.Attic]: "Attic" };
const named = (ids) => ids.map((id) => names[id] ?? id);

// canonical is JSON with object keys sorted, so that key order does not
// count in a comparison.
const canonical = (v) => JSON.stringify(v, (_k, x) =>
  x && typeof x === "object" && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x,
);
const same = (got, want) => canonical(got) === canonical(want);

function expect(what, got, want) {
  if (!same(got, want)) fail(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

// walk follows a hierarchy's next_batch to its end and returns its pages.
async function walk(client, opts) {
  const pages = [];
  let from;
  do {
    const page = await client.getRoomHierarchy(w.Space, opts.limit, opts.maxDepth, opts.suggestedOnly ?? false, from);
    pages.push(page);
    from = page.next_batch;
    if (pages.length > 10) fail(`hierarchy ${JSON.stringify(opts)} gave more than 10 pages: ${JSON.stringify(pages)}`);
  } while (from);
  return pages;
}

async function hierarchy(alice, bob) {
  step("bob walks the space's hierarchy one room a page: the space, Garden, Library; never the Attic");
  let pages = await walk(bob, { limit: 1 });
  const rooms = pages.flatMap((p) => p.rooms);
  say(`  ${pages.length} pages: ${JSON.stringify(pages.map((p) => named(p.rooms.map((r) => r.room_id))))}`);
  if (pages.some((p) => p.rooms.length > 1)) fail(`a page of limit 1 held more than one room`);
  expect("bob's rooms, in order, each once", named(rooms.map((r) => r.room_id)), ["Discovery", "Garden", "Library"]);
  const [space, garden] = rooms;
  expect("the space", [space.name, space.topic, space.room_type, space.num_joined_members, space.join_rule],
    ["Discovery", "what js-sdk finds", "m.space", 2, "public"]);
  // The Attic's child event stays though bob may not see the room.
  expect("the space's children", named(space.children_state.map((e) => e.state_key)).sort(), ["Attic", "Garden", "Library"]);
  expect("a child event", [space.children_state.every((e) => e.type === "m.space.child" && e.sender === aliceId && e.origin_server_ts > 0)], [true]);
  expect("Garden", [garden.name, garden.topic, garden.room_type, garden.num_joined_members, garden.join_rule],
    ["Garden", "where pineapples grow", undefined, 3, "public"]);

  step("alice, in every room, walks them all: the Attic too");
  pages = await walk(alice, { limit: 1 });
  expect("alice's rooms", named(pages.flatMap((p) => p.rooms.map((r) => r.room_id))), ["Discovery", "Garden", "Library", "Attic"]);

  step("suggested only, and a depth of 0");
  pages = await walk(bob, { suggestedOnly: true });
  expect("suggested rooms", named(pages.flatMap((p) => p.rooms.map((r) => r.room_id))), ["Discovery", "Garden"]);
  pages = await walk(bob, { maxDepth: 0 });
  expect("depth 0", named(pages.flatMap((p) => p.rooms.map((r) => r.room_id))), ["Discovery"]);
}

async function summaries(bob) {
  step("bob reads room summaries: Library by ID and by alias, the space, Garden; the Attic is not found");
  const lib = await bob.getRoomSummary(w.Library);
  expect("Library's summary", [lib.room_id, lib.name, lib.topic, lib.canonical_alias, lib.join_rule, lib.num_joined_members, lib.room_type, lib.membership],
    [w.Library, "Library", "quiet please", w.LibraryAlias, "public", 1, undefined, "leave"]);
  expect("Library by alias", (await bob.getRoomSummary(w.LibraryAlias)).room_id, w.Library);
  const space = await bob.getRoomSummary(w.Space);
  expect("the space's summary", [space.room_type, space.num_joined_members, space.membership], ["m.space", 2, "join"]);
  expect("Garden's membership", (await bob.getRoomSummary(w.Garden)).membership, "join");
  const err = await bob.getRoomSummary(w.Attic).then(() => undefined, (e) => e);
  expect("the Attic's summary", [err?.httpStatus, err?.errcode], [404, "M_NOT_FOUND"]);
}

const bodies = (res) => res.results.map((r) => r.context.getEvent().getContent().body);

async function search(alice, bob) {
  step("bob searches his rooms for pineapple, newest first, with the events around each");
  let res = await bob.searchRoomEvents({ term: "pineapple" });
  expect("bob's results", bodies(res), ["pineapple forever", "no pineapple please", "pineapple on pizza"]);
  expect("count and highlights", [res.count, res.highlights.includes("pineapple"), res.next_batch], [3, true, undefined]);
  const middle = res.results[1].context;
  expect("the middle result's context", middle.getTimeline().map((e) => e.getContent().body),
    ["pineapple on pizza", "no pineapple please", "pineapple forever"]);

  step("bob pages the same search back one result at a time");
  res = await bob.searchRoomEvents({ term: "pineapple", filter: { limit: 1 } });
  const seen = [bodies(res).length];
  while (res.next_batch) {
    res = await bob.backPaginateRoomEventsSearch(res);
    seen.push(res.results.length);
    if (seen.length > 5) fail(`search pages: ${JSON.stringify(bodies(res))}`);
  }
  expect("results after each page", seen, [1, 2, 3]);
  expect("paged results", bodies(res), ["pineapple forever", "no pineapple please", "pineapple on pizza"]);

  step("a room filter: Library's message for alice, nothing for bob who is not in it");
  res = await alice.searchRoomEvents({ term: "pineapple", filter: { rooms: [w.Library] } });
  expect("alice in Library", bodies(res), ["pineapple in the library"]);
  res = await bob.searchRoomEvents({ term: "pineapple", filter: { rooms: [w.Library] } });
  expect("bob in Library", bodies(res), []);
}

async function directory(alice, bob) {
  step("the user directory: bob finds both Alices, one with limit 1; not carol, who shares no room");
  let res = await bob.searchUserDirectory({ term: "alice" });
  const found = Object.fromEntries(res.results.map((u) => [u.user_id, u.display_name]));
  expect("bob's search for alice", [found, res.limited], [{ [aliceId]: "Alice Liddell", [w.Alice2]: "Alice Cooper" }, false]);
  res = await bob.searchUserDirectory({ term: "alice", limit: 1 });
  expect("limit 1", [res.results.length, res.limited, [aliceId, w.Alice2].includes(res.results[0]?.user_id)], [1, true, true]);
  res = await bob.searchUserDirectory({ term: "carol" });
  expect("bob's search for carol", res.results, []);
  res = await alice.searchUserDirectory({ term: "Builder" });
  expect("alice's search for Builder", res.results.map((u) => [u.user_id, u.display_name]), [[bobId, "Bob Builder"]]);
}

const roots = (res) => res.chunk.map((e) => e.event_id);
const threadNames = (ids) => ids.map((id) => ({ [w.T1]: "T1", [w.T2]: "T2", [w.T3]: "T3" })[id] ?? id);

async function threads(bob) {
  step("bob pages Garden's threads one a page, as Element's thread panel asks: by latest reply, newest first");
  const pages = [];
  let from = null;
  do {
    const res = await bob.createThreadListMessagesRequest(w.Garden, from, 1, Direction.Backward, ThreadFilterType.All);
    pages.push(res);
    from = res.end;
    if (pages.length > 5) fail(`thread pages: ${JSON.stringify(pages.map(roots))}`);
  } while (from);
  expect("thread pages", pages.map((p) => threadNames(roots(p))), [["T1"], ["T2"], ["T3"]]);
  const t1 = pages[0].chunk[0];
  const agg = t1.unsigned?.["m.relations"]?.["m.thread"];
  expect("T1's aggregation", [t1.content.body, agg?.count, agg?.latest_event?.content?.body, agg?.current_user_participated],
    ["thread about tea", 2, "black tea", true]);
  expect("T3's participation", pages[2].chunk[0].unsigned?.["m.relations"]?.["m.thread"]?.current_user_participated, false);

  step("the threads bob took part in: T1 (a reply) and T2 (his root)");
  const mine = await bob.createThreadListMessagesRequest(w.Garden, null, 10, Direction.Backward, ThreadFilterType.My);
  // The SDK reverses the chunk into timeline order, oldest first.
  expect("participated", threadNames(roots(mine)), ["T2", "T1"]);
  expect("one page", mine.end, undefined);
}

async function accountData(bob) {
  const colour = "org.cirrus.discovery.colour";
  const shape = "org.cirrus.discovery.shape";
  const server = (type) =>
    bob.http.authedRequest(Method.Get, `/user/${encodeURIComponent(bobId)}/account_data/${type}`).then((c) => c, (e) => e);

  step("bob sets account data; his sync brings it back");
  await bob.setAccountData(colour, { colour: "blue" });
  expect("the SDK's copy", bob.getAccountData(colour)?.getContent(), { colour: "blue" });
  expect("the server's", await server(colour), { colour: "blue" });

  step("bob deletes it as the SDK does, a PUT of {} (MSC3391's deleted content); his sync brings {}");
  await bob.deleteAccountData(colour);
  expect("the SDK's copy after the delete", bob.getAccountData(colour)?.getContent(), {});

  step("bob deletes another type with MSC3391's DELETE: his sync brings {}; the server has none");
  await bob.setAccountData(shape, { shape: "round" });
  const emptied = until(bob, [ClientEvent.AccountData], (ev) =>
    ev?.getType() === shape && same(ev.getContent(), {}) ? true : undefined,
  );
  const prefix = "/_matrix/client/unstable/org.matrix.msc3391";
  const path = `/user/${encodeURIComponent(bobId)}/account_data/${shape}`;
  expect("DELETE", await bob.http.authedRequest(Method.Delete, path, undefined, undefined, { prefix }), {});
  await emptied;
  const gone = await server(shape);
  expect("the server's after DELETE", [gone?.httpStatus, gone?.errcode], [404, "M_NOT_FOUND"]);
  expect("DELETE again", await bob.http.authedRequest(Method.Delete, path, undefined, undefined, { prefix }), {});
}

async function main() {
  step("log in alice and bob; both sync");
  const [alice, bob] = await Promise.all([aliceId, bobId].map((u) => login(u)));
  await Promise.all([alice, bob].map(startSyncing));

  await hierarchy(alice, bob);
  await summaries(bob);
  await search(alice, bob);
  await directory(alice, bob);
  await threads(bob);
  await accountData(bob);

  step("stop the clients");
  alice.stopClient();
  bob.stopClient();
  pass();
}

main().catch((err) => fail(describe(err)));

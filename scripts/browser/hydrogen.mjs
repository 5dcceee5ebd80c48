// hydrogen.mjs: Hydrogen, the Matrix web client of hydrogen-view-sdk, in
// Debian's Chromium driven by playwright-core, against the homeserver at
// $HOMESERVER. Run by shared/browser's Go test, which sets the scene (bob
// invites $USERNAME to the room $ROOM_NAME) and plays bob.
//
// The page is Hydrogen's whole app, served on loopback by hydrogen-app.mjs,
// which the image scenario (shared/browser/hydrogen_media.mjs) shares. The
// user's steps go through its UI as a person's would: type the homeserver,
// username and password into the login form and click Log In, open the
// invite from the room list and click Accept, type $MESSAGE into the
// composer and click Send, then wait for $REPLY to appear in the timeline.
// Every request to the homeserver is Hydrogen's own, made by Chromium; each
// is recorded and printed at the end.
//
// Exit status 0 only when every step was seen. Output lines the Go test
// reads: "SENT", "REQUEST <method> <path> <status>" for each request to the
// homeserver, and "OK".
import { env, finish, launchChromium, logIn, serveHydrogen, stepTimeout } from "./hydrogen-app.mjs";

const homeserver = env("HOMESERVER");
const username = env("USERNAME");
const password = env("PASSWORD");
const roomName = env("ROOM_NAME");
const message = env("MESSAGE");
const reply = env("REPLY");
const executablePath = env("CHROMIUM");

// The test binary holds our stdin: end with it rather than outlive it.
process.stdin.on("end", () => process.exit(2));
process.stdin.resume();

const server = await serveHydrogen();
const origin = server.url;
const browser = await launchChromium(executablePath);
const requests = [];
const problems = [];
let ok = false;
try {
  const context = await browser.newContext();
  const tab = await context.newPage();
  tab.setDefaultTimeout(stepTimeout);
  tab.on("console", (m) => {
    if (m.type() === "error") console.log(`CONSOLE ${m.text()} ${m.location()?.url ?? ""}`);
  });
  tab.on("requestfailed", (req) => { if (!req.url().startsWith(homeserver)) console.log(`PAGE FAILED ${req.url()} ${req.failure()?.errorText}`); });
  tab.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  const record = (req, status) => {
    if (!req.url().startsWith(homeserver)) return;
    const u = new URL(req.url());
    requests.push(`${req.method()} ${u.pathname} ${status}`);
  };
  tab.on("response", (res) => {
    record(res.request(), res.status());
    if (res.url().startsWith(origin) && res.status() >= 400) console.log(`PAGE ${res.status()} ${res.url()}`);
  });
  tab.on("requestfailed", (req) => {
    // Hydrogen aborts its long-poll /sync when it closes or restarts it.
    if (!req.url().startsWith(homeserver)) return;
    record(req, "failed:" + req.failure()?.errorText);
  });

  await tab.goto(origin);

  await logIn(tab, { homeserver, username, password });

  // The invite is in the room list; open it and accept.
  const tile = tab.locator(".RoomList li", { hasText: roomName });
  await tile.click();
  await tab.locator(".InviteView").getByRole("button", { name: "Accept" }).click();
  console.log("ACCEPTED");

  // The joined room's composer.
  const composer = tab.locator(".MessageComposer textarea");
  await composer.fill(message);
  await tab.locator(".MessageComposer button.send").click();
  console.log("SENT");
  await tab.locator(".Timeline_messageBody", { hasText: message }).first().waitFor();

  // bob's reply, delivered to Hydrogen by its /sync.
  await tab.locator(".Timeline_messageBody", { hasText: reply }).first().waitFor();
  console.log("REPLY SEEN");
  const texts = await tab.locator(".Timeline_messageBody").allInnerTexts();
  console.log(`TIMELINE ${JSON.stringify(texts)}`);
  ok = problems.length === 0;
} catch (err) {
  problems.push(`step failed: ${err.message}`);
} finally {
  await browser.close().catch(() => {});
  server.close();
}
finish({ requests, problems, ok });

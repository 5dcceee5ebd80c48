// hydrogen_media.mjs: Hydrogen (hydrogen-view-sdk) in Debian's Chromium,
// driven by playwright-core, shows an image $USERNAME sent to the room
// $ROOM_NAME. Run by TestHydrogenShowsImage, which sends the image with
// mautrix-go before this starts.
//
// It lives beside its Go test rather than in scripts/browser, but runs there
// (testenv runs node with scripts/browser as its directory), so the npm
// packages come from that directory's node_modules, and the page serving,
// Chromium launch and login steps from its hydrogen-app.mjs, imported by
// file URL since this file's own directory has neither.
//
// Steps through Hydrogen's UI: log in with the form, open the room from the
// room list, wait for the image tile's <img> to load. Output lines the Go
// test reads: "IMAGE <json>" (the <img>'s src, natural and shown size),
// "SHOT <path>" for each screenshot written under $SHOT_DIR,
// "REQUEST <method> <path> <status>" for each request to the homeserver, and
// "OK".
import path from "node:path";
import { pathToFileURL } from "node:url";

// testenv runs this script in scripts/browser.
const here = process.cwd();
const { env, finish, launchChromium, logIn, serveHydrogen, stepTimeout } =
  await import(pathToFileURL(path.join(here, "hydrogen-app.mjs")).href);

const homeserver = env("HOMESERVER");
const username = env("USERNAME");
const password = env("PASSWORD");
const roomName = env("ROOM_NAME");
const imageName = env("IMAGE_NAME");
const shotDir = env("SHOT_DIR");
const executablePath = env("CHROMIUM");

// The test binary holds our stdin: end with it rather than outlive it.
process.stdin.on("end", () => process.exit(2));
process.stdin.resume();

const server = await serveHydrogen();
const browser = await launchChromium(executablePath);
const requests = [];
const problems = [];
let ok = false;
try {
  // One device pixel per CSS pixel, so the element's screenshot has the
  // size Hydrogen shows it at.
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, deviceScaleFactor: 1 });
  const tab = await context.newPage();
  tab.setDefaultTimeout(stepTimeout);
  tab.on("console", (m) => {
    if (m.type() === "error") console.log(`CONSOLE ${m.text()} ${m.location()?.url ?? ""}`);
  });
  tab.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  // Requests the service worker makes for the page (the media, with the
  // access token it adds) are the context's, not the page's.
  const record = (req, status) => {
    if (!req.url().startsWith(homeserver)) return;
    const u = new URL(req.url());
    const by = req.serviceWorker() ? " (service worker)" : "";
    requests.push(`${req.method()} ${u.pathname} ${status}${by}`);
  };
  context.on("response", (res) => record(res.request(), res.status()));
  context.on("requestfailed", (req) => record(req, "failed:" + req.failure()?.errorText));

  await tab.goto(server.url);
  await logIn(tab, { homeserver, username, password });

  await tab.locator(".RoomList li", { hasText: roomName }).click();
  console.log("ROOM OPENED");

  // Hydrogen renders an image message as an <img> in the tile's .media,
  // titled with the body; its src is set once the tile is visible.
  const img = tab.locator(`.Timeline .media img[title="${imageName}"]`).first();
  await img.waitFor();
  const handle = await img.elementHandle();
  await tab.waitForFunction((el) => el.complete && el.naturalWidth > 0, handle, { timeout: stepTimeout })
    .catch(async (err) => {
      const src = await img.getAttribute("src").catch(() => "?");
      throw new Error(`the image did not load (src ${src}): ${err.message}`);
    });
  const info = await img.evaluate((el) => ({
    src: el.currentSrc,
    naturalWidth: el.naturalWidth,
    naturalHeight: el.naturalHeight,
    width: el.getBoundingClientRect().width,
    height: el.getBoundingClientRect().height,
  }));
  console.log(`IMAGE ${JSON.stringify(info)}`);
  await img.scrollIntoViewIfNeeded();
  const element = path.join(shotDir, "image.png");
  await img.screenshot({ path: element });
  console.log(`SHOT ${element}`);
  const page = path.join(shotDir, "hydrogen.png");
  await tab.screenshot({ path: page });
  console.log(`SHOT ${page}`);
  ok = problems.length === 0;
} catch (err) {
  problems.push(`step failed: ${err.message}`);
} finally {
  await browser.close().catch(() => {});
  server.close();
}
finish({ requests, problems, ok });

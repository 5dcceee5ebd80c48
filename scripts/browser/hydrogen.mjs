// hydrogen.mjs: Hydrogen, the Matrix web client of hydrogen-view-sdk, in
// Debian's Chromium driven by playwright-core, against the homeserver at
// $HOMESERVER. Run by shared/browser's Go test, which sets the scene (bob
// invites $USERNAME to the room $ROOM_NAME) and plays bob.
//
// The page is Hydrogen's whole app (RootViewModel and RootView with its
// theme), served by this script on loopback. The user's steps go through
// its UI as a person's would: type the homeserver, username and password
// into the login form and click Log In, open the invite from the room list
// and click Accept, type $MESSAGE into the composer and click Send, then wait
// for $REPLY to appear in the timeline. Every request to the homeserver is
// Hydrogen's own, made by Chromium; each is recorded and printed at the end.
//
// Exit status 0 only when every step was seen. Output lines the Go test
// reads: "SENT", "REQUEST <method> <path> <status>" for each request to the
// homeserver, and "OK".
import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const homeserver = env("HOMESERVER");
const username = env("USERNAME");
const password = env("PASSWORD");
const roomName = env("ROOM_NAME");
const message = env("MESSAGE");
const reply = env("REPLY");
const executablePath = env("CHROMIUM");
// A guard against a hang, not a measure: the machine may be loaded.
const stepTimeout = 60_000;

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(here, "node_modules");
const sdk = path.join(modules, "hydrogen-view-sdk");

// The SDK's ES build imports a few npm packages by bare name. Browsers load
// only ES modules, so the page's import map points each name at a route
// below: an ES build where the package has one, else its CommonJS file
// wrapped as a module. olm.js is imported only for its side effect; Hydrogen
// loads it itself as a classic script (assetPaths.olm).
const commonJS = {
  "/shim/another-json.js": "another-json/another-json.js",
  "/shim/base64-arraybuffer.js": "base64-arraybuffer/lib/base64-arraybuffer.js",
  "/shim/off-color.js": "off-color/cjs/index.js",
};
const files = {
  "/hydrogen.es.js": path.join(sdk, "lib-build", "hydrogen.es.js"),
  "/sw.js": path.join(sdk, "lib-build", "sw.js"),
  "/shim/dompurify.js": path.join(modules, "dompurify", "dist", "purify.es.js"),
};

const page = `<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>Hydrogen on Cirrus</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/theme-element-light.css">
<script type="importmap">
${JSON.stringify({
  imports: {
    "hydrogen-view-sdk": "/hydrogen.es.js",
    "another-json": "/shim/another-json.js",
    "base64-arraybuffer": "/shim/base64-arraybuffer.js",
    "off-color": "/shim/off-color.js",
    "dompurify": "/shim/dompurify.js",
    "@matrix-org/olm/olm.js": "/shim/empty.js",
  },
})}
</script>
<script type="module" src="/app.js"></script>
</head>
<body><div id="app" class="hydrogen"></div></body>
</html>
`;

// Hydrogen's own main(): the root view model and view, as the app mounts them.
const app = `
import { Platform, createNavigation, createRouter, FeatureSet, RootViewModel } from "hydrogen-view-sdk";

const assetPaths = {
  downloadSandbox: "/assets/download-sandbox.html",
  worker: "/assets/main.js",
  olm: { wasm: "/olm/olm.wasm", legacyBundle: "/olm/olm_legacy.js", wasmBundle: "/olm/olm.js" },
  serviceWorker: "/sw.js",
};
const platform = new Platform({ container: document.getElementById("app"), assetPaths, config: {} });
const navigation = createNavigation();
platform.setNavigation(navigation);
await platform.init();
const urlRouter = createRouter({ navigation, history: platform.history });
urlRouter.attach();
const features = await FeatureSet.load(platform.settingsStorage);
const vm = new RootViewModel({ platform, navigation, urlRouter, features });
await vm.load();
platform.createAndMountRootView(vm);
`;

const types = {
  ".js": "text/javascript",
  ".css": "text/css",
  ".html": "text/html",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
};

async function body(route) {
  if (route === "/") return [page, ".html"];
  if (route === "/app.js") return [app, ".js"];
  if (route === "/shim/empty.js") return ["", ".js"];
  if (commonJS[route]) {
    const src = await readFile(path.join(modules, commonJS[route]), "utf8");
    return [`const module = { exports: {} }; const exports = module.exports;\n${src}\nexport default module.exports;\n`, ".js"];
  }
  let file = files[route];
  const under = (prefix, dir) => {
    if (!route.startsWith(prefix)) return undefined;
    const rest = path.normalize(route.slice(prefix.length));
    return rest.startsWith("..") || path.isAbsolute(rest) ? undefined : path.join(dir, rest);
  };
  file ??= under("/assets/", path.join(sdk, "asset-build", "assets"));
  file ??= under("/olm/", path.join(modules, "@matrix-org", "olm"));
  if (!file) return undefined;
  return [await readFile(file), path.extname(file)];
}

function serve() {
  const server = http.createServer(async (req, res) => {
    const route = new URL(req.url, "http://x").pathname;
    try {
      const found = await body(route);
      if (!found) {
        res.writeHead(404).end();
        return;
      }
      const [content, ext] = found;
      res.writeHead(200, { "Content-Type": types[ext] ?? "application/octet-stream", "Cache-Control": "no-store" });
      res.end(content);
    } catch (err) {
      res.writeHead(err.code === "ENOENT" ? 404 : 500).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

// The test binary holds our stdin: end with it rather than outlive it.
process.stdin.on("end", () => process.exit(2));
process.stdin.resume();

const server = await serve();
const origin = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
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

  // Sign in through Hydrogen's login view: homeserver first (Hydrogen asks
  // it for its login flows), then the password form it shows.
  const hs = tab.locator("#homeserver");
  await hs.fill(homeserver);
  await hs.press("Tab");
  await tab.locator("#username").fill(username);
  await tab.locator("#password").fill(password);
  await tab.getByRole("button", { name: "Log In" }).click();
  console.log("LOGGED IN FORM SUBMITTED");

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
for (const r of requests) console.log(`REQUEST ${r}`);
for (const p of problems) console.log(`PROBLEM ${p}`);
if (!ok) process.exit(1);
console.log("OK");
process.exit(0);

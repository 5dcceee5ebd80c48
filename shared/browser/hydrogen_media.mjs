// hydrogen_media.mjs: Hydrogen (hydrogen-view-sdk) in Debian's Chromium,
// driven by playwright-core, shows an image $USERNAME sent to the room
// $ROOM_NAME. Run by TestHydrogenShowsImage, which sends the image with
// mautrix-go before this starts.
//
// It lives beside its Go test rather than in scripts/browser, but runs there
// (testenv runs node with scripts/browser as its directory), so the npm
// packages come from that directory's node_modules. The page, Hydrogen's
// whole app, is served as scripts/browser/hydrogen.mjs serves it; that
// script runs its scenario at the top level, so the serving code is copied
// here rather than imported.
//
// Steps through Hydrogen's UI: log in with the form, open the room from the
// room list, wait for the image tile's <img> to load. Output lines the Go
// test reads: "IMAGE <json>" (the <img>'s src, natural and shown size),
// "SHOT <path>" for each screenshot written under $SHOT_DIR,
// "REQUEST <method> <path> <status>" for each request to the homeserver, and
// "OK".
import http from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const homeserver = env("HOMESERVER");
const username = env("USERNAME");
const password = env("PASSWORD");
const roomName = env("ROOM_NAME");
const imageName = env("IMAGE_NAME");
const shotDir = env("SHOT_DIR");
const executablePath = env("CHROMIUM");
// A guard against a hang, not a measure: the machine may be loaded.
const stepTimeout = 60_000;

// testenv runs this script in scripts/browser.
const here = process.cwd();
const { chromium } = await import(pathToFileURL(path.join(here, "node_modules", "playwright-core", "index.mjs")).href);
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

  await tab.goto(origin);
  const hs = tab.locator("#homeserver");
  await hs.fill(homeserver);
  await hs.press("Tab");
  await tab.locator("#username").fill(username);
  await tab.locator("#password").fill(password);
  await tab.getByRole("button", { name: "Log In" }).click();
  console.log("LOGGED IN FORM SUBMITTED");

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
for (const r of requests) console.log(`REQUEST ${r}`);
for (const p of problems) console.log(`PROBLEM ${p}`);
if (!ok) process.exit(1);
console.log("OK");
process.exit(0);

// hydrogen-app.mjs: what the Hydrogen scenarios share. hydrogen.mjs here
// and shared/browser/hydrogen_media.mjs (run with this directory as its
// working directory) import it: the page serving Hydrogen's whole app
// (hydrogen-view-sdk's RootViewModel and RootView with its theme) on
// loopback, Debian's Chromium launched through playwright-core, the login
// form's steps and the closing report.
import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

// env reads a variable the Go test must set.
export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

// A guard against a hang, not a measure: the machine may be loaded.
export const stepTimeout = 60_000;

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

// serveHydrogen serves Hydrogen's app on a loopback port; url is the page's
// origin, close stops the server.
export async function serveHydrogen() {
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
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

// launchChromium starts the Chromium at executablePath headless, without
// the background traffic that would mix with the requests the tests record.
export function launchChromium(executablePath) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// logIn signs in through Hydrogen's login view: homeserver first (Hydrogen
// asks it for its login flows), then the password form it shows.
export async function logIn(tab, { homeserver, username, password }) {
  const hs = tab.locator("#homeserver");
  await hs.fill(homeserver);
  await hs.press("Tab");
  await tab.locator("#username").fill(username);
  await tab.locator("#password").fill(password);
  await tab.getByRole("button", { name: "Log In" }).click();
  console.log("LOGGED IN FORM SUBMITTED");
}

// finish prints the recorded requests and problems, then "OK" and exit
// status 0 only when ok.
export function finish({ requests, problems, ok }) {
  for (const r of requests) console.log(`REQUEST ${r}`);
  for (const p of problems) console.log(`PROBLEM ${p}`);
  if (!ok) process.exit(1);
  console.log("OK");
  process.exit(0);
}

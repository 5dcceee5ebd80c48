#!/usr/bin/env node
// serve.mjs starts one local AWS stand-in on loopback for Cirrus's tests:
//
//   node serve.mjs fauxqs [--host 127.0.0.1] [--port 0]             SQS (JSON protocol)
//   node serve.mjs aws-ses-v2-local [--host 127.0.0.1] [--port 0]   SES v2; mail at GET /store
//
// (Named after the package, so that `pgrep -f fauxqs` finds a running one.)
//
// Why a launcher instead of the packages' own commands:
//   - fauxqs's CLI always listens on 0.0.0.0 (FAUXQS_PORT picks the port,
//     FAUXQS_HOST only changes the host written into queue URLs); here both
//     servers listen on loopback only.
//   - Port 0 lets the kernel choose a free port, so that parallel test
//     binaries never race for one; the chosen address is printed as the first
//     line on stdout, "listening http://127.0.0.1:PORT".
//   - The process exits when its stdin reaches end of file, which happens when
//     the test binary that started it dies in any way (even SIGKILL), so a
//     crashed test run leaves no server behind.
//
// Readiness: the printed line means the socket is listening; fauxqs also
// answers GET /health and aws-ses-v2-local GET /health-check.
import { createRequire } from "node:module";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
  },
});
const [which] = positionals;
const host = values.host;
const port = Number.parseInt(values.port, 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`serve.mjs: bad --port ${values.port}`);
  process.exit(2);
}

async function startSQS() {
  const { buildApp } = await import("fauxqs");
  // Request logging off: tests read stdout for the ready line only.
  const app = buildApp({ logger: false });
  const address = await app.listen({ host, port });
  return { address, close: () => app.close() };
}

async function startSES() {
  // aws-ses-v2-local is CommonJS with a default export.
  const require = createRequire(import.meta.url);
  const server = require("aws-ses-v2-local").default;
  const s = await server({ host, port });
  const a = s.address();
  const h = a.family === "IPv6" ? `[${a.address}]` : a.address;
  return { address: `http://${h}:${a.port}`, close: () => new Promise((r) => s.close(r)) };
}

const starters = { fauxqs: startSQS, "aws-ses-v2-local": startSES };
if (!starters[which]) {
  console.error("usage: node serve.mjs fauxqs|aws-ses-v2-local [--host 127.0.0.1] [--port 0]");
  process.exit(2);
}

let server;
try {
  server = await starters[which]();
} catch (err) {
  console.error(`serve.mjs: ${which} failed to start:`, err);
  process.exit(1);
}
console.log(`listening ${server.address}`);

function exit() {
  process.exit(0);
}
process.on("SIGTERM", exit);
process.on("SIGINT", exit);
process.stdin.on("end", exit);
process.stdin.on("close", exit);
process.stdin.on("error", exit);
process.stdin.resume();

#!/usr/bin/env node
// password_reset.mjs: Element's "Forgot password" through matrix-js-sdk's own
// methods, on an account the Go test made with a bound email address
// (shared/accounts/email_test.go): requestPasswordEmailToken, then
// setPassword with the m.login.email.identity stage, which is refused (401)
// until the mail's link is followed, as Element polls it; the link is
// followed as a browser does (the page's form posted), setPassword then
// succeeds, and the new password logs in (by user ID and by address)
// while the old one does not.
//
//   CIRRUS_URL=... CIRRUS_USERS=@frank:x CIRRUS_PASSWORD=... CIRRUS_EMAIL=... CIRRUS_MAIL_STORE=http://.../store node password_reset.mjs
//
// Exit status and output as in scenario.mjs (lib.mjs).
import { createClient } from "matrix-js-sdk";
import { baseUrl, describe, fail, mustEnv, pass, password, poll, say, step } from "./lib.mjs";

const userId = mustEnv("CIRRUS_USERS");
const email = mustEnv("CIRRUS_EMAIL");
const mailStore = mustEnv("CIRRUS_MAIL_STORE");
const newPassword = "a new password from the reset " + Date.now();

// mailLink waits for a mail to the address in the SES stand-in's store and
// returns the link of its validation page.
async function mailLink(address) {
  return poll(async () => {
    const store = await (await fetch(mailStore)).json();
    for (const m of store.emails ?? []) {
      const to = (m.destination?.to ?? []).map((a) => a.toLowerCase());
      if (!to.some((a) => a.includes(address.toLowerCase()))) continue;
      const link = (m.body?.text ?? "").match(/https?:\/\/\S+submit_token\S*/);
      if (link) return link[0];
    }
    return undefined;
  });
}

// confirm opens the link and presses the page's button: a POST of the
// form's fields to its action.
async function confirm(link) {
  const page = await (await fetch(link)).text();
  const action = page.match(/<form[^>]*action="([^"]*)"/);
  if (!action) fail(`the link's page has no form: ${page}`);
  const unescape = (s) => s.replaceAll("&amp;", "&").replaceAll("&#34;", '"').replaceAll("&quot;", '"').replaceAll("&#39;", "'");
  const fields = new URLSearchParams();
  for (const m of page.matchAll(/<input[^>]*name="([^"]*)"[^>]*value="([^"]*)"/g)) fields.set(unescape(m[1]), unescape(m[2]));
  const res = await fetch(new URL(unescape(action[1]), link), { method: "POST", body: fields });
  const result = await res.text();
  if (res.status !== 200 || !result.includes("confirmed")) fail(`confirming answered ${res.status}: ${result}`);
}

async function loginWith(identifier, pw) {
  const anon = createClient({ baseUrl });
  return anon.loginRequest({ type: "m.login.password", identifier, password: pw }).then((r) => r, (e) => e);
}

async function main() {
  const client = createClient({ baseUrl });
  const clientSecret = client.generateClientSecret();

  step("Forgot password: requestPasswordEmailToken");
  const { sid } = await client.requestPasswordEmailToken(email, clientSecret, 1);
  if (!sid) fail("no sid");
  // What Element's PasswordReset.setNewPassword sends: both spellings.
  const creds = { sid, client_secret: clientSecret };
  const auth = { type: "m.login.email.identity", threepid_creds: creds, threepidCreds: creds };

  step("setPassword before the link is followed: 401, as Element polls it");
  const early = await client.setPassword(auth, newPassword, true).then(() => undefined, (e) => e);
  if (early?.httpStatus !== 401 || early?.errcode !== "M_THREEPID_AUTH_FAILED") fail(`early setPassword: ${describe(early)}`);
  const flows = early.data?.flows?.map((f) => f.stages.join(","));
  if (JSON.stringify(flows) !== JSON.stringify(["m.login.email.identity"])) fail(`flows: ${JSON.stringify(flows)}`);

  step("open the mail's link and confirm");
  await confirm(await mailLink(email));

  step("setPassword again: done");
  const done = await client.setPassword(auth, newPassword, true);
  if (JSON.stringify(done) !== "{}") fail(`setPassword answered ${JSON.stringify(done)}`);

  step("log in with the new password, by user ID and by address; not with the old one");
  const byId = await loginWith({ type: "m.id.user", user: userId }, newPassword);
  if (byId.user_id !== userId || !byId.access_token) fail(`login with the new password: ${describe(byId)}`);
  const byAddress = await loginWith({ type: "m.id.thirdparty", medium: "email", address: email }, newPassword);
  if (byAddress.user_id !== userId) fail(`login by address: ${describe(byAddress)}`);
  const old = await loginWith({ type: "m.id.user", user: userId }, password);
  if (old?.httpStatus !== 403 || old?.errcode !== "M_FORBIDDEN") fail(`login with the old password: ${describe(old)}`);
  say(`  ${userId} logged in on ${byId.device_id}`);
  pass();
}

main().catch((err) => fail(describe(err)));

"use strict";

const test = require("node:test");
const assert = require("node:assert");
const { respond } = require("../../src/app");

test("healthz answers ok", () => {
  assert.deepStrictEqual(respond("GET", "/healthz"), { status: 200, type: "text/plain", body: "ok\n" });
});

test("the page has the health button", () => {
  const page = respond("GET", "/");
  assert.strictEqual(page.status, 200);
  assert.match(page.body, /<button id="check">/);
});

test("unknown paths are 404, writes 405", () => {
  assert.strictEqual(respond("GET", "/missing").status, 404);
  assert.strictEqual(respond("POST", "/healthz").status, 405);
});

// The real server on a loopback port, spoken to over HTTP.
"use strict";

const test = require("node:test");
const assert = require("node:assert");
const { createServer } = require("../../src/app");

test("healthz over http", async () => {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const base = `http://127.0.0.1:${server.address().port}`;
    const health = await fetch(`${base}/healthz`);
    assert.strictEqual(health.status, 200);
    assert.strictEqual(await health.text(), "ok\n");
    assert.strictEqual((await fetch(`${base}/missing`)).status, 404);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

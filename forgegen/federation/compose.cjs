"use strict";
// Forge's supergraph composition helper (see README.md, "Federation").
// stdin:  {"subgraphs": [{"name": "...", "url": "...", "sdl": "..."}, ...]}
// stdout: {"ok": true, "supergraph": "<SDL>"} or {"ok": false, "errors": [{"code", "message"}, ...]}
// Exit 0 whenever it answered (composed or not); 2 for unreadable input. The composition is
// @theguild/federation-composition (MIT), pinned in package-lock.json. CommonJS, so that NODE_PATH
// finds the pinned packages, which .ci/setup (or Forge on first use) installs outside the checkout.
const { composeServices, compositionHasErrors } = require("@theguild/federation-composition");
const { parse } = require("graphql");

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

function compose(subgraphs) {
  const services = [];
  const errors = [];
  for (const s of subgraphs) {
    try {
      services.push({ name: s.name, url: s.url || undefined, typeDefs: parse(s.sdl) });
    } catch (err) {
      errors.push({ code: "INVALID_GRAPHQL", message: `[${s.name}] ${err.message}` });
    }
  }
  if (errors.length) return { ok: false, errors };
  const result = composeServices(services);
  if (compositionHasErrors(result)) {
    return {
      ok: false,
      errors: result.errors.map((e) => ({
        code: (e.extensions && e.extensions.code) || "COMPOSITION_ERROR",
        message: e.message,
      })),
    };
  }
  return { ok: true, supergraph: result.supergraphSdl };
}

async function main() {
  const input = JSON.parse(await readStdin());
  if (!input || !Array.isArray(input.subgraphs)) {
    process.stderr.write('compose: stdin must be {"subgraphs": [...]}\n');
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(compose(input.subgraphs)) + "\n");
}

main().catch((err) => {
  process.stderr.write(`compose: ${(err && err.stack) || err}\n`);
  process.exit(2);
});

"use strict";
// Forge's GraphQL introspection helper (see README.md, "GraphQL code generation"), next to the
// composition helper and run with its pinned packages (graphql-js, package-lock.json here).
//   node introspect.cjs --query   prints graphql-js's standard introspection query (getIntrospectionQuery)
//   node introspect.cjs           stdin: the service's answer to it ({"data": {"__schema": …}});
//                                 stdout: {"ok": true, "sdl": "<SDL>"} or {"ok": false, "error": "…"}
// The SDL is sorted (lexicographicSortSchema: types, fields, arguments, enum values, directives):
// servers may answer introspection in any order, and some in another order on every request
// (graphql-go lists types in Go's map order), so only a sorted print is the same for the same schema.
// Exit 0 whenever it answered; 2 for unreadable input.
const { buildClientSchema, getIntrospectionQuery, lexicographicSortSchema, printSchema } = require("graphql");

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

function toSdl(answer) {
  const data = answer && (answer.data || answer);
  if (!data || !data.__schema) {
    const errors = (answer && answer.errors) || [];
    const detail = errors.map((e) => e.message || String(e)).join("; ");
    return { ok: false, error: `the answer has no data.__schema${detail ? `: ${detail}` : ""}` };
  }
  try {
    return { ok: true, sdl: printSchema(lexicographicSortSchema(buildClientSchema(data))) + "\n" };
  } catch (err) {
    return { ok: false, error: `the introspection result is not a valid schema: ${err.message}` };
  }
}

async function main() {
  if (process.argv[2] === "--query") {
    process.stdout.write(JSON.stringify({ query: getIntrospectionQuery({ descriptions: true }) }) + "\n");
    return;
  }
  let answer;
  try {
    answer = JSON.parse(await readStdin());
  } catch (err) {
    process.stderr.write(`introspect: stdin is not JSON: ${err.message}\n`);
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(toSdl(answer)) + "\n");
}

main().catch((err) => {
  process.stderr.write(`introspect: ${(err && err.stack) || err}\n`);
  process.exit(2);
});

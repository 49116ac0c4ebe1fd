// The __NAME__ service: a page with a button that asks the server for its health.
"use strict";

const http = require("node:http");

const PAGE = `<!doctype html>
<html>
<head><meta charset="utf-8"><title>__NAME__</title></head>
<body>
<h1>__NAME__</h1>
<button id="check">Check health</button>
<p id="status">unknown</p>
<script>
document.getElementById("check").addEventListener("click", async () => {
  const answer = await fetch("/healthz");
  document.getElementById("status").textContent = (await answer.text()).trim();
});
</script>
</body>
</html>
`;

// The answer to one request: { status, type, body }.
function respond(method, path) {
  if (method !== "GET") return { status: 405, type: "text/plain", body: "method not allowed\n" };
  if (path === "/healthz") return { status: 200, type: "text/plain", body: "ok\n" };
  if (path === "/") return { status: 200, type: "text/html; charset=utf-8", body: PAGE };
  return { status: 404, type: "text/plain", body: "not found\n" };
}

function createServer() {
  return http.createServer((req, res) => {
    const { status, type, body } = respond(req.method, new URL(req.url, "http://x").pathname);
    res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  });
}

module.exports = { respond, createServer };

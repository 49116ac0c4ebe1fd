// End to end in a real browser: Playwright drives Chromium ($CHROMIUM_PATH, default
// /usr/bin/chromium) against the service started by `forge e2e prepare` at $FORGE_BASE_URL.
// On failure a screenshot and a Playwright trace are kept under $FORGE_TEST_RESULTS.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { chromium } = require("playwright-core");

async function main() {
  const base = process.env.FORGE_BASE_URL;
  if (!base) throw new Error("FORGE_BASE_URL is not set: run this with `forge test web:e2e`");
  const results = process.env.FORGE_TEST_RESULTS || "test-results";
  const timeout = Number(process.env.E2E_TIMEOUT_MS || 30000);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const context = await browser.newContext();
  await context.tracing.start({ screenshots: true, snapshots: true });
  const page = await context.newPage();
  try {
    await page.goto(base);
    await page.click("#check");
    await page.waitForFunction(() => document.getElementById("status").textContent === "ok", null, { timeout });
    console.log('e2e: clicked "Check health", the page shows "ok"');
    await context.tracing.stop();
  } catch (error) {
    fs.mkdirSync(results, { recursive: true });
    await page.screenshot({ path: path.join(results, "failure.png"), fullPage: true });
    await context.tracing.stop({ path: path.join(results, "trace.zip") });
    console.error(`e2e failed: ${error.message}\nscreenshot and trace in ${results}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(`e2e: ${error.message}`);
  process.exitCode = 1;
});

// Drives Debian's chromium through the relay's page for tests/e2e/browser.rs:
//   node page.mjs URL OUT_DIR ACTION [--no-webrtc] [CHROMIUM_FLAG...]
// ACTION is `accept` (take the offer, save the download into OUT_DIR), `look` (stop at
// the offer, or at the failure), or `send:PATH` (send that file from the page: prints a
// first line `{"code": ...}` as soon as the page shows its code). `--no-webrtc` takes RTCPeerConnection away from the page,
// as in a browser without WebRTC. Prints one JSON line: the page's final state, its error
// text, the offer's names as shown, the download's name, where it was saved, and the
// download's failure (null when it completed). Every wait is bounded.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, outDir, action, ...rest] = process.argv.slice(2);
const noWebrtc = rest.includes('--no-webrtc');
const extra = rest.filter((f) => f !== '--no-webrtc');
const profile = mkdtempSync(join(tmpdir(), 'convey-chromium-'));
const flags = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ...extra,
];
const result = { seconds: null, path: null, state: null, error: null, names: [], summary: null, download: null, saved: null, failure: null, images: 0 };
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true, args: flags, acceptDownloads: true,
});
try {
  if (noWebrtc) {
    await context.addInitScript(() => { delete window.RTCPeerConnection; });
  }
  const page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => process.stderr.write(`page: ${m.text()}\n`));
  const state = () => page.evaluate(() => document.body.dataset.state ?? null);
  const waitFor = (states, timeout) => page.waitForFunction(
    (s) => s.includes(document.body.dataset.state), states, { timeout },
  );
  await page.goto(url);
  if (action.startsWith('send:')) {
    await waitFor(['ready'], 30_000);
    await page.setInputFiles('#send-files', action.slice('send:'.length));
    await waitFor(['code', 'failed'], 30_000);
    const code = await page.textContent('#send-code');
    process.stdout.write(`${JSON.stringify({ code })}\n`);
    await waitFor(['sent', 'failed'], 120_000);
  } else {
    await waitFor(['offer', 'failed', 'verified', 'unsupported'], 60_000);
  }
  result.names = await page.$$eval('#offer-names li', (lis) => lis.map((li) => li.textContent));
  result.summary = await page.textContent('#offer-summary');
  result.images = await page.$$eval('img', (i) => i.length);
  if (action === 'accept' && (await state()) === 'offer') {
    const downloading = page.waitForEvent('download', { timeout: 60_000 });
    const clicked = Date.now();
    await page.click('#accept');
    const download = await downloading;
    result.download = download.suggestedFilename();
    result.failure = await download.failure();
    if (result.failure === null) {
      result.saved = join(outDir, result.download);
      await download.saveAs(result.saved);
    }
    await waitFor(['failed', 'verified'], 60_000);
    result.seconds = (Date.now() - clicked) / 1000;
  }
  result.state = await state();
  result.path = await page.evaluate(() => document.body.dataset.path ?? null);
  const error = await page.$('#error:not([hidden])');
  result.error = error ? await error.textContent() : null;
} catch (e) {
  result.error = `driver: ${e.message}`;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify(result)}\n`);

// Drives Debian's chromium through the relay's page for tests/e2e/browser.rs:
//   node page.mjs URL OUT_DIR ACTION [--no-webrtc] [--trust-cert=PEM] [--relay-token=T] [CHROMIUM_FLAG...]
// ACTION is `accept` (take the offer, save the download into OUT_DIR), `look` (stop at
// the offer, or at the failure), `send:PATH` (send that file from the page, picked in the
// file input), `drop:PATH` (the same, dropped on the page's drop box) or `dropdir:PATH` (a
// folder dragged onto the drop box by chromium's own drag, through DevTools'
// Input.dispatchDragEvent, as from a file manager; the page's answer is the result). For both sends it
// prints a first line `{"code", "qr", "qrShown"}` as soon as the page shows its code: the QR
// code's SVG and whether the image loaded. `--no-webrtc` takes RTCPeerConnection away from
// the page, as in a browser without WebRTC. `--trust-cert=PEM` makes chromium trust that
// certificate (added to the NSS store of a fresh HOME, as a user would add their own CA).
// `--relay-token=T`: a sending page that asks for a private relay's access token is given T
// (typed into its form, as a user would); without it the report shows the page asking.
// Prints one JSON line: the page's final state, its error text, its note where it cannot
// receive, the offer's names as shown, the download's name, where it was saved, and the
// download's failure (null when it completed). Every wait is bounded.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { tmpdir } from 'node:os';
import { chromium } from 'playwright-core';

const [url, outDir, action, ...rest] = process.argv.slice(2);
const noWebrtc = rest.includes('--no-webrtc');
const trust = rest.find((f) => f.startsWith('--trust-cert='))?.slice('--trust-cert='.length);
const relayToken = rest.find((f) => f.startsWith('--relay-token='))?.slice('--relay-token='.length);
const extra = rest.filter((f) => f !== '--no-webrtc' && !f.startsWith('--trust-cert=') && !f.startsWith('--relay-token='));
const profile = mkdtempSync(join(tmpdir(), 'convey-chromium-'));
// Chromium on Linux reads the certificates its user trusts from $HOME/.pki/nssdb.
const env = { ...process.env, HOME: profile };
if (trust) {
  const db = join(profile, '.pki', 'nssdb');
  mkdirSync(db, { recursive: true });
  execFileSync('certutil', ['-d', `sql:${db}`, '-N', '--empty-password']);
  execFileSync('certutil', ['-d', `sql:${db}`, '-A', '-n', 'convey-test', '-t', 'P,,', '-i', trust]);
}
const flags = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ...extra,
];
const result = { seconds: null, path: null, fallback: null, rtc_bytes: 0, pushes: 0, state: null, error: null, note: null, names: [], summary: null, download: null, saved: null, failure: null, images: 0 };
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium', headless: true, args: flags, acceptDownloads: true, env,
});
let page = null;
try {
  if (noWebrtc) {
    await context.addInitScript(() => { delete window.RTCPeerConnection; });
  }
  page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => process.stderr.write(`page: ${m.text()}\n`));
  const state = () => page.evaluate(() => document.body.dataset.state ?? null);
  const waitFor = (states, timeout) => page.waitForFunction(
    (s) => s.includes(document.body.dataset.state), states, { timeout },
  );
  await page.goto(url);
  if (action.startsWith('dropdir:')) {
    await waitFor(['ready'], 30_000);
    const box = await page.$eval('#drop-zone', (z) => {
      const r = z.getBoundingClientRect();
      return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
    });
    const cdp = await context.newCDPSession(page);
    const data = { items: [], files: [action.slice('dropdir:'.length)], dragOperationsMask: 1 };
    for (const type of ['dragEnter', 'dragOver', 'drop']) {
      await cdp.send('Input.dispatchDragEvent', { type, x: box.x, y: box.y, data });
    }
    await waitFor(['failed', 'code'], 10_000);
  } else if (action.startsWith('send:') || action.startsWith('drop:')) {
    await waitFor(['ready'], 30_000);
    const file = action.slice('send:'.length);
    if (action.startsWith('send:')) {
      await page.setInputFiles('#send-files', file);
    } else {
      // What a drag from the desktop delivers: a drop event whose DataTransfer holds the file.
      const bytes = readFileSync(file).toString('base64');
      await page.evaluate(([name, b64]) => {
        const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([data], name));
        const zone = document.getElementById('drop-zone');
        zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
        zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
      }, [basename(file), bytes]);
    }
    await waitFor(['code', 'failed', 'token'], 30_000);
    if ((await state()) === 'token' && relayToken) {
      await page.fill('#relay-token', relayToken);
      await page.click('#token-form button');
      // A code, a failure, or the form shown again (the token was refused).
      await page.waitForFunction(() => ['code', 'failed'].includes(document.body.dataset.state)
        || document.body.dataset.tokenAsked !== '1', null, { timeout: 30_000 });
    }
    if ((await state()) === 'token') {
      // Still asking for the token: no code to show.
      process.stdout.write(`${JSON.stringify({ code: null, token: true })}\n`);
    } else {
      const code = await page.textContent('#send-code');
      await page.waitForFunction(() => document.getElementById('send-qr').complete, null, { timeout: 10_000 });
      const qr = await page.$eval('#send-qr', (img) => ({
        svg: img.src.startsWith('data:image/svg+xml;base64,') ? atob(img.src.split(',')[1]) : null,
        shown: img.naturalWidth > 0 && !img.hidden,
      }));
      process.stdout.write(`${JSON.stringify({ code, qr: qr.svg, qrShown: qr.shown })}\n`);
      await waitFor(['sent', 'failed'], 120_000);
    }
  } else {
    await waitFor(['offer', 'failed', 'verified', 'unsupported'], 60_000);
  }
  result.names = await page.$$eval('#offer-names li', (lis) => lis.map((li) => li.textContent));
  result.summary = await page.textContent('#offer-summary');
  // Images other than the page's own QR code (a name shown as markup would add one).
  result.images = await page.$$eval('img:not(#send-qr)', (i) => i.length);
  if (action === 'accept' && (await state()) === 'offer') {
    const downloading = page.waitForEvent('download', { timeout: 60_000 });
    const clicked = Date.now();
    await page.click('#accept');
    const download = await downloading;
    result.download = download.suggestedFilename();
    // Bounded: a stalled download leaves the page's own state and status in the report.
    // The timer is cleared, so it never keeps node alive after the report.
    let limit;
    result.failure = await Promise.race([
      download.failure(),
      new Promise((_, reject) => { limit = setTimeout(() => reject(new Error(
        'the download did not finish within 90 s')), 90_000); }),
    ]).finally(() => clearTimeout(limit));
    if (result.failure === null) {
      result.saved = join(outDir, result.download);
      await download.saveAs(result.saved);
    }
    await waitFor(['failed', 'verified'], 60_000);
    result.seconds = (Date.now() - clicked) / 1000;
  }
  result.state = await state();
  result.path = await page.evaluate(() => document.body.dataset.path ?? null);
  // Where WebRTC failed part way: why, and how far it had come.
  result.fallback = await page.evaluate(() => document.body.dataset.fallback ?? null);
  result.rtc_bytes = await page.evaluate(() => Number(document.body.dataset.rtcBytes ?? 0));
  // A sending page: how many times the receiver opened the push (more than once after a cut).
  result.pushes = await page.evaluate(() => Number(document.body.dataset.pushes ?? 0));
  const error = await page.$('#error:not([hidden])');
  result.error = error ? await error.textContent() : null;
  const note = await page.$('#unsupported:not([hidden])');
  result.note = note ? await note.textContent() : null;
} catch (e) {
  result.error = `driver: ${e.message}`;
  if (page) {
    result.state = await page.evaluate(() => document.body.dataset.state ?? null).catch(() => null);
    result.note = await page.textContent('#status').catch(() => null);
    result.progress = await page.textContent('#progress-text').catch(() => null);
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify(result)}\n`);

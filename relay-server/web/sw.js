// The page's Service Worker: it answers the page's download URL with a stream the page
// fills as bytes arrive and are decrypted, so the browser saves a file of any size as an
// ordinary download. Nothing is cached; every other request goes to the relay.
const downloads = new Map();

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

self.addEventListener('message', (e) => {
  if (e.data?.type !== 'download' || !e.ports[0]) return;
  const port = e.ports[0];
  const { id, name, bytes } = e.data;
  let control;
  const stream = new ReadableStream({
    start(c) { control = c; },
  }, { highWaterMark: 64 });
  port.onmessage = (m) => {
    const d = m.data;
    if (d.chunk) control.enqueue(d.chunk);
    else if (d.end) { control.close(); downloads.delete(id); port.close(); }
    else if (d.error) { control.error(new Error(d.error)); downloads.delete(id); port.close(); }
  };
  downloads.set(id, { name, bytes, stream });
  port.postMessage('ready');
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  const m = url.pathname.match(/\/download\/([0-9a-f-]+)$/);
  if (!m || url.origin !== location.origin) return;
  const d = downloads.get(m[1]);
  if (!d) {
    e.respondWith(new Response('no such download\n', { status: 404 }));
    return;
  }
  const headers = {
    'Content-Type': 'application/octet-stream',
    'Content-Disposition': `attachment; filename*=UTF-8''${encodeURIComponent(d.name)}`,
    'X-Content-Type-Options': 'nosniff',
  };
  if (d.bytes !== null && d.bytes !== undefined) headers['Content-Length'] = String(d.bytes);
  e.respondWith(new Response(d.stream, { headers }));
});

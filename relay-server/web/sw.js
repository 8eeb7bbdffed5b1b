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
  // Bytes handed to the stream, and those the browser has taken from it (written to the
  // download): the page acknowledges frames to the sender by the latter, so what waits here
  // stays bounded however slow the disk.
  const highWaterMark = 4 << 20;
  let enqueued = 0;
  let reported = 0;
  const report = () => {
    const consumed = enqueued - Math.max(0, highWaterMark - control.desiredSize);
    if (consumed > reported) {
      reported = consumed;
      port.postMessage({ consumed });
    }
  };
  const stream = new ReadableStream({
    start(c) { control = c; },
    pull() { report(); },
  }, new ByteLengthQueuingStrategy({ highWaterMark }));
  port.onmessage = (m) => {
    const d = m.data;
    if (d.chunk) { control.enqueue(d.chunk); enqueued += d.chunk.byteLength; report(); }
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

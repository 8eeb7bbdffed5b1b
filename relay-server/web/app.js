// The relay's page: receive what `convey send` offers, or send to `convey receive`. The WebAssembly module (convey-web,
// built from convey-shared) runs the key exchange, checks the offer, decrypts and verifies;
// this script only moves bytes: the rendezvous and tunnel WebSockets, and the download,
// streamed through the Service Worker (sw.js) so no file is held in memory.
import init, { Receiver, Sender, qr_svg } from './pkg/convey_web.js';

const $ = (id) => document.getElementById(id);
const base = location.pathname.replace(/[^/]*$/, '').replace(/\/$/, '');
const wsBase = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base;

function setState(state) { document.body.dataset.state = state; }
function status(text) { $('status').textContent = text; }
function showError(text) {
  $('error').hidden = false;
  $('error').textContent = text;
  setState('failed');
}

function size(bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  let v = bytes;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

// Downloads are answered by the Service Worker; without one (no secure context), say what
// to do instead of failing later.
async function serviceWorker() {
  if (!window.isSecureContext || !('serviceWorker' in navigator)) return null;
  await navigator.serviceWorker.register(`${base}/sw.js`, { scope: `${base}/` });
  await navigator.serviceWorker.ready;
  if (!navigator.serviceWorker.controller) {
    await new Promise((resolve) => navigator.serviceWorker.addEventListener('controllerchange', resolve, { once: true }));
  }
  return navigator.serviceWorker.controller;
}

function unsupported() {
  const code = $('code').value.trim() || 'CODE';
  $('unsupported').hidden = false;
  $('unsupported').textContent =
    `This page can only save files on a secure origin (https://, or http://localhost): ` +
    `this browser gives it no Service Worker here. Receive with the command line instead: ` +
    `convey receive --relay ${location.host} ${code}`;
  setState('unsupported');
}

class Download {
  constructor(worker, name, bytes, archive) {
    this.id = crypto.randomUUID();
    const channel = new MessageChannel();
    this.port = channel.port1;
    worker.postMessage({ type: 'download', id: this.id, name, bytes: archive ? null : bytes }, [channel.port2]);
    // Bytes the browser has taken from the download's stream, as the Service Worker reports.
    this.onconsumed = () => {};
    this.ready = new Promise((resolve) => {
      this.port.onmessage = (e) => {
        if (e.data === 'ready') resolve();
        else if (typeof e.data?.consumed === 'number') this.onconsumed(e.data.consumed);
      };
    });
  }
  start() {
    const frame = document.createElement('iframe');
    frame.hidden = true;
    frame.src = `${base}/download/${this.id}`;
    document.body.append(frame);
  }
  write(bytes) { this.port.postMessage({ chunk: bytes }, [bytes.buffer]); }
  end() { this.port.postMessage({ end: true }); }
  fail(message) { this.port.postMessage({ error: message }); }
}

// The page's WebRTC answer to the sender's offer: one description, sent once every candidate is
// gathered (no trickling: it travels inside the sealed channel). The sender's data channels
// arrive on `channels`.
async function rtcAnswer(offer) {
  const iceServers = offer.stun_port ? [{ urls: `stun:${location.hostname}:${offer.stun_port}` }] : [];
  const pc = new RTCPeerConnection({ iceServers });
  const channels = [];
  let arrived = () => {};
  pc.ondatachannel = (e) => { channels.push(e.channel); arrived(); };
  // Offer and answer travel as the JSON of a session description, as the CLI sends them.
  const remote = JSON.parse(offer.rtc);
  if (remote?.type !== 'offer' || typeof remote.sdp !== 'string') throw new Error('not a WebRTC offer');
  await pc.setRemoteDescription({ type: 'offer', sdp: remote.sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    setTimeout(resolve, 3000);
  });
  // The first of the sender's channels to open, or null after `ms`.
  const open = (ms) => new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), ms);
    const look = () => {
      for (const c of channels) {
        if (c.readyState === 'open') { clearTimeout(timer); resolve(c); return; }
        c.onopen = look;
      }
    };
    arrived = look;
    look();
  });
  return { pc, sdp: JSON.stringify({ type: 'answer', sdp: pc.localDescription.sdp }), open };
}

async function receive(code, worker) {
  let rx;
  try {
    rx = new Receiver(code, Date.now() / 1000);
  } catch (e) {
    showError(String(e.message || e));
    return;
  }
  $('code-form').hidden = true;
  $('send-box').hidden = true;
  status('Connecting to the relay…');
  const ws = new WebSocket(`${wsBase}/v1/rendezvous`, 'convey-v1');
  let offer = null;
  let download = null;
  let tunnel = null;
  let rtc = null;
  let finished = false;
  let waitLimit;

  const apply = (json) => {
    const actions = JSON.parse(json);
    for (const text of actions.relay) {
      if (ws.readyState === WebSocket.OPEN) ws.send(text);
    }
    if (actions.event) handle(actions.event);
  };

  const handle = (event) => {
    switch (event.type) {
      case 'waiting':
        setState('waiting');
        status('No sender is on this code yet: waiting for it…');
        waitLimit = setTimeout(() => handle({ type: 'failed', message: 'no sender appeared on this code within two minutes; check the code with the sender' }), 120_000);
        break;
      case 'connected':
        clearTimeout(waitLimit);
        setState('connected');
        status('Exchanging keys with the sender…');
        break;
      case 'offer': {
        offer = event;
        setState('offer');
        status('');
        const more = event.more ? ` (and ${event.more} more)` : '';
        $('offer-summary').textContent =
          `${event.files} file${event.files === 1 ? '' : 's'}, ${size(event.bytes)}${more}:`;
        $('offer-names').replaceChildren(...event.names.map((n) => {
          const li = document.createElement('li');
          li.textContent = n;
          return li;
        }));
        $('offer-download').textContent = event.download;
        $('offer').hidden = false;
        break;
      }
      case 'text':
        finished = true;
        $('text-body').textContent = event.text;
        $('text').hidden = false;
        setState('verified');
        status('Received a text.');
        break;
      case 'tunnel':
        openPush(event.path);
        break;
      case 'verified':
        finished = true;
        download?.end();
        rtc?.pc.close();
        $('progress').value = 1;
        setState('verified');
        status(`Done: ${size(offer.bytes)} received and verified.`);
        break;
      case 'failed':
        finished = true;
        clearTimeout(waitLimit);
        if (ws.readyState === WebSocket.OPEN) ws.close();
        download?.fail(event.message);
        tunnel?.close();
        rtc?.pc.close();
        showError(event.message);
        status('');
        break;
      default:
        break;
    }
  };

  // How long a WebRTC push may bring nothing before the page takes the tunnel instead.
  const STALL_MS = 8000;
  // What arrived on the push: hand it on, show it, and check once it is all in.
  let started = 0;
  let pathName = '';
  // Acknowledgements (to a sender that takes them): the frames whose bytes the browser has
  // taken from the download, found from [frames done, bytes handed on] marks.
  let ackOut = null;
  let written = 0;
  let acked = 0;
  const marks = [];
  const consumed = (bytes) => {
    let frames = acked;
    while (marks.length && marks[0][1] <= bytes) frames = marks.shift()[0];
    if (frames > acked && ackOut) {
      acked = frames;
      try { ackOut(Receiver.ack(frames)); } catch (e) { /* the path closed: its onclose reports it */ }
    }
  };
  const arrived = (take) => {
    if (finished) return;
    let out;
    try {
      out = take();
    } catch (err) {
      apply(typeof err === 'string' ? err : JSON.stringify({ relay: [], event: { type: 'failed', message: String(err) } }));
      return;
    }
    if (out.length) {
      written += out.length;
      download.write(out);
    }
    const frames = rx.frames_done();
    if (frames > (marks.length ? marks[marks.length - 1][0] : acked)) marks.push([frames, written]);
    const got = rx.received();
    const seconds = (performance.now() - started) / 1000;
    $('progress').value = offer.bytes ? got / offer.bytes : 1;
    $('progress-text').textContent =
      `${size(got)} of ${size(offer.bytes)} · ${size(got / Math.max(seconds, 0.001))}/s · path: ${pathName}`;
    if (rx.push_ended()) {
      tunnel?.close();
      status('Checking the files…');
      apply(rx.check());
    }
  };
  const cut = (what) => () => {
    if (!finished && !rx.push_ended()) {
      handle({ type: 'failed', message: `${what} closed before everything arrived; ask the sender to send again` });
    }
  };

  const viaTunnel = (path) => {
    pathName = 'relay tunnel';
    document.body.dataset.path = 'tunnel';
    tunnel = new WebSocket(`${wsBase}${path}`);
    tunnel.binaryType = 'arraybuffer';
    tunnel.onopen = () => {
      if (rx.acks()) ackOut = (bytes) => tunnel.send(bytes);
      tunnel.send(rx.push_opening());
    };
    tunnel.onmessage = (e) => arrived(() => rx.tunnel_message(new Uint8Array(e.data)));
    tunnel.onclose = cut('the tunnel through the relay');
  };

  const openPush = async (path) => {
    $('offer').hidden = true;
    $('progress-box').hidden = false;
    setState('receiving');
    download = new Download(worker, offer.download, offer.bytes, offer.archive);
    download.onconsumed = consumed;
    await download.ready;
    download.start();
    const channel = rtc ? await rtc.open(8000) : null;
    started = performance.now();
    if (!channel) {
      status('Receiving through the relay’s tunnel…');
      viaTunnel(path);
      return;
    }
    pathName = 'WebRTC';
    document.body.dataset.path = 'webrtc';
    status('Receiving straight from the sender (WebRTC)…');
    // A data channel that closes part way, or stalls (nothing for STALL_MS while the
    // download has taken all that came, so the wait is not the download's), hands the push
    // on to the relay's tunnel, which goes on after the frames already handed on.
    let last = performance.now();
    let watchdog = null;
    const leave = (why) => {
      clearInterval(watchdog);
      if (finished || rx.push_ended()) return;
      channel.onmessage = null;
      channel.onclose = null;
      ackOut = null;
      document.body.dataset.fallback = why;
      document.body.dataset.rtcBytes = String(rx.received());
      try { channel.close(); } catch (e) { /* already closed */ }
      status(`The WebRTC connection ${why}: receiving on through the relay’s tunnel…`);
      viaTunnel(path);
    };
    channel.binaryType = 'arraybuffer';
    channel.onmessage = (e) => {
      last = performance.now();
      arrived(() => rx.channel_message(new Uint8Array(e.data)));
    };
    channel.onclose = () => leave('closed');
    watchdog = setInterval(() => {
      if (finished || rx.push_ended()) clearInterval(watchdog);
      else if (!marks.length && performance.now() - last > STALL_MS) leave('stalled');
    }, 1000);
    if (rx.acks()) ackOut = (bytes) => channel.send(bytes);
    channel.send(rx.push_opening());
  };

  ws.onmessage = (e) => { if (typeof e.data === 'string') apply(rx.relay_text(e.data)); };
  ws.onclose = () => {
    if (!finished) handle({ type: 'failed', message: 'the connection to the relay closed; check that the relay is up and try again' });
  };
  ws.onerror = () => {};
  $('accept').onclick = async () => {
    $('accept').disabled = true;
    if (offer.rtc && window.RTCPeerConnection) {
      try {
        rtc = await rtcAnswer(offer);
      } catch (e) {
        rtc = null;
      }
    }
    apply(rx.accept(rtc?.sdp));
  };
  $('decline').onclick = () => { $('offer').hidden = true; apply(rx.refuse()); };
}

// The page's WebRTC offer, as a sender: a few data channels (the receiver takes one per
// connection it opens, a new one if it opens the push again), the description sent once every
// candidate is gathered (it travels inside the sealed channel). `message(conn, bytes)` is
// called with each message that arrives on a channel, `closed(conn)` when one closes.
const OFFERED_CHANNELS = 4;
async function rtcOffer(stunPort, message, closed) {
  const iceServers = stunPort ? [{ urls: `stun:${location.hostname}:${stunPort}` }] : [];
  const pc = new RTCPeerConnection({ iceServers });
  for (let i = 0; i < OFFERED_CHANNELS; i += 1) {
    const channel = pc.createDataChannel(`convey-${i}`);
    const conn = channelOut(channel);
    channel.binaryType = 'arraybuffer';
    channel.onmessage = (e) => message(conn, new Uint8Array(e.data));
    channel.onclose = () => closed(conn);
  }
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    setTimeout(resolve, 3000);
  });
  return { pc, sdp: JSON.stringify({ type: 'offer', sdp: pc.localDescription.sdp }) };
}

// What the push is written on: a data channel or the tunnel, in messages of at most `max`
// bytes, with what the browser holds unsent (to pace on) and whether it is still open.
function channelOut(channel) {
  return {
    name: 'WebRTC', path: 'webrtc', max: 64 << 10,
    send: (b) => channel.send(b), buffered: () => channel.bufferedAmount, open: () => channel.readyState === 'open',
  };
}
function tunnelOut(ws) {
  return {
    name: 'relay tunnel', path: 'tunnel', max: Infinity,
    send: (b) => ws.send(b), buffered: () => ws.bufferedAmount, open: () => ws.readyState === WebSocket.OPEN,
  };
}

// Send the picked files: the module seals each frame as the page reads it from the files
// (no pass over them first) and writes it on the path the receiver opened (a WebRTC data
// channel the page offered, else the relay's tunnel), pacing on the browser's send buffer so
// memory stays flat.
// A private relay's access token, given on this page (kept for this tab only), as the
// WebSocket sub-protocol the relay takes it in: a browser cannot set `Authorization`.
const TOKEN_KEY = 'convey-relay-token';
function tokenProtocol() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  return `convey-token.${Array.from(new TextEncoder().encode(token), (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

async function send(files) {
  let tx;
  try {
    tx = new Sender(JSON.stringify(files.map((f) => f.name)), JSON.stringify(files.map((f) => f.size)));
  } catch (e) {
    showError(String(e.message || e));
    return;
  }
  $('code-form').hidden = true;
  $('send-files').disabled = true;
  status('Connecting to the relay…');
  const total = files.reduce((n, f) => n + f.size, 0);
  const token = tokenProtocol();
  const ws = new WebSocket(`${wsBase}/v1/rendezvous`, token ? ['convey-v1', token] : 'convey-v1');
  let tunnel = null;
  let tunnelPath = null;
  // Listening ends opened since the receiver last sent an opening (bounded).
  let listens = 0;
  let rtc = null;
  // The connection the receiver spoke on last, and the one the push goes out on.
  let opener = null;
  let out = null;
  // Each opening starts a push again; an older push loop stops.
  let pushGen = 0;
  let reopenLimit = null;
  let finished = false;
  const apply = (json) => {
    const actions = JSON.parse(json);
    for (const text of actions.relay) {
      if (ws.readyState === WebSocket.OPEN) ws.send(text);
    }
    if (actions.event) handle(actions.event);
  };
  // The bytes [start, end) of the files laid end to end.
  const read = async (start, end) => {
    const parts = [];
    let at = 0;
    for (const f of files) {
      const from = Math.max(start, at);
      const to = Math.min(end, at + f.size);
      if (from < to) parts.push(f.slice(from - at, to - at));
      at += f.size;
    }
    return new Uint8Array(await new Blob(parts).arrayBuffer());
  };
  // Bytes from a connection (a data channel or a tunnel): a connection other than the last
  // one that spoke brings a new opening (the receiver opened the push again); after its
  // opening a receiver says nothing until it closes.
  const from = (conn, feed) => {
    if (finished || (conn === opener && out === conn)) return;
    if (conn !== opener) {
      tx.new_connection();
      opener = conn;
    }
    const actions = feed();
    if (JSON.parse(actions).event?.type === 'push') {
      out = conn;
      listens = 0;
      clearTimeout(reopenLimit);
    }
    apply(actions);
  };
  // The push's connection closed before the end: the receiver opens it again over whichever
  // path works (it waits 1 s, then longer); wait for that, bounded.
  const closed = (conn) => {
    if (finished || conn !== out) return;
    status('The connection to the receiver closed: waiting for it to connect again…');
    clearTimeout(reopenLimit);
    reopenLimit = setTimeout(() => {
      if (!finished && out === conn) handle({ type: 'failed', message: 'the connection to the receiver closed and it did not connect again; send again' });
    }, 60_000);
  };
  // The tunnel's listening end, kept open (bounded) for the receiver's next connection.
  const listen = () => {
    const ws = new WebSocket(`${wsBase}${tunnelPath}`, token ? ['convey-tunnel', token] : []);
    ws.binaryType = 'arraybuffer';
    const conn = tunnelOut(ws);
    tunnel = ws;
    listens += 1;
    ws.onmessage = (e) => from(conn, () => tx.tunnel_message(new Uint8Array(e.data)));
    ws.onclose = () => {
      closed(conn);
      if (!finished && listens < 10) setTimeout(() => { if (!finished) listen(); }, 500);
    };
  };
  const push = async (frames) => {
    const gen = ++pushGen;
    const to = out;
    setState('sending');
    $('progress-box').hidden = false;
    document.body.dataset.path = to.path;
    document.body.dataset.pushes = String(gen);
    status(to.path === 'webrtc' ? 'Sending straight to the receiver (WebRTC)…' : 'Sending through the relay’s tunnel…');
    const started = performance.now();
    const step = Sender.frame_plain();
    const write = (bytes) => {
      for (let at = 0; at < bytes.length; at += to.max) to.send(bytes.subarray(at, Math.min(bytes.length, at + to.max)));
    };
    const current = () => !finished && gen === pushGen;
    let sent = 0;
    for (let k = 0; k < frames; k += 1) {
      if (!current()) return;
      if (tx.skip(k)) continue;
      const plain = await read(k * step, k * step + tx.frame_len(k));
      if (!current()) return;
      const sealed = tx.frame(k, plain);
      while (to.buffered() > (8 << 20)) {
        if (!current() || !to.open()) return;
        await new Promise((r) => setTimeout(r, 10));
      }
      if (!to.open()) return;
      if (sealed.length) write(sealed);
      sent += plain.length;
      // How far through the files (a push opened again skips what the receiver holds).
      const at = Math.min(total, (k + 1) * step);
      const seconds = (performance.now() - started) / 1000;
      $('progress').value = total ? at / total : 1;
      $('progress-text').textContent =
        `${size(at)} of ${size(total)} · ${size(sent / Math.max(seconds, 0.001))}/s · path: ${to.name}`;
    }
    write(tx.end_item());
    status('Waiting for the receiver to check the files…');
    apply(tx.prepared());
  };
  const handle = (event) => {
    switch (event.type) {
      case 'code': {
        setState('code');
        if (window.RTCPeerConnection) {
          // Made while the code is read out; the offer to the receiver waits for it.
          tx.rtc_coming();
          rtcOffer(event.stun_port, (conn, bytes) => from(conn, () => tx.channel_message(bytes)), closed)
            .then((made) => { rtc = made; apply(tx.rtc_offer(made.sdp)); })
            .catch(() => apply(tx.rtc_offer(undefined)));
        }
        $('send-code').textContent = event.code;
        $('send-command').textContent = `convey receive --relay ${location.origin}${base} ${event.code}`;
        try {
          // The link a phone opens: this page, the code in the fragment (never sent to a server).
          const svg = qr_svg(`${location.origin}${base}/#${event.code}`);
          $('send-qr').src = `data:image/svg+xml;base64,${btoa(svg)}`;
        } catch (e) {
          $('send-qr').hidden = true;
        }
        $('send-code-box').hidden = false;
        status('Waiting for the receiver…');
        break;
      }
      case 'tunnel':
        status('The receiver accepted; connecting…');
        if (rtc && event.rtc) {
          try {
            const answer = JSON.parse(event.rtc);
            if (answer?.type === 'answer' && typeof answer.sdp === 'string') {
              rtc.pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp }).catch(() => {});
            }
          } catch (e) { /* no WebRTC: the receiver takes the tunnel */ }
        }
        // The tunnel's listening end is open either way: the receiver takes it when no data
        // channel opens.
        tunnelPath = event.path;
        listen();
        break;
      case 'push':
        push(event.frames).catch((e) => handle({ type: 'failed', message: `reading the files failed: ${e.message || e}` }));
        break;
      case 'private': {
        // Ask for the token, then send the same files again.
        finished = true;
        if (ws.readyState === WebSocket.OPEN) ws.close();
        sessionStorage.removeItem(TOKEN_KEY);
        setState('token');
        document.body.dataset.tokenAsked = String(Number(document.body.dataset.tokenAsked ?? 0) + 1);
        status(token ? 'The relay did not accept that access token.' : '');
        $('token-form').hidden = false;
        $('relay-token').focus();
        $('token-form').onsubmit = (e) => {
          e.preventDefault();
          sessionStorage.setItem(TOKEN_KEY, $('relay-token').value);
          $('relay-token').value = '';
          $('token-form').hidden = true;
          setState('connecting');
          send(files);
        };
        break;
      }
      case 'sent':
        finished = true;
        clearTimeout(reopenLimit);
        tunnel?.close();
        rtc?.pc.close();
        $('progress').value = 1;
        setState('sent');
        status(`Done: ${size(total)} sent, and the receiver verified it.`);
        break;
      case 'failed':
        finished = true;
        clearTimeout(reopenLimit);
        tunnel?.close();
        rtc?.pc.close();
        if (ws.readyState === WebSocket.OPEN) ws.close();
        showError(event.message);
        status('');
        break;
      default:
        break;
    }
  };
  ws.onmessage = (e) => { if (typeof e.data === 'string') apply(tx.relay_text(e.data)); };
  ws.onclose = () => {
    if (!finished) handle({ type: 'failed', message: 'the connection to the relay closed; check that the relay is up and try again' });
  };
}

async function main() {
  await init();
  const fromLink = decodeURIComponent(location.hash.slice(1));
  // The code must not stay in the address bar or the history.
  if (fromLink) history.replaceState(null, '', location.pathname);
  let worker = null;
  try {
    worker = await serviceWorker();
  } catch (e) {
    worker = null;
  }
  setState('ready');
  const go = (code) => {
    if (!worker) {
      unsupported();
      return;
    }
    receive(code, worker);
  };
  $('code-form').onsubmit = (e) => { e.preventDefault(); go($('code').value); };
  let sending = false;
  const sendOnce = (files) => {
    if (sending || !files.length) return;
    sending = true;
    send(files);
  };
  $('send-files').onchange = () => sendOnce([...$('send-files').files]);
  // Files dropped on the box are sent as if picked; a dropped folder has no bytes of its own
  // (the browser gives it as an empty entry), so it is refused with a message.
  const zone = $('drop-zone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    const items = [...(e.dataTransfer?.items ?? [])];
    if (items.some((i) => i.webkitGetAsEntry?.()?.isDirectory)) {
      showError('this page sends files, not folders: drop the files themselves, or send the folder with convey send');
      return;
    }
    sendOnce([...(e.dataTransfer?.files ?? [])]);
  });
  if (fromLink) {
    $('code').value = fromLink;
    go(fromLink);
  }
}

main().catch((e) => showError(`this page could not start: ${e.message || e}`));

// Attachments end to end, through a real bridge in front of a real daemon: the
// ChatClient uploads in Node (hash, start_upload, one PUT, resume after a cut), the other
// participant's socket receives the message with the attachment and downloads the same
// bytes; and every refusal the brief names: an executable renamed .pdf, a body longer than
// the ticket, a non-participant, a used ticket, the hour's upload limit, a file too large.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { ChatClient, UploadError } from '../dist/client/index.js';
import { next, socket, startBridge, startDaemon } from './harness.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const MiB = 1024 * 1024;
/** Every test: bounded in time. */
const options = { timeout: 120_000 };

let daemon;
let bridge;

before(async () => {
  daemon = await startDaemon();
  bridge = await startBridge(daemon);
});

after(async () => {
  await bridge?.stop();
  await daemon?.stop();
});

const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');
/** A PDF as far as the server can tell: the magic bytes, then `size` random bytes. */
const pdfLike = (size) => Buffer.concat([Buffer.from('%PDF-1.7\n'), crypto.randomBytes(size)]);
/** The start of an ELF executable, then zeros. */
const elf = () => Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.alloc(4_000)]);
/** A real PNG (the app's icon, 192×192). */
const png = () => readFileSync(join(root, 'public/icon-192.png'));

/** A ChatClient signed in as `user` at `url` (default: the bridge). */
async function client(user, role = 'advocate', url = bridge.url, opts = {}) {
  const c = new ChatClient(url, { transports: ['websocket'], ...opts });
  await c.connect(daemon.token(user, role));
  return c;
}

/** A raw socket signed in as `user`. */
async function rawSocket(user, role = 'client') {
  const s = socket(bridge.url, { token: daemon.token(user, role) });
  await next(s, 'authenticated');
  return s;
}

/** The body of a GET as bytes, with the response. */
async function get(url, headers = {}) {
  const res = await fetch(url, { headers });
  return { res, bytes: Buffer.from(await res.arrayBuffer()) };
}

describe('attachments through the bridge', () => {
  test('a PDF: uploaded by the ChatClient, received with its attachment, downloaded byte for byte; the ticket is single use', options, async () => {
    const alice = await client('ada');
    const bob = await rawSocket('bert');
    try {
      const conv = await alice.createConversation({ type: 'group', participants: ['bert'], title: 'Discovery' });
      const file = pdfLike(200_000);
      const progress = [];
      const received = next(bob, 'receive_message', (m) => m.conversationId === conv._id && !m.event);
      const ack = await alice.sendFile(conv._id, file, { name: 'Exhibit A.pdf', text: 'The exhibit', onProgress: (sent, total) => progress.push([sent, total]) });
      assert.match(ack._id, /^[0-9a-f]{32}$/);
      assert.equal(ack.seq, 1);
      const attachment = { fileId: ack.attachment.fileId, name: 'Exhibit A.pdf', type: 'application/pdf', size: file.length, sha256: sha256(file), thumbnail: null };
      assert.deepEqual(ack.attachment, attachment);
      assert.deepEqual(progress.at(0), [0, file.length], 'progress starts at the offset');
      assert.deepEqual(progress.at(-1), [file.length, file.length], 'and ends at the whole file');
      assert.ok(progress.every(([sent], i) => i === 0 || sent >= progress[i - 1][0]), 'and only grows');

      // The other participant's socket gets the message with the attachment.
      const m = await received;
      assert.equal(m._id, ack._id);
      assert.deepEqual(m.content, { text: 'The exhibit', type: 'document', format: 'plain', attachments: [attachment] });

      // … and downloads it: the same bytes, as an attachment with its name.
      const bobClient = await client('bert', 'client');
      try {
        const url = await bobClient.downloadUrl(conv._id, attachment.fileId);
        assert.match(url, new RegExp(`^${bridge.url}/api/downloads/[A-Za-z0-9_-]+$`));
        const { res, bytes } = await get(url);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('content-type'), 'application/pdf');
        assert.equal(res.headers.get('content-length'), String(file.length));
        assert.match(res.headers.get('content-disposition'), /^attachment; filename="Exhibit A\.pdf"/);
        assert.equal(res.headers.get('x-legalchat-sha256'), attachment.sha256);
        assert.ok(bytes.equals(file), 'the downloaded bytes are the uploaded ones');

        // The ticket was used: the same URL again is 401.
        const again = await fetch(url);
        assert.equal(again.status, 401);
        assert.equal((await again.json()).error.code, 'UNAUTHORIZED');

        // A download resumes with Range: bytes=N- (206, the rest).
        const ticket = await bobClient.startDownload(conv._id, attachment.fileId);
        assert.deepEqual([ticket.fileName, ticket.size, ticket.type, ticket.sha256], ['Exhibit A.pdf', file.length, 'application/pdf', attachment.sha256]);
        const rest = await get(ticket.url, { Range: 'bytes=150000-' });
        assert.equal(rest.res.status, 206);
        assert.equal(rest.res.headers.get('content-range'), `bytes 150000-${file.length - 1}/${file.length}`);
        assert.ok(rest.bytes.equals(file.subarray(150_000)));

        // History carries the attachment too.
        const page = await bobClient.history(conv._id);
        assert.deepEqual(page.messages[0].content.attachments, [attachment]);
      } finally {
        bobClient.disconnect();
      }

      // A file of one conversation cannot be attached in another.
      const other = await alice.createConversation({ type: 'group', participants: ['bert'], title: 'Elsewhere' });
      await assert.rejects(
        alice.sendMessage(other._id, { text: '', type: 'document', attachments: [{ fileId: attachment.fileId }] }),
        (e) => e.code === 'NOT_FOUND' && /no file [0-9a-f]{32} in this conversation/.test(e.message),
      );
      // A file message without a file is refused.
      await assert.rejects(alice.sendMessage(conv._id, { text: 'no file', type: 'document' }), (e) => e.code === 'INVALID_ARGUMENT' && /attachment/.test(e.message));
    } finally {
      alice.disconnect();
      bob.close();
    }
  });

  test('an image gets a server-made thumbnail and is sent as an image message; ?inline shows it in the page', options, async () => {
    const alice = await client('ida');
    const bob = await rawSocket('ivo');
    try {
      const conv = await alice.createConversation({ type: 'group', participants: ['ivo'], title: 'Photos' });
      const image = png();
      const received = next(bob, 'receive_message', (m) => m.conversationId === conv._id && !m.event);
      // A Blob with a name, as browsers have them (File).
      const ack = await alice.sendFile(conv._id, new File([image], 'site photo.png'));
      const { thumbnail, ...rest } = ack.attachment;
      assert.deepEqual(rest, { fileId: ack.attachment.fileId, name: 'site photo.png', type: 'image/png', size: image.length, sha256: sha256(image) });
      assert.equal(thumbnail.type, 'image/jpeg');
      assert.ok(thumbnail.width > 0 && thumbnail.width <= 256 && thumbnail.height > 0 && thumbnail.height <= 256, JSON.stringify([thumbnail.width, thumbnail.height]));
      assert.match(thumbnail.url, /^data:image\/jpeg;base64,\/9j\//);
      const jpeg = Buffer.from(thumbnail.url.split(',')[1], 'base64');
      assert.deepEqual([...jpeg.subarray(0, 3)], [0xff, 0xd8, 0xff], 'the thumbnail is a JPEG');

      const m = await received;
      assert.equal(m.content.type, 'image');
      assert.equal(m.content.text, '');
      assert.deepEqual(m.content.attachments, [ack.attachment]);

      const url = await alice.downloadUrl(conv._id, ack.attachment.fileId, { inline: true });
      assert.ok(url.endsWith('?inline'));
      const { res, bytes } = await get(url);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-disposition'), /^inline; filename="site photo\.png"/);
      assert.equal(res.headers.get('content-type'), 'image/png');
      assert.ok(bytes.equals(image));
    } finally {
      alice.disconnect();
      bob.close();
    }
  });

  test('an executable named .pdf is refused with the reason, and nothing is sent', options, async () => {
    const alice = await client('eli');
    try {
      const conv = await alice.createConversation({ type: 'group', participants: [], title: 'Malware' });
      const e = await alice.uploadFile(conv._id, elf(), { name: 'invoice.pdf' }).then(
        () => assert.fail('an executable was accepted'),
        (e) => e,
      );
      assert.ok(e instanceof UploadError, String(e));
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.equal(e.status, 400);
      assert.match(e.detail, /^content: is application\/x-executable, which cannot be attached \(allowed: application\/pdf, /);
      assert.match(e.uploadId, /^[0-9a-f]{32}$/);
      assert.deepEqual((await alice.history(conv._id)).messages, []);
    } finally {
      alice.disconnect();
    }
  });

  test('HTTP: a body longer than the ticket is 413 before the upload, none is 411, a wrong hash 400, a used ticket 401', options, async () => {
    const s = await rawSocket('hal', 'advocate');
    try {
      const conv = await s.emitWithAck('create_conversation', { type: 'group', participants: [], title: 'HTTP' });
      const file = pdfLike(10_000);
      const start = (extra = {}) => s.emitWithAck('start_upload', { conversationId: conv._id, fileName: 'x.pdf', size: file.length, sha256: sha256(file), ...extra });

      const t = await start();
      assert.equal(t.error, undefined, JSON.stringify(t));
      assert.deepEqual([t.offset, t.size, t.fileName], [0, file.length, 'x.pdf']);
      assert.match(t.url, /^\/api\/uploads\/[A-Za-z0-9_-]+$/);
      assert.ok(Date.parse(t.expiresAt) > Date.now());
      const tooLong = await fetch(bridge.url + t.url, { method: 'PUT', body: Buffer.concat([file, Buffer.from('more')]) });
      assert.equal(tooLong.status, 413);
      const body = await tooLong.json();
      assert.equal(body.error.code, 'INVALID_ARGUMENT');
      assert.equal(body.error.message, `the body is ${file.length + 4} bytes; this upload takes ${file.length} (the declared size from offset 0)`);
      // That ticket is spent; the upload is still there to resume from 0.
      assert.equal((await fetch(bridge.url + t.url, { method: 'PUT', body: file })).status, 401);

      // Without a Content-Length (a chunked body): 411.
      const t2 = await start({ uploadId: t.uploadId });
      assert.equal(t2.offset, 0);
      const chunked = await fetch(bridge.url + t2.url, { method: 'PUT', body: new Blob([file]).stream(), duplex: 'half' });
      assert.equal(chunked.status, 411);
      assert.match((await chunked.json()).error.message, /Content-Length is required/);

      // A body that is not the file the hash names: 400, sha256.
      const forged = pdfLike(10_000);
      const t3 = await start();
      const mismatch = await fetch(bridge.url + t3.url, { method: 'PUT', body: forged });
      assert.equal(mismatch.status, 400);
      assert.match((await mismatch.json()).error.message, /^sha256: the content's SHA-256 is [0-9a-f]{64}, not the declared [0-9a-f]{64}$/);

      // The right body on a fresh ticket of the first upload: 201.
      const t4 = await start({ uploadId: t.uploadId });
      const ok = await fetch(`${bridge.url}${t4.url}`, { method: 'POST', body: file });
      assert.equal(ok.status, 201);
      assert.equal((await ok.json()).attachment.sha256, sha256(file));
      // … and its URL is spent.
      const used = await fetch(`${bridge.url}${t4.url}`, { method: 'PUT', body: file });
      assert.equal(used.status, 401);
      assert.deepEqual(await used.json(), { error: { code: 'UNAUTHORIZED', message: 'the transfer ticket is unknown, used or expired; ask for a new one' } });
      // A ticket nobody issued: 401 too.
      assert.equal((await fetch(`${bridge.url}/api/downloads/${'A'.repeat(43)}`)).status, 401);
    } finally {
      s.close();
    }
  });

  test('only participants upload and download: others are refused NOT_FOUND, as for a conversation that does not exist', options, async () => {
    const alice = await client('pia');
    const mallory = await client('mort', 'client');
    try {
      const conv = await alice.createConversation({ type: 'group', participants: [], title: 'Privileged' });
      const { fileId } = await alice.uploadFile(conv._id, pdfLike(1_000), { name: 'memo.pdf' });
      const unknown = `conversation ${conv._id} not found: it does not exist, or you are not a participant`;
      await assert.rejects(mallory.downloadUrl(conv._id, fileId), (e) => e.code === 'NOT_FOUND' && e.detail === unknown);
      await assert.rejects(mallory.uploadFile(conv._id, pdfLike(1_000), { name: 'in.pdf' }), (e) => e instanceof UploadError && e.code === 'NOT_FOUND' && e.detail === unknown && e.status === null);
      // A file id that is not there.
      await assert.rejects(alice.downloadUrl(conv._id, '0'.repeat(32)), (e) => e.code === 'NOT_FOUND');
    } finally {
      alice.disconnect();
      mallory.disconnect();
    }
  });

  test('a cancelled upload resumes with its uploadId from the byte the server confirmed', options, async (t) => {
    const alice = await client('cleo');
    try {
      const conv = await alice.createConversation({ type: 'group', participants: [], title: 'Large' });
      const file = pdfLike(6 * MiB);
      const abort = new AbortController();
      const e = await alice
        .uploadFile(conv._id, file, { name: 'bundle.pdf', signal: abort.signal, onProgress: (sent) => sent >= 3 * MiB && abort.abort() })
        .then(() => assert.fail('the upload was not cancelled'), (e) => e);
      assert.ok(e instanceof UploadError, String(e));
      assert.equal(e.code, 'ABORTED');
      assert.match(e.uploadId, /^[0-9a-f]{32}$/);

      const progress = [];
      const attachment = await alice.uploadFile(conv._id, file, { name: 'bundle.pdf', uploadId: e.uploadId, onProgress: (sent) => progress.push(sent) });
      const resumedAt = progress[0];
      t.diagnostic(`cancelled after 3 MiB; resumed at ${resumedAt} of ${file.length}`);
      // What the server confirmed before the cancel (it may not have confirmed anything yet).
      assert.equal(resumedAt % MiB, 0, `resumed at ${resumedAt}`);
      assert.ok(resumedAt <= 3 * MiB + MiB, `resumed at ${resumedAt}`);
      assert.equal(progress.at(-1), file.length);
      assert.equal(attachment.sha256, sha256(file));
      assert.equal(attachment.size, file.length);
      const { bytes } = await get(await alice.downloadUrl(conv._id, attachment.fileId));
      assert.ok(bytes.equals(file));
    } finally {
      alice.disconnect();
    }
  });

  test('a PUT cut off mid-body: the server keeps what it confirmed, and a resume completes it', options, async (t) => {
    const alice = await client('rita');
    // A ticket is good while the socket that asked for it is connected (its daemon session).
    const s = await rawSocket('rita', 'advocate');
    try {
      const conv = await alice.createConversation({ type: 'group', participants: [], title: 'Cut' });
      const file = pdfLike(10 * MiB);
      const ticket = await s.emitWithAck('start_upload', { conversationId: conv._id, fileName: 'cut.pdf', size: file.length, sha256: sha256(file) });
      // 9.5 MiB of the body, then the connection goes (after those bytes: the bridge reads them all).
      const sent = 9.5 * MiB;
      await new Promise((resolve, reject) => {
        const url = new URL(bridge.url + ticket.url);
        const req = http.request({ method: 'PUT', host: url.hostname, port: url.port, path: url.pathname, headers: { 'Content-Length': file.length } });
        req.on('error', () => resolve()); // the cut itself
        req.on('response', (res) => reject(new Error(`the bridge answered ${res.statusCode} to a body cut short`)));
        req.write(file.subarray(0, sent), () => {
          req.destroy();
          resolve();
        });
      });
      const progress = [];
      const attachment = await alice.uploadFile(conv._id, file, { name: 'cut.pdf', uploadId: ticket.uploadId, onProgress: (n) => progress.push(n) });
      t.diagnostic(`cut after ${sent} bytes; resumed at ${progress[0]} of ${file.length}`);
      // The server confirms as the file comes (every few MiB) and keeps what it confirmed.
      assert.ok(progress[0] > 0 && progress[0] <= sent && progress[0] % MiB === 0, `resumed at ${progress[0]}`);
      assert.equal(attachment.sha256, sha256(file));
      const { bytes } = await get(await alice.downloadUrl(conv._id, attachment.fileId));
      assert.ok(bytes.equals(file));
    } finally {
      alice.disconnect();
      s.close();
    }
  });

  test('the network fails during a PUT: the ChatClient resumes by itself with the uploadId and completes', options, async (t) => {
    // A TCP proxy in front of the bridge that cuts the first upload after 9 MiB of it (what
    // came before the cut reaches the bridge; the client's connection breaks): the socket
    // (WebSocket) and everything else pass through untouched.
    const target = new URL(bridge.url);
    const cuts = [];
    const uploads = [];
    const proxy = net.createServer((down) => {
      const up = net.connect(Number(target.port), target.hostname);
      let watched = null;
      down.on('data', (chunk) => {
        if (chunk.includes('PUT /api/uploads/')) {
          uploads.push(chunk.toString('latin1').split('\r\n')[0]);
          if (cuts.length === 0) watched = { seen: 0 };
        }
        if (watched) {
          watched.seen += chunk.length;
          if (watched.seen >= 9 * MiB) {
            cuts.push(watched.seen);
            watched = null;
            up.end();
            down.destroy();
            return;
          }
        }
        up.write(chunk);
      });
      up.on('data', (chunk) => !down.destroyed && down.write(chunk));
      for (const [a, b] of [[down, up], [up, down]]) {
        a.on('end', () => b.end());
        a.on('error', () => b.destroy());
        a.on('close', () => b.end());
      }
    });
    await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
    const via = `http://127.0.0.1:${proxy.address().port}`;
    const alice = await client('nia', 'advocate', via);
    try {
      const conv = await alice.createConversation({ type: 'group', participants: ['nils'], title: 'Flaky network' });
      const file = pdfLike(10 * MiB);
      const progress = [];
      const ack = await alice.sendFile(conv._id, file, { name: 'brief.pdf', onProgress: (sent) => progress.push(sent) });
      assert.equal(cuts.length, 1, 'the first PUT was cut');
      assert.ok(uploads.length >= 2, `${uploads.length} PUTs`);
      // Progress fell back to where the server had confirmed, then went on to the end.
      const back = progress.findIndex((n, i) => i > 0 && n < progress[i - 1]);
      assert.ok(back > 0, 'the upload started again from the confirmed offset');
      assert.ok(progress[back] > 0 && progress[back] <= cuts[0], `resumed at ${progress[back]}: what the server confirmed of what reached it`);
      t.diagnostic(`cut after ${cuts[0]} bytes on the wire; resumed by itself at ${progress[back]} of ${file.length}, ${uploads.length} PUTs`);
      assert.equal(progress[back] % MiB, 0, `resumed at ${progress[back]}`);
      assert.equal(progress.at(-1), file.length);
      assert.equal(ack.attachment.sha256, sha256(file));

      // The other participant gets exactly the file.
      const nils = await client('nils', 'client');
      try {
        const { bytes } = await get(await nils.downloadUrl(conv._id, ack.attachment.fileId));
        assert.ok(bytes.equals(file));
      } finally {
        nils.disconnect();
      }
    } finally {
      alice.disconnect();
      await new Promise((r) => proxy.close(r));
    }
  });

  test('too large: refused before hashing by the client, and by the server with the same words', options, async () => {
    const alice = await client('lars');
    const unlimited = await client('lars', 'advocate', bridge.url, { maxFileBytes: Number.MAX_SAFE_INTEGER });
    try {
      const conv = await alice.createConversation({ type: 'group', participants: [], title: 'Big' });
      const big = new Blob([new Uint8Array(52_428_801)]);
      const words = 'size: the file is 52428801 bytes; the largest accepted is 52428800 bytes (50 MiB)';
      await assert.rejects(alice.uploadFile(conv._id, big, { name: 'big.pdf' }), (e) => e.code === 'INVALID_ARGUMENT' && e.detail === words);
      await assert.rejects(unlimited.uploadFile(conv._id, big, { name: 'big.pdf' }), (e) => e.code === 'INVALID_ARGUMENT' && e.detail === words);
      await assert.rejects(alice.uploadFile(conv._id, new Blob([]), { name: 'empty.txt' }), (e) => e.code === 'INVALID_ARGUMENT' && /empty/.test(e.detail));
      await assert.rejects(alice.uploadFile(conv._id, new Blob(['x'])), (e) => e.code === 'INVALID_ARGUMENT' && /fileName/.test(e.detail));
    } finally {
      alice.disconnect();
      unlimited.disconnect();
    }
  });

  test('the eleventh upload in an hour is refused RATE_LIMITED with the wait', options, async () => {
    const alice = await client('ruth');
    try {
      const conv = await alice.createConversation({ type: 'group', participants: [], title: 'Many' });
      for (let i = 1; i <= 10; i++) await alice.uploadFile(conv._id, Buffer.from(`note ${i}\n`), { name: `note-${i}.txt` });
      const e = await alice.uploadFile(conv._id, Buffer.from('one more\n'), { name: 'note-11.txt' }).then(
        () => assert.fail('an eleventh upload was accepted'),
        (e) => e,
      );
      assert.equal(e.code, 'RATE_LIMITED');
      assert.match(e.detail, /^upload limit reached: at most 10 uploads per hour; try again in (\d+ min )?\d+ s$/);
      // The wait in milliseconds too, where the bridge says it (`retryAfterMs`).
      assert.ok(e.retryAfterMs === null || (e.retryAfterMs > 0 && e.retryAfterMs <= 3_600_000), String(e.retryAfterMs));
    } finally {
      alice.disconnect();
    }
  });
});

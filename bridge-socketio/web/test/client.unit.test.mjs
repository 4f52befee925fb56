// Unit tests of the ChatClient's ordering logic, without a server: the bridge never leaves
// gaps or repeats, so the end-to-end tests cannot reach these paths. The history request is
// replaced on the instance (a fake inside a unit test of one module). Also the file helpers
// and the checks an upload makes before it asks the server, and the web app's wording of
// refusals a test server cannot produce (a malware scanner); when a token is renewed, and
// how the app words a sign-out.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChatClient, ChatError, formatBytes, newClientMessageId, renewalDelayMs, sha256Hex, signOutReason, UploadError } from '../dist/client/index.js';
import { describeUploadError } from '../dist/app/file-upload.js';
import { signOutMessage } from '../dist/app/signin.js';

const C = '0123456789abcdef0123456789abcdef';

function entry(seq, extra = {}) {
  return { _id: `m${seq}`, conversationId: C, seq, senderId: 'bob', clientMessageId: `c${seq}`, timestamp: '2026-12-03T10:00:00.000Z', ...extra };
}

/** A client whose `history` answers from `log`, and the seqs it delivered. */
function clientOver(log) {
  const client = new ChatClient('http://127.0.0.1:1', { cursors: { [C]: 0 } });
  const fetched = [];
  client.history = async (conversationId, page) => {
    fetched.push(page.after);
    const messages = log.filter((e) => e.conversationId === conversationId && e.seq > page.after).slice(0, page.limit ?? 50);
    return { conversationId, messages, hasMore: false, lastSeq: log.length };
  };
  const delivered = [];
  client.on('entry', (e) => delivered.push(e.seq));
  return { client, fetched, delivered };
}

test('entries are delivered in order and exactly once; repeats are dropped', () => {
  const { client, delivered } = clientOver([]);
  for (const seq of [1, 2, 2, 1, 3]) client.receive(entry(seq));
  assert.deepEqual(delivered, [1, 2, 3]);
  assert.equal(client.cursors()[C], 3);
});

test('a gap holds what came after it and fetches what is missing, then releases in order', async () => {
  const log = [1, 2, 3, 4, 5].map((s) => entry(s));
  const { client, fetched, delivered } = clientOver(log);
  client.receive(log[0]);
  client.receive(log[3]); // 4 before 2 and 3
  client.receive(log[4]);
  assert.deepEqual(delivered, [1], 'held until the gap is filled');
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(fetched, [1], 'fetched after the cursor, once');
  assert.deepEqual(delivered, [1, 2, 3, 4, 5]);
  // The live copies of what the fetch brought are repeats now.
  client.receive(log[1]);
  client.receive(log[2]);
  assert.deepEqual(delivered, [1, 2, 3, 4, 5]);
});

test('message ids seen can be marked read by id; unknown ids are refused', async () => {
  const { client } = clientOver([]);
  client.receive(entry(1));
  const asked = [];
  client.request = async (event, payload) => {
    asked.push([event, payload]);
    return payload;
  };
  await client.markAsRead('m1');
  assert.deepEqual(asked, [['message_read', { conversationId: C, seq: 1 }]]);
  await assert.rejects(client.markAsRead('never-seen'), /NOT_FOUND/);
});

test('the echo of a send settles it even when its acknowledgement is lost', async () => {
  const { client } = clientOver([]);
  client.identity = { userId: 'me' };
  // Offline: the send waits in the outbox.
  const sent = client.sendMessage(C, 'hello', { clientMessageId: 'mine-1' });
  assert.deepEqual(client.pendingSends().map((p) => p.clientMessageId), ['mine-1']);
  client.receive(entry(1, { senderId: 'me', clientMessageId: 'mine-1', content: { text: 'hello' } }));
  const ack = await sent;
  assert.deepEqual([ack.seq, ack._id, ack.clientMessageId], [1, 'm1', 'mine-1']);
  assert.deepEqual(client.pendingSends(), []);
  client.disconnect();
});

test('client message ids are 32 hex digits, distinct, and sort by their time', () => {
  const ids = Array.from({ length: 1_000 }, () => newClientMessageId(1_764_800_000_000));
  assert.equal(new Set(ids).size, ids.length);
  for (const id of ids) assert.match(id, /^[0-9a-f]{32}$/);
  assert.ok(ids.every((id) => id.startsWith((1_764_800_000_000).toString(16).padStart(12, '0'))));
  assert.ok(newClientMessageId(1_764_800_000_000) < newClientMessageId(1_764_800_000_001));
  assert.ok(newClientMessageId() > newClientMessageId(1_764_800_000_000));
});

test('file sizes read as the server writes them', () => {
  assert.equal(formatBytes(1), '1 byte');
  assert.equal(formatBytes(1023), '1023 bytes');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(52_428_800), '50 MiB');
  assert.equal(formatBytes(3_009), '2.9 KiB');
});

test('the SHA-256 of a file is WebCrypto\'s, as 64 lowercase hex digits', async () => {
  assert.equal(await sha256Hex(new Blob(['abc'])), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  assert.equal(await sha256Hex(new Blob([])), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});

test('an upload refused before it starts says so without asking the server', async () => {
  const client = new ChatClient('http://127.0.0.1:1', { maxFileBytes: 10 });
  const big = await client.uploadFile(C, new Uint8Array(11), { name: 'a.pdf' }).catch((e) => e);
  assert.ok(big instanceof UploadError && big instanceof ChatError);
  assert.deepEqual([big.code, big.detail, big.status, big.uploadId], ['INVALID_ARGUMENT', 'size: the file is 11 bytes; the largest accepted is 10 bytes (10 bytes)', null, null]);
  const nameless = await client.uploadFile(C, new Uint8Array(1)).catch((e) => e);
  assert.match(nameless.message, /^INVALID_ARGUMENT: fileName: is required/);
  const cancelled = new AbortController();
  cancelled.abort();
  const aborted = await client.uploadFile(C, new Uint8Array(1), { name: 'a.txt', signal: cancelled.signal, uploadId: 'u1' }).catch((e) => e);
  assert.deepEqual([aborted.code, aborted.uploadId], ['ABORTED', 'u1']);
  // Never connected: refused at once, not retried.
  const idle = await client.uploadFile(C, new Uint8Array(1), { name: 'a.txt' }).catch((e) => e);
  assert.deepEqual([idle.code, idle.uploadId], ['CLOSED', null]);
  client.disconnect();
});

test('the web app says why an upload was refused, in words', () => {
  const said = (code, detail) => describeUploadError('scan.pdf', new UploadError({ code, message: detail }));
  assert.equal(
    said('INVALID_ARGUMENT', 'size: the file is 60000000 bytes; the largest accepted is 52428800 bytes (50 MiB)'),
    'scan.pdf is too large (57.2 MiB): the largest file you can attach is 50 MiB.',
  );
  assert.equal(
    said('INVALID_ARGUMENT', 'content: is application/x-executable, which cannot be attached (allowed: application/pdf, text/plain)'),
    'scan.pdf cannot be attached: its content is application/x-executable, and only a PDF, an Office document, an image (PNG, JPEG, GIF, WebP) or plain text can be attached.',
  );
  assert.equal(
    said('RATE_LIMITED', 'upload limit reached: at most 10 uploads per hour; try again in 5 min 59 s'),
    'scan.pdf was not uploaded: you can upload at most 10 files an hour. Try again in 5 min 59 s.',
  );
  assert.equal(said('INVALID_ARGUMENT', 'file: refused: the malware scanner found Eicar-Test-Signature'), 'scan.pdf was refused: the malware scanner found Eicar-Test-Signature.');
  assert.equal(
    said('UNAVAILABLE', 'the malware scanner is unavailable, so the file cannot be accepted now; resume the upload later'),
    'scan.pdf cannot be accepted now: the malware scanner is unavailable. Try again later.',
  );
  assert.equal(said('INVALID_ARGUMENT', 'size: an empty file cannot be attached'), 'scan.pdf is empty: there is nothing to attach.');
  assert.equal(
    said('NOT_FOUND', 'conversation 0123abcd not found: it does not exist, or you are not a participant'),
    'scan.pdf was not uploaded: this conversation was not found, or you are not a participant.',
  );
  // Another NOT_FOUND (an interrupted upload the server no longer has) says its own words.
  assert.equal(
    said('NOT_FOUND', 'upload_id: no interrupted upload 42 of yours; start it again'),
    'scan.pdf was not uploaded: upload_id: no interrupted upload 42 of yours; start it again',
  );
});

test('the renewal is due a fifth of the remaining life before expiry, 5 to 60 s before; reasons read from the server\'s words', () => {
  const now = 1_000_000;
  assert.equal(renewalDelayMs(now + 3_000, now), 0, 'less than 5 s left: now');
  assert.equal(renewalDelayMs(now + 60_000, now), 48_000, 'a fifth of 60 s: 12 s before');
  assert.equal(renewalDelayMs(now + 20_000, now), 15_000, 'at least 5 s before');
  assert.equal(renewalDelayMs(now + 3_600_000, now), 3_540_000, 'at most 60 s before');
  assert.equal(renewalDelayMs(now - 1_000, now), 0, 'expired: now');
  assert.equal(signOutReason('your token expired; sign in again (clients renew their token before it expires)'), 'expired');
  assert.equal(signOutReason('unauthorized: token has expired'), 'expired');
  assert.equal(signOutReason('your sessions were revoked by an administrator; sign in again'), 'revoked');
  assert.equal(signOutReason('unauthorized: this token was revoked; sign in again for a new one'), 'revoked');
  assert.equal(signOutReason('your account was deactivated by an administrator'), 'deactivated');
  assert.equal(signOutReason('unauthorized: this account is deactivated; ask an administrator'), 'deactivated');
  assert.equal(signOutReason('unauthorized: token signature is invalid'), 'refused');
});

test('the web app says why the server signed the user out, in words', () => {
  const said = (message, ended) => signOutMessage({ reason: signOutReason(message), message, ended });
  assert.equal(said('your token expired; sign in again (clients renew their token before it expires)', true), 'Your session expired. Sign in again to continue.');
  assert.equal(said('your sessions were revoked by an administrator; sign in again', true), 'An administrator signed you out. Sign in again to continue.');
  assert.equal(said('unauthorized: this token was revoked; sign in again for a new one', false), 'That sign-in was revoked by an administrator. Sign in again with a new one.');
  assert.equal(said('your account was deactivated by an administrator', true), 'Your account has been deactivated. Ask an administrator to reactivate it.');
  assert.equal(said('unauthorized: this account is deactivated; ask an administrator', false), 'Your account has been deactivated. Ask an administrator to reactivate it.');
  assert.equal(said('unauthorized: token has expired', false), 'That sign-in has expired. Sign in again.');
  assert.equal(said('unauthorized: token signature is invalid', false), 'Sign-in refused: token signature is invalid');
});

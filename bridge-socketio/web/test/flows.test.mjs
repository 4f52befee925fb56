// The requirements' "Real-time Event Flow", step by step, through the bridge with the
// official socket.io-client, over WebSocket and over HTTP long-polling; and every way a
// handshake or a request can be refused.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { next, record, socket, startBridge, startDaemon } from './harness.mjs';

let daemon;
let bridge;
/** A bridge that gives a socket without a token only 1 s to authenticate (the default 10 s
 * elsewhere, so that a slow machine does not turn a test's own sign-in into a timeout). */
let impatient;

before(async () => {
  daemon = await startDaemon();
  bridge = await startBridge(daemon);
  impatient = await startBridge(daemon, ['--auth-timeout-ms', '1000']);
});

after(async () => {
  await impatient?.stop();
  await bridge?.stop();
  await daemon?.stop();
});

/** A connected, authenticated socket for `user`, with its events recorded from the start. */
async function signIn(user, role, transport) {
  const s = socket(bridge.url, { token: daemon.token(user, role) }, transport);
  const events = record(s);
  const identity = await next(s, 'authenticated');
  return { s, events, identity };
}

async function groupOf(creator, others, title) {
  const c = await creator.s.emitWithAck('create_conversation', { type: 'group', participants: others, title });
  assert.ok(c._id, `create_conversation answered ${JSON.stringify(c)}`);
  return c;
}

for (const transport of ['websocket', 'polling']) {
  describe(`over ${transport}`, () => {
    const u = (name) => `${name}-${transport}`;

    test('message sending flow, steps 1-6', async () => {
      const alice = await signIn(u('alice'), 'advocate', transport);
      const bob = await signIn(u('bob'), 'client', transport);
      // Bob hears that he was added.
      const added = next(bob.s, 'conversation_updated', (c) => c.title === 'Smith v. Jones');
      const conv = await groupOf(alice, [u('bob')], 'Smith v. Jones');
      assert.equal((await added)._id, conv._id);

      // 1-3: send_message; validated, saved durably, acknowledged with _id and seq.
      const delivered = next(alice.s, 'message_delivered', (r) => r.status === 'delivered' && r.userId === u('bob'));
      const received = next(bob.s, 'receive_message', (m) => m.conversationId === conv._id && !m.event);
      const ack = await alice.s.emitWithAck('send_message', { conversationId: conv._id, content: 'The draft is ready.', clientMessageId: `cm-${transport}-1` });
      assert.equal(ack.error, undefined, JSON.stringify(ack));
      assert.match(ack._id, /^[0-9a-f]{32}$/);
      assert.ok(ack.seq >= 1);
      assert.equal(ack.clientMessageId, `cm-${transport}-1`);
      assert.equal(ack.duplicate, false);

      // 4: receive_message to the participants, in the MessageSchema shape plus seq.
      const m = await received;
      assert.equal(m._id, ack._id);
      assert.equal(m.seq, ack.seq);
      assert.equal(m.senderId, u('alice'));
      assert.deepEqual(m.content, { text: 'The draft is ready.', type: 'text', format: 'plain', attachments: [] });
      assert.equal(m.timestamp, ack.timestamp);
      for (const field of ['editedAt', 'deletedAt', 'deliveryStatus', 'reactions', 'replyTo']) assert.ok(field in m, `receive_message lacks ${field}`);

      // 5: message_delivered to the sender: stored ("sent"), then delivered to Bob.
      const sent = alice.events.find(([name, r]) => name === 'message_delivered' && r.status === 'sent');
      assert.ok(sent, 'the sender hears message_delivered {status: "sent"}');
      assert.equal(sent[1].seq, ack.seq);
      const d = await delivered;
      assert.ok(d.seq >= ack.seq);

      // 6: Bob reads; Alice hears message_read.
      const read = next(alice.s, 'message_read', (r) => r.userId === u('bob'));
      const r = await bob.s.emitWithAck('message_read', { conversationId: conv._id, seq: ack.seq });
      assert.deepEqual(r, { conversationId: conv._id, seq: ack.seq });
      assert.equal((await read).seq, ack.seq);

      // A retry with the same client message id is stored once.
      const again = await alice.s.emitWithAck('send_message', { conversationId: conv._id, content: 'The draft is ready.', clientMessageId: `cm-${transport}-1` });
      assert.deepEqual([again.seq, again._id, again.duplicate], [ack.seq, ack._id, true]);

      // The sender's own socket gets its message too, in its place in the log.
      assert.ok(alice.events.some(([name, x]) => name === 'receive_message' && x._id === ack._id));
      alice.s.close();
      bob.s.close();
    });

    test('typing flow with the 3 s auto-stop', async () => {
      const alice = await signIn(u('tina'), 'advocate', transport);
      const bob = await signIn(u('tom'), 'client', transport);
      const conv = await groupOf(alice, [u('tom')], 'Typing');
      // join_room adds typing and room_users: who of the conversation is online.
      const joined = await bob.s.emitWithAck('join_room', { conversationId: conv._id });
      assert.deepEqual(joined.users.sort(), [u('tina'), u('tom')].sort());
      await alice.s.emitWithAck('join_room', { conversationId: conv._id });

      // typing_start is broadcast; typing_stop ends it.
      const start = next(bob.s, 'typing_start', (t) => t.userId === u('tina'));
      await alice.s.emitWithAck('typing_start', { conversationId: conv._id });
      assert.deepEqual(await start, { conversationId: conv._id, userId: u('tina') });
      const stop = next(bob.s, 'typing_stop', (t) => t.userId === u('tina'));
      await alice.s.emitWithAck('typing_stop', { conversationId: conv._id });
      await stop;

      // Without typing_stop, the server stops it after 3 s of inactivity.
      const started = next(bob.s, 'typing_start', (t) => t.userId === u('tina'));
      await alice.s.emitWithAck('typing_start', { conversationId: conv._id });
      const at = Date.now();
      await started;
      await next(bob.s, 'typing_stop', (t) => t.userId === u('tina'));
      assert.ok(Date.now() - at >= 2_000, 'the auto-stop came after the typing timeout, not at once');
      // room_users follows every change: Tina leaves.
      const left = next(bob.s, 'room_users', (r) => !r.users.includes(u('tina')));
      alice.s.close();
      assert.deepEqual((await left).users, [u('tom')]);
      bob.s.close();
    });

    test('connection management: user_online and user_offline to contacts', async () => {
      const alice = await signIn(u('olga'), 'advocate', transport);
      const bob = await signIn(u('otto'), 'client', transport);
      await groupOf(alice, [u('otto')], 'Presence');
      bob.s.close();
      await next(alice.s, 'user_offline', (p) => p.userId === u('otto'));
      const online = next(alice.s, 'user_online', (p) => p.userId === u('otto'));
      const again = await signIn(u('otto'), 'client', transport);
      const p = await online;
      assert.equal(p.userId, u('otto'));
      again.s.close();
      alice.s.close();
    });

    test('a missing token is unauthorized after the authentication timeout', async () => {
      const s = socket(impatient.url, {}, transport);
      const [refused, closed] = [next(s, 'unauthorized'), next(s, 'disconnect')];
      assert.equal((await refused).code, 'UNAUTHENTICATED');
      assert.match((await refused).message, /no token/);
      assert.equal(await closed, 'io server disconnect');
      s.close();
    });

    test('a request before authenticating is refused with unauthorized', async () => {
      const s = socket(bridge.url, {}, transport);
      await next(s, 'connect');
      const unauthorized = next(s, 'unauthorized');
      const ack = await s.emitWithAck('send_message', { conversationId: '0'.repeat(32), content: 'hi' });
      assert.equal(ack.error.code, 'UNAUTHENTICATED');
      assert.match((await unauthorized).message, /authenticate first/);
      s.close();
    });

    test('a bad token is a connect_error with the reason', async () => {
      const s = socket(bridge.url, { token: 'not-a-jwt' }, transport);
      const e = await next(s, 'connect_error');
      assert.match(e.message, /^unauthorized: /);
      s.close();
      const forged = socket(bridge.url, { token: daemon.token(u('eve'), 'admin').slice(0, -4) + 'AAAA' }, transport);
      assert.match((await next(forged, 'connect_error')).message, /^unauthorized: .*signature/i);
      forged.close();
    });

    test('an expired token is a connect_error that says so', async () => {
      const s = socket(bridge.url, { token: daemon.token(u('late'), 'advocate', -3600) }, transport);
      const e = await next(s, 'connect_error');
      assert.match(e.message, /^unauthorized: .*expired/i);
      s.close();
    });

    test('the authenticate event: a good token signs in, a bad one is unauthorized', async () => {
      const s = socket(bridge.url, {}, transport);
      await next(s, 'connect');
      const identity = await s.emitWithAck('authenticate', { token: daemon.token(u('ava'), 'advocate') });
      assert.equal(identity.userId, u('ava'));
      assert.equal(identity.role, 'advocate');
      assert.equal((await s.emitWithAck('list_conversations', {})).conversations.length, 0);
      const twice = await s.emitWithAck('authenticate', { token: daemon.token(u('ava'), 'advocate') });
      assert.equal(twice.error?.code, 'ALREADY_EXISTS', JSON.stringify(twice));
      s.close();

      const bad = socket(bridge.url, {}, transport);
      await next(bad, 'connect');
      const [unauthorized, closed] = [next(bad, 'unauthorized'), next(bad, 'disconnect')];
      const refused = await bad.emitWithAck('authenticate', { token: daemon.token(u('ava'), 'advocate', -3600) });
      assert.equal(refused.error?.code, 'UNAUTHENTICATED', JSON.stringify(refused));
      assert.match((await unauthorized).message, /expired/i);
      assert.equal(await closed, 'io server disconnect');
      bad.close();
    });

    test('a conversation one is not in is refused as if it did not exist, and nobody else hears of it', async () => {
      const alice = await signIn(u('fay'), 'advocate', transport);
      const mallory = await signIn(u('mal'), 'client', transport);
      const conv = await groupOf(alice, [], 'Privileged');
      // NOT_FOUND, as for an id nobody uses: a difference would tell who talks to whom.
      const unknown = { code: 'NOT_FOUND', message: `conversation ${conv._id} not found: it does not exist, or you are not a participant` };
      const ack = await mallory.s.emitWithAck('send_message', { conversationId: conv._id, content: 'let me in' });
      assert.deepEqual(ack.error, unknown, JSON.stringify(ack));
      const history = await mallory.s.emitWithAck('get_history', { conversationId: conv._id });
      assert.deepEqual(history.error, unknown);
      const join = await mallory.s.emitWithAck('join_room', { conversationId: conv._id });
      assert.deepEqual(join.error, unknown);
      // Alice's conversation is untouched.
      const page = await alice.s.emitWithAck('get_history', { conversationId: conv._id });
      assert.deepEqual(page.messages, []);
      alice.s.close();
      mallory.s.close();
    });

    test('an oversize message is refused with the limit, and the socket goes on', async () => {
      const alice = await signIn(u('otis'), 'advocate', transport);
      const conv = await groupOf(alice, [], 'Limits');
      const big = await alice.s.emitWithAck('send_message', { conversationId: conv._id, content: 'x'.repeat(10_241) });
      assert.equal(big.error.code, 'INVALID_ARGUMENT');
      assert.match(big.error.message, /content\.text: is 10241 bytes; the maximum is 10240/);
      const exact = await alice.s.emitWithAck('send_message', { conversationId: conv._id, content: 'x'.repeat(10_240) });
      assert.equal(exact.seq, 1);
      // Malformed payloads name the field.
      const bad = await alice.s.emitWithAck('send_message', { conversationId: 42, content: 'x' });
      assert.equal(bad.error.code, 'INVALID_ARGUMENT');
      assert.match(bad.error.message, /conversationId/);
      const notAnObject = await alice.s.emitWithAck('react', 'hello');
      assert.match(notAnObject.error.message, /payload: must be an object/);
      const unknown = await alice.s.emitWithAck('drop_tables', {});
      assert.equal(unknown.error.code, 'INVALID_ARGUMENT');
      assert.match(unknown.error.message, /"drop_tables" is not an event this bridge serves/);
      alice.s.close();
    });
  });
}

test('CORS: long-polling answers the origins of SOCKET_IO_CORS_ORIGIN, and only those', async () => {
  const cors = await startBridge(daemon, ['--cors-origin', 'http://app.example:3000']);
  try {
    const poll = (origin) => fetch(`${cors.url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: origin } });
    const allowed = await poll('http://app.example:3000');
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://app.example:3000');
    const other = await poll('http://evil.example');
    assert.equal(other.headers.get('access-control-allow-origin'), null);
    // A browser of the allowed origin connects over polling.
    const s = socket(cors.url, { token: daemon.token('cora', 'advocate') }, 'polling', { extraHeaders: { Origin: 'http://app.example:3000' } });
    assert.equal((await next(s, 'authenticated')).userId, 'cora');
    s.close();
  } finally {
    await cors.stop();
  }
});

test('sockets that come and go in quick succession all sign in (the shared QUIC connection may be closing under them)', async () => {
  for (let i = 0; i < 100; i++) {
    const a = socket(bridge.url, { token: daemon.token(`churn${i}a`, 'advocate') }, 'websocket');
    const b = socket(bridge.url, { token: daemon.token(`churn${i}b`, 'client') }, 'websocket');
    const [x, y] = await Promise.all([next(a, 'authenticated'), next(b, 'authenticated')]);
    assert.deepEqual([x.userId, y.userId], [`churn${i}a`, `churn${i}b`]);
    a.close();
    b.close();
  }
});

test('every HTTP answer carries the security headers: own scripts only, never framed, no sniffing', async () => {
  const res = await fetch(`${bridge.url}/healthz`);
  const health = await res.json();
  assert.equal(health.ok, true);
  assert.equal(typeof health.sessions, 'number');
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self';/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  // Outside development mode there are no demo accounts to hand out.
  assert.equal((await fetch(`${bridge.url}/api/dev/accounts`)).status, 404);
});


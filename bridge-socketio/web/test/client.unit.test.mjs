// Unit tests of the ChatClient's ordering logic, without a server: the bridge never leaves
// gaps or repeats, so the end-to-end tests cannot reach these paths. The history request is
// replaced on the instance (a fake inside a unit test of one module).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChatClient } from '../dist/client/index.js';

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

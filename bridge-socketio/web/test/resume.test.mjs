// Resume without loss: 10,000 messages, with edits and reactions among them, reach a
// ChatClient whose connection is cut again and again; each entry arrives exactly once and
// in order. Resume rests on the daemon's sequence numbers (the handshake carries the
// client's cursors), not on Socket.IO's connection-state recovery.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ChatClient } from '../dist/client/index.js';
import { startBridge, startDaemon, until } from './harness.mjs';

const MESSAGES = 10_000;
const IN_FLIGHT = 64;
/** Cut the receiver's connection each time it has received this many more entries. */
const CUT_EVERY = 1_500;

let daemon;
let bridge;
/** A bridge that gives up on a full socket queue quickly, for the slow-browser test. */
let strict;

before(async () => {
  daemon = await startDaemon();
  bridge = await startBridge(daemon);
  strict = await startBridge(daemon, ['--socket-buffer', '16', '--slow-socket-grace-ms', '300']);
});

after(async () => {
  await strict?.stop();
  await bridge?.stop();
  await daemon?.stop();
});

test('a client that comes back with its cursors gets what it missed, receipts included, in order, every time', async () => {
  const alice = new ChatClient(bridge.url);
  await alice.connect(daemon.token('ann', 'advocate'));
  const conv = await alice.createConversation({ type: 'group', participants: ['ben', 'cid'], title: 'Away' });
  const cid = new ChatClient(bridge.url);
  await cid.connect(daemon.token('cid', 'advocate'));

  // Ben has not seen the conversation yet: his cursor is at its start.
  let saved = { [conv._id]: 0 };
  const seen = [];
  for (let round = 1; round <= 3; round++) {
    // Ben is away; meanwhile a message, an edit, a reaction, a delete, and Cid reads.
    const m = await alice.sendMessage(conv._id, `round ${round}`);
    await alice.editMessage(conv._id, m.seq, `round ${round}, edited`);
    await alice.react(conv._id, m.seq, '👍');
    const gone = await alice.sendMessage(conv._id, `round ${round}, to delete`);
    await alice.deleteMessage(conv._id, gone.seq);
    await cid.markReadAt(conv._id, gone.seq);

    // Ben comes back with the cursors of his last run.
    const ben = new ChatClient(bridge.url, { cursors: saved });
    const receipts = [];
    ben.on('entry', (e) => e.conversationId === conv._id && seen.push(e));
    ben.on('receipt', (r) => r.conversationId === conv._id && r.userId === 'cid' && receipts.push(r));
    const last = (await alice.history(conv._id, { limit: 1 })).lastSeq;
    await ben.connect(daemon.token('ben', 'client'));
    await until(() => seen.length > 0 && seen[seen.length - 1].seq >= last, `ben to reach seq ${last} in round ${round}`);
    await until(() => receipts.some((r) => r.kind === 'read' && r.seq === gone.seq), `ben to hear that cid read #${gone.seq}`);
    saved = ben.cursors();
    ben.disconnect();
  }
  // Across the three returns: every entry once, in order.
  seen.forEach((e, i) => assert.equal(e.seq, i + 1));
  const kinds = seen.map((e) => e.event?.type ?? 'message');
  assert.deepEqual(kinds.slice(0, 5), ['message', 'edited', 'reaction_added', 'message', 'deleted']);
  assert.equal(seen.length, 15);
  alice.disconnect();
  cid.disconnect();
});

test('rooms joined before a cut are joined again: typing still arrives', async () => {
  const alice = new ChatClient(bridge.url, { socket: { reconnectionDelay: 100, reconnectionDelayMax: 200 } });
  const bob = new ChatClient(bridge.url);
  await alice.connect(daemon.token('amy', 'advocate'));
  await bob.connect(daemon.token('bert', 'client'));
  const conv = await alice.createConversation({ type: 'group', participants: ['bert'], title: 'Rooms' });
  await alice.joinConversation(conv._id);
  await bob.joinConversation(conv._id);
  const states = [];
  alice.on('state', (s) => states.push(s));
  alice.socket.io.engine.close();
  await until(() => states.includes('offline') && alice.state === 'online', 'alice to come back');
  const typing = [];
  alice.on('typing', (t) => typing.push(t));
  // The rejoin is asked for as the new session starts; typing is retried until it is in.
  await until(() => {
    bob.startTyping(conv._id);
    return typing.some((t) => t.userId === 'bert' && t.active);
  }, 'bert typing to reach alice after her reconnect');
  alice.disconnect();
  bob.disconnect();
});

test('a browser that stops reading is disconnected, not buffered without bound, and resyncs from its cursors', { timeout: 300_000 }, async () => {
  const sender = new ChatClient(strict.url, { transports: ['websocket'] });
  const reader = new ChatClient(strict.url, { transports: ['websocket'], socket: { reconnectionDelay: 100, reconnectionDelayMax: 500 } });
  await sender.connect(daemon.token('sol', 'advocate'));
  await reader.connect(daemon.token('ray', 'client'));
  const conv = await sender.createConversation({ type: 'group', participants: ['ray'], title: 'Firehose' });
  const got = [];
  let dropped = 0;
  reader.on('entry', (e) => e.conversationId === conv._id && got.push(e.seq));
  reader.on('state', (s) => s === 'offline' && (dropped += 1));
  const errors = [];
  reader.on('error', (e) => errors.push(e));

  // The reader's socket stops reading (its TCP connection is paused) while 8 MB arrive.
  const tcp = reader.socket.io.engine.transport.ws._socket;
  tcp.pause();
  const text = 'x'.repeat(10_000);
  let last = 0;
  for (let i = 0; i < 800; i += 50) {
    const acks = await Promise.all(Array.from({ length: 50 }, () => sender.sendMessage(conv._id, text)));
    last = Math.max(last, ...acks.map((a) => a.seq));
  }
  // The bridge gives up on it; once it reads again it reconnects and resyncs.
  tcp.resume();
  await until(() => got.length > 0 && got[got.length - 1] >= last, `the reader to reach seq ${last}`, 120_000);
  assert.ok(dropped >= 1, 'the bridge disconnected the stalled reader');
  assert.ok(errors.some((e) => e.code === 'OVERLOADED' && /resume from your cursors/.test(e.message)), `the reason came first: ${JSON.stringify(errors)}`);
  got.forEach((seq, i) => assert.equal(seq, i + 1));
  sender.disconnect();
  reader.disconnect();
});

for (const transport of ['websocket', 'polling']) {
  describe(`over ${transport}`, () => {
    test(`${MESSAGES} messages with edits and reactions, the receiver cut at least five times`, { timeout: 600_000 }, async () => {
      const sender = new ChatClient(bridge.url, { transports: [transport] });
      const receiver = new ChatClient(bridge.url, { transports: [transport], socket: { reconnectionDelay: 100, reconnectionDelayMax: 500 } });
      await sender.connect(daemon.token(`sam-${transport}`, 'advocate'));
      await receiver.connect(daemon.token(`rita-${transport}`, 'client'));
      const conv = await sender.createConversation({ type: 'group', participants: [`rita-${transport}`], title: 'Bulk' });

      // Everything the receiver is given for the conversation, in the order given.
      const entries = [];
      let cuts = 0;
      let nextCut = CUT_EVERY;
      receiver.on('entry', (e) => {
        if (e.conversationId !== conv._id) return;
        entries.push(e);
        if (entries.length >= nextCut) {
          nextCut += CUT_EVERY;
          cuts += 1;
          // A dropped network: the transport closes under the client, which reconnects by itself.
          receiver.socket.io.engine.close();
        }
      });

      // The sender: messages, and every 97th an edit, every 61st a reaction, of earlier ones.
      const expected = { messages: new Map(), edits: 0, reactions: 0 };
      let lastSeq = 0;
      const started = Date.now();
      const work = [];
      for (let i = 1; i <= MESSAGES; i++) work.push(i);
      const workers = Array.from({ length: IN_FLIGHT }, async () => {
        while (work.length) {
          const i = work.shift();
          const id = `bulk-${transport}-${i}`;
          const ack = await sender.sendMessage(conv._id, `message ${i}`, { clientMessageId: id });
          expected.messages.set(id, ack.seq);
          lastSeq = Math.max(lastSeq, ack.seq);
          if (i % 97 === 0) {
            const edit = await sender.editMessage(conv._id, ack.seq, `message ${i} (edited)`);
            expected.edits += 1;
            lastSeq = Math.max(lastSeq, edit.seq);
          }
          if (i % 61 === 0) {
            const r = await sender.react(conv._id, ack.seq, '👍');
            expected.reactions += 1;
            lastSeq = Math.max(lastSeq, r.seq);
          }
        }
      });
      await Promise.all(workers);
      const sent = Date.now();
      // Cuts still due are made now, so that the run has at least five.
      while (cuts < 5) {
        await until(() => receiver.state === 'online', 'the receiver to be back online');
        cuts += 1;
        receiver.socket.io.engine.close();
      }
      await until(() => entries.length > 0 && entries[entries.length - 1].seq >= lastSeq, `the receiver to reach seq ${lastSeq}`, 300_000);
      const done = Date.now();

      // Exactly once, in order: the seqs are 1, 2, 3, … with nothing missing or repeated.
      entries.forEach((e, i) => assert.equal(e.seq, i + 1, `entry ${i} has seq ${e.seq}`));
      assert.equal(entries.length, lastSeq);
      const messages = entries.filter((e) => !e.event);
      assert.equal(messages.length, MESSAGES);
      for (const m of messages) assert.equal(expected.messages.get(m.clientMessageId), m.seq, `${m.clientMessageId} at ${m.seq}`);
      assert.equal(entries.filter((e) => e.event?.type === 'edited').length, expected.edits);
      assert.equal(entries.filter((e) => e.event?.type === 'reaction_added').length, expected.reactions);
      assert.ok(cuts >= 5, `${cuts} cuts`);
      // The client's cursor is where the log ends.
      assert.equal(receiver.cursors()[conv._id], lastSeq);
      console.log(
        `# ${transport}: ${lastSeq} entries (${MESSAGES} messages, ${expected.edits} edits, ${expected.reactions} reactions) ` +
          `sent in ${sent - started} ms, all received ${done - started} ms after the start, across ${cuts} cuts`,
      );
      sender.disconnect();
      receiver.disconnect();
    });
  });
}

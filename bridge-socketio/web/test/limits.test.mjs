// The bridge limits new Socket.IO connections per client address, after a burst, like the
// daemon does for QUIC: the connection past the allowance gets a `connect_error` saying how
// long to wait, and the ones already open go on. Loopback is trusted by default, so this
// bridge is told to trust nothing.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { next, socket, startBridge, startDaemon } from './harness.mjs';

let daemon;
let bridge;

before(async () => {
  daemon = await startDaemon();
  bridge = await startBridge(daemon, ['--trusted-networks', '', '--connections-per-minute', '5', '--connection-burst', '5']);
});

after(async () => {
  await bridge?.stop();
  await daemon?.stop();
});

test('the connection past the burst is refused with the wait, and the open ones go on', async () => {
  const open = [];
  try {
    for (let n = 0; n < 5; n++) {
      const s = socket(bridge.url, { token: daemon.token(`user${n}`, 'advocate') });
      open.push(s);
      await next(s, 'authenticated');
    }
    const sixth = socket(bridge.url, { token: daemon.token('user5', 'advocate') }, 'websocket', { reconnection: false });
    open.push(sixth);
    const refused = await next(sixth, 'connect_error');
    assert.match(refused.message, /^rate_limited: too many new connections from your address; try again in \d+ s$/);
    const ack = await open[0].timeout(10_000).emitWithAck('list_conversations', {});
    assert.ok(!ack.error, `an open socket still works: ${JSON.stringify(ack)}`);
  } finally {
    for (const s of open) s.close();
  }
});

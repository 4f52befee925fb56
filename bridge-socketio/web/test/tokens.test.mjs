// Tokens that expire and sessions an administrator ends, through a real bridge in front of
// a real daemon: the session ends at the token's `exp` unless renewed in place
// (`renew_token`, or the ChatClient's `tokenProvider`); `revoke_sessions` and
// `set_user_active` end a user's sessions at once and keep their old tokens out. No sleeps:
// a socket whose token expires is the clock, and every wait has a deadline.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ChatClient, ChatError } from '../dist/client/index.js';
import { next, nowSecs, socket, startBridge, startDaemon } from './harness.mjs';

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

/** A raw socket signed in with `token`, and its identity. */
async function rawSignIn(token) {
  const s = socket(bridge.url, { token });
  const identity = await next(s, 'authenticated');
  return { s, identity };
}

/** A ChatClient over WebSocket with `options`, its state changes and `unauthorized` events recorded from the start. */
function chatClient(options = {}) {
  const client = new ChatClient(bridge.url, { transports: ['websocket'], requestTimeoutMs: 10_000, ...options });
  const states = [];
  const refusals = [];
  client.on('state', (s) => states.push(s));
  client.on('unauthorized', (e) => refusals.push(e));
  return { client, states, refusals };
}

/** A token provider that mints with `mint()` and counts its calls. */
function provider(mint) {
  const p = async () => {
    p.calls += 1;
    return mint();
  };
  p.calls = 0;
  return p;
}

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

describe('expiry and renewal', () => {
  test('an expiring token: the socket hears "your token expired" and is disconnected; a ChatClient with a tokenProvider renews in place and carries on', async () => {
    // Every token here expires at the same second, about 3 s from now.
    const exp = nowSecs() + 3;
    const short = () => daemon.token('tess', 'advocate', 0, { exp });

    // The clock: a socket with nothing to renew it.
    const clock = await rawSignIn(short());
    assert.match(clock.identity.tokenExpiresAt, RFC3339);
    assert.equal(Date.parse(clock.identity.tokenExpiresAt), exp * 1000, 'authenticated.tokenExpiresAt is the token\'s exp');
    const [expired, closed] = [next(clock.s, 'unauthorized'), next(clock.s, 'disconnect')];

    // A ChatClient with a provider of 60 s tokens: the 3 s token is within the renewal
    // margin (at least 5 s), so it renews at once.
    const fresh = provider(() => daemon.token('tess', 'advocate', 60));
    const renewing = chatClient({ tokenProvider: fresh });
    const renewed = next(renewing.client, 'token_renewed');
    const me = await renewing.client.connect(short());
    assert.equal(Date.parse(me.tokenExpiresAt), exp * 1000);
    const renewal = await renewed;
    assert.ok(Date.parse(renewal.tokenExpiresAt) >= (exp + 50) * 1000, `renewed to ${renewal.tokenExpiresAt}`);
    assert.equal(renewing.client.me.tokenExpiresAt, renewal.tokenExpiresAt);
    const conv = await renewing.client.createConversation({ type: 'group', participants: [], title: 'Renewal' });

    // A ChatClient without a provider, and one whose provider has nothing newer (it gives
    // the same token again): both are signed out at the expiry, and stop.
    const plain = chatClient();
    await plain.client.connect(short());
    const plainOut = next(plain.client, 'unauthorized');
    const sameToken = short();
    const stale = provider(() => sameToken);
    const stuck = chatClient({ tokenProvider: stale });
    await stuck.client.connect(sameToken);
    const stuckOut = next(stuck.client, 'unauthorized');

    // The moment the old tokens expire.
    const e = await expired;
    assert.equal(e.code, 'UNAUTHENTICATED');
    assert.match(e.message, /your token expired/);
    assert.equal(await closed, 'io server disconnect');

    // The renewed client lives on past it: same session, still online, and it sends.
    const ack = await renewing.client.sendMessage(conv._id, 'Still here after the first token expired.');
    assert.ok(ack.seq >= 1);
    assert.equal(renewing.client.state, 'online');
    assert.equal(renewing.client.me.sessionId, me.sessionId, 'renewed in place, not by reconnecting');
    assert.deepEqual(renewing.states, ['connecting', 'online']);
    assert.deepEqual(renewing.refusals, []);
    assert.equal(fresh.calls, 1, 'the provider is asked once; the next renewal is due 12 s before the new expiry');

    for (const [name, c, out] of [['without a provider', plain, plainOut], ['with a provider of the same token', stuck, stuckOut]]) {
      const signedOut = await out;
      assert.equal(signedOut.code, 'UNAUTHENTICATED', name);
      assert.equal(signedOut.reason, 'expired', name);
      assert.equal(signedOut.ended, true, name);
      assert.match(signedOut.message, /your token expired/, name);
      assert.equal(c.client.state, 'closed', `${name}: stopped, not reconnecting with the refused token`);
      assert.equal(c.states.at(-1), 'closed', name);
      assert.equal(c.refusals.length, 1, name);
      await assert.rejects(c.client.sendMessage(conv._id, 'too late'), (err) => err instanceof ChatError && err.code === 'CLOSED', name);
    }
    // Asked again now and then while the token lasted (it gave nothing newer), and once
    // after the expiry; never in a loop.
    assert.ok(stale.calls >= 1 && stale.calls <= 6, `the provider of the same token was asked ${stale.calls} times`);

    clock.s.close();
    renewing.client.disconnect();
    plain.client.disconnect();
    stuck.client.disconnect();
  });

  test('renew_token with another user\'s or another role\'s token is refused with the reason; the session goes on', async () => {
    const { s, identity } = await rawSignIn(daemon.token('uma', 'advocate', 60));

    const other = await s.emitWithAck('renew_token', { token: daemon.token('vic', 'advocate', 3600) });
    assert.equal(other.error?.code, 'UNAUTHENTICATED', JSON.stringify(other));
    assert.match(other.error.message, /the new token is for another user/);
    const role = await s.emitWithAck('renew_token', { token: daemon.token('uma', 'client', 3600) });
    assert.equal(role.error?.code, 'UNAUTHENTICATED', JSON.stringify(role));
    assert.match(role.error.message, /another role/);
    const missing = await s.emitWithAck('renew_token', {});
    assert.equal(missing.error?.code, 'INVALID_ARGUMENT', JSON.stringify(missing));

    // Still signed in, with the old expiry: requests work.
    const conv = await s.emitWithAck('create_conversation', { type: 'group', participants: [], title: 'Still mine' });
    assert.ok(conv._id, JSON.stringify(conv));
    const sent = await s.emitWithAck('send_message', { conversationId: conv._id, content: 'after the refused renewals' });
    assert.ok(sent.seq >= 1, JSON.stringify(sent));

    // A token of the same user and role renews it.
    const ok = await s.emitWithAck('renew_token', { token: daemon.token('uma', 'advocate', 7200) });
    assert.match(ok.tokenExpiresAt, RFC3339);
    assert.ok(Date.parse(ok.tokenExpiresAt) > Date.parse(identity.tokenExpiresAt) + 3_000_000);
    s.close();

    // The ChatClient's renewToken: rejects with the server's code and words, and carries on.
    const { client, refusals } = chatClient();
    const me = await client.connect(daemon.token('uma', 'advocate', 60));
    const refused = await client.renewToken(daemon.token('vic', 'advocate')).catch((e) => e);
    assert.ok(refused instanceof ChatError);
    assert.equal(refused.code, 'UNAUTHENTICATED');
    assert.match(refused.detail, /another user/);
    assert.equal(client.me.tokenExpiresAt, me.tokenExpiresAt);
    const renewed = await client.renewToken(daemon.token('uma', 'advocate', 7200));
    assert.equal(client.me.tokenExpiresAt, renewed.tokenExpiresAt);
    await client.sendMessage(conv._id, 'the client renewed');
    assert.equal(client.state, 'online');
    assert.deepEqual(refusals, []);
    client.disconnect();
  });
});

describe('administration', () => {
  let admin;
  before(async () => {
    admin = new ChatClient(bridge.url, { transports: ['websocket'] });
    await admin.connect(daemon.token('root', 'admin'));
  });
  after(() => admin?.disconnect());

  test('revoke_sessions ends the user\'s sockets at once; old tokens are refused, newer ones work; only for admins', async () => {
    const rhea = (ttl) => daemon.token('rhea', 'advocate', ttl);
    const one = await rawSignIn(rhea());
    const two = await rawSignIn(rhea());
    // Not an admin: FORBIDDEN, over the socket and through the client.
    const forbidden = await one.s.emitWithAck('revoke_sessions', { userId: 'root' });
    assert.equal(forbidden.error?.code, 'FORBIDDEN', JSON.stringify(forbidden));
    // An unknown user: NOT_FOUND.
    const unknown = await admin.revokeSessions('nobody-at-all').catch((e) => e);
    assert.equal(unknown.code, 'NOT_FOUND');

    // ChatClients of the same user: without a provider; with one that can only give
    // tokens issued before the revocation; with one that gives newer tokens.
    const plain = chatClient();
    await plain.client.connect(rhea());
    const oldTokens = provider(() => daemon.token('rhea', 'advocate', 3600, { iat: nowSecs() - 1 }));
    const fenced = chatClient({ tokenProvider: oldTokens });
    await fenced.client.connect(rhea());
    const newTokens = provider(() => daemon.laterToken('rhea', 'advocate'));
    const recovering = chatClient({ tokenProvider: newTokens });
    const before = await recovering.client.connect(rhea());
    const conv = await recovering.client.createConversation({ type: 'group', participants: [], title: 'After revocation' });

    const ended = [one, two].map(({ s }) => Promise.all([next(s, 'unauthorized'), next(s, 'disconnect')]));
    const [plainOut, fencedOut] = [next(plain.client, 'unauthorized'), next(fenced.client, 'unauthorized')];
    const back = next(recovering.client, 'state', (s) => s === 'online');
    await admin.revokeSessions('rhea');

    for (const [i, done] of ended.entries()) {
      const [e, reason] = await done;
      assert.equal(e.code, 'UNAUTHENTICATED', `socket ${i + 1}`);
      assert.match(e.message, /revoked by an administrator/, `socket ${i + 1}`);
      assert.equal(reason, 'io server disconnect', `socket ${i + 1}`);
    }
    const p = await plainOut;
    assert.deepEqual([p.reason, p.ended, plain.client.state], ['revoked', true, 'closed']);
    assert.match(p.message, /revoked by an administrator/);
    // One try with the provider's token, which is refused as revoked; then it stops.
    const f = await fencedOut;
    assert.deepEqual([f.reason, f.ended, fenced.client.state], ['revoked', true, 'closed']);
    assert.match(f.message, /this token was revoked/);
    assert.equal(oldTokens.calls, 1);
    // A provider of newer tokens: back with a new session, and it sends.
    await back;
    assert.equal(newTokens.calls, 1);
    assert.notEqual(recovering.client.me.sessionId, before.sessionId);
    assert.deepEqual(recovering.refusals, []);
    assert.ok((await recovering.client.sendMessage(conv._id, 'back after the revocation')).seq >= 1);

    // Reconnecting with an old token: refused, and the message says why.
    const again = socket(bridge.url, { token: rhea() });
    assert.match((await next(again, 'connect_error')).message, /^unauthorized: .*revoked/);
    again.close();
    // A token issued after the revocation works.
    const later = await rawSignIn(daemon.laterToken('rhea', 'advocate'));
    assert.equal(later.identity.userId, 'rhea');
    later.s.close();
    for (const c of [plain, fenced, recovering]) c.client.disconnect();
  });

  test('set_user_active(false) signs the user out and keeps them out; true lets them back with a new token', async () => {
    const { s } = await rawSignIn(daemon.token('dora', 'advocate'));
    const asked = provider(() => daemon.laterToken('dora', 'advocate'));
    const dora = chatClient({ tokenProvider: asked });
    await dora.client.connect(daemon.token('dora', 'advocate'));

    // Not for non-admins, and `active` must be said.
    const forbidden = await dora.client.setUserActive('dora', false).catch((e) => e);
    assert.equal(forbidden.code, 'FORBIDDEN');
    const vague = await s.emitWithAck('set_user_active', { userId: 'dora' });
    assert.equal(vague.error?.code, 'INVALID_ARGUMENT', JSON.stringify(vague));
    assert.equal((await admin.setUserActive('nobody-at-all', false).catch((e) => e)).code, 'NOT_FOUND');

    const [e, closed, out] = [next(s, 'unauthorized'), next(s, 'disconnect'), next(dora.client, 'unauthorized')];
    await admin.setUserActive('dora', false);
    assert.equal((await e).code, 'UNAUTHENTICATED');
    assert.match((await e).message, /deactivated/);
    assert.equal(await closed, 'io server disconnect');
    const signedOut = await out;
    assert.deepEqual([signedOut.reason, signedOut.ended, dora.client.state], ['deactivated', true, 'closed']);
    assert.equal(asked.calls, 0, 'no fresh token helps a deactivated account: the provider is not asked');

    // Signing in is refused, even with a new token.
    const refused = socket(bridge.url, { token: daemon.laterToken('dora', 'advocate') });
    assert.match((await next(refused, 'connect_error')).message, /^unauthorized: this account is deactivated/);
    refused.close();
    const client = chatClient();
    const rejected = await client.client.connect(daemon.laterToken('dora', 'advocate')).catch((err) => err);
    assert.ok(rejected instanceof ChatError, `connect rejected with ${rejected}`);
    assert.match(rejected.message, /deactivated/);
    assert.deepEqual([client.refusals[0]?.reason, client.refusals[0]?.ended], ['deactivated', false]);

    // Reactivated: a token issued after the deactivation signs in (older ones stay
    // refused: deactivating revoked them).
    await admin.setUserActive('dora', true);
    const old = socket(bridge.url, { token: daemon.token('dora', 'advocate', 3600, { iat: nowSecs() - 1 }) });
    assert.match((await next(old, 'connect_error')).message, /revoked/);
    old.close();
    const backIn = await rawSignIn(daemon.laterToken('dora', 'advocate'));
    assert.equal(backIn.identity.userId, 'dora');
    backIn.s.close();
  });
});

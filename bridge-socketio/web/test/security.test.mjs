// The security suite through the bridge (issue 16, eighth part, the bridge's side): what an
// attacker can do with the official socket.io-client, or with a raw TCP connection, to a
// real bridge in front of a real daemon on loopback. Missing, bad, forged and expired
// tokens, a conversation one is not in, an oversize message, malformed payloads and the
// per-address connection limit are in flows.test.mjs, tokens.test.mjs and limits.test.mjs;
// this file covers the rest.
//
// Every test keeps a bystander: another user with a conversation of their own and a
// partner in it, who must still send and receive after the attack. Nothing sleeps to
// synchronise: every wait is for an event or a closed connection, with a deadline that
// fails the test.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { h } from '../dist/app/dom.js';
import { renderMarkdown } from '../dist/app/markdown.js';
import { EVENT_TIMEOUT_MS, next, nowSecs, record, socket, startBridge, startDaemon } from './harness.mjs';

/** Every test: bounded in time (the slow-connection tests wait up to 45 s by design). */
const BOUNDED = { timeout: 90_000 };
const ISSUER = 'https://login.firm.example';
const AUDIENCE = 'legalchat';
/** The daemon's default message limit, which the harness raises for the other files. */
const MESSAGES_PER_MINUTE = 100;
/** What the bridge reads from a browser at most (`--max-payload`, its default). */
const MAX_PAYLOAD = 262_144;
/** A request's head must be complete within this: the bridge's head timeout is 15 s, and 10 s spare. */
const HEAD_DEADLINE_MS = 25_000;
/** A stalled upload body is the daemon's to end (30 s without a byte), and the bridge's to answer: 15 s spare. */
const BODY_DEADLINE_MS = 45_000;

let daemon;
let bridge;

before(async () => {
  // An issuer and an audience are configured, so that tokens of another issuer or for
  // another application can be refused; and the production message limit.
  daemon = await startDaemon(['--jwt-issuer', ISSUER, '--jwt-audience', AUDIENCE, '--messages-per-minute', String(MESSAGES_PER_MINUTE)]);
  bridge = await startBridge(daemon);
});

after(async () => {
  await bridge?.stop();
  await daemon?.stop();
});

const b64 = (part) => Buffer.from(typeof part === 'string' ? part : JSON.stringify(part)).toString('base64url');
/** A JWT of `header` and `claims` (objects, or JSON text to keep duplicate keys), signed by `sign`, or unsigned. */
function jwt(header, claims, sign = null) {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${sign ? sign(input) : ''}`;
}
const hmac = (hash, key) => (input) => crypto.createHmac(hash, key).update(input).digest('base64url');
const es256 = (privateKey) => (input) => crypto.sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url');
const rs256 = (privateKey) => (input) => crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url');
const HS256 = { alg: 'HS256', typ: 'JWT' };

/** The claims of a good token of this file's daemon. */
function claimsOf(user, role = 'advocate', extra = {}) {
  const now = nowSecs();
  return { sub: user, role, iat: now, exp: now + 3600, iss: ISSUER, aud: AUDIENCE, ...extra };
}
/** A token this file's daemon accepts (with the secret the harness gave it). */
const tokenFor = (user, role = 'advocate', extra = {}) => jwt(HS256, claimsOf(user, role, extra), hmac('sha256', daemon.secret));

/** A request with its acknowledgement, or a rejection after the deadline. */
const ask = (s, event, payload, timeoutMs = EVENT_TIMEOUT_MS) => s.timeout(timeoutMs).emitWithAck(event, payload);

/** A signed-in raw socket, its events recorded from the start. */
async function signIn(user, role = 'advocate', transport = 'websocket', { url = bridge.url, token = tokenFor(user, role), auth = {} } = {}) {
  const s = socket(url, { token, ...auth }, transport);
  const events = record(s);
  const identity = await next(s, 'authenticated');
  return { s, events, identity };
}

/** A conversation of `creator` with `others`, checked. */
async function groupOf(creator, others, title) {
  const c = await ask(creator.s ?? creator, 'create_conversation', { type: 'group', participants: others, title });
  assert.match(c._id ?? '', /^[0-9a-f]{32}$/, `create_conversation answered ${JSON.stringify(c)}`);
  return c;
}

/** The first of `events` on `emitter` as `{event, value}`; rejects after the deadline. Leaves no listener or timer behind. */
function firstOf(emitter, events, timeoutMs = EVENT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const handlers = new Map();
    const done = () => {
      clearTimeout(timer);
      for (const [event, handler] of handlers) emitter.off(event, handler);
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`none of ${events.join(', ')} within ${timeoutMs} ms`));
    }, timeoutMs);
    for (const event of events) {
      const handler = (value) => {
        done();
        resolve({ event, value });
      };
      handlers.set(event, handler);
      emitter.on(event, handler);
    }
  });
}

/**
 * A socket connected without a token, checked: a request made before authenticating is
 * answered UNAUTHENTICATED (an event sent the instant a socket connects is answered too:
 * the test "an authenticate event sent the instant…" below).
 */
async function listenedTo(url) {
  const s = socket(url, {});
  await next(s, 'connect');
  const probe = await ask(s, 'list_conversations', {});
  assert.equal(probe?.error?.code, 'UNAUTHENTICATED', `a request before authenticating: ${JSON.stringify(probe)}`);
  return s;
}

/**
 * A bystander: `user`'s socket with a conversation of their own and a partner in it. After
 * an attack, `stillWorks` has the bystander send (acknowledged, and heard by the partner)
 * and receive the partner's answer.
 */
async function bystander(user, { url = bridge.url, mint = (u) => tokenFor(u) } = {}) {
  const friend = `${user}-partner`;
  const me = socket(url, { token: mint(user) });
  const partner = socket(url, { token: mint(friend) });
  await Promise.all([next(me, 'authenticated'), next(partner, 'authenticated')]);
  const conv = await groupOf(me, [friend], `${user}'s own`);
  let n = 0;
  return {
    user,
    async stillWorks(attack) {
      n += 1;
      const text = `bystander message ${n}, after ${attack}`;
      const heard = next(partner, 'receive_message', (m) => m.conversationId === conv._id && m.content?.text === text);
      const ack = await ask(me, 'send_message', { conversationId: conv._id, content: text });
      assert.ok(ack.seq >= 1, `the bystander's send after ${attack}: ${JSON.stringify(ack)}`);
      assert.equal((await heard)._id, ack._id, `the partner hears the bystander after ${attack}`);
      const answer = `answer ${n}, after ${attack}`;
      const back = next(me, 'receive_message', (m) => m.conversationId === conv._id && m.content?.text === answer);
      const ack2 = await ask(partner, 'send_message', { conversationId: conv._id, content: answer });
      assert.ok(ack2.seq > ack.seq, `the partner's answer after ${attack}: ${JSON.stringify(ack2)}`);
      assert.equal((await back)._id, ack2._id, `the bystander receives after ${attack}`);
    },
    close() {
      me.close();
      partner.close();
    },
  };
}

const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');
/** A PDF as far as the server can tell. */
const pdfLike = (size) => Buffer.concat([Buffer.from('%PDF-1.7\n'), crypto.randomBytes(size)]);
const randomId = () => crypto.randomBytes(16).toString('hex');

describe('authentication bypass', () => {
  /** Every token an attacker might try on this file's daemon, with what its refusal says. */
  function attempts() {
    const good = claimsOf('alice');
    const signed = jwt(HS256, good, hmac('sha256', daemon.secret));
    const [header, , signature] = signed.split('.');
    /** The good token with its claims edited and its signature kept. */
    const edited = (claims) => `${header}.${b64(claims)}.${signature}`;
    const resigned = (claims) => jwt(HS256, claims, hmac('sha256', daemon.secret));
    const without = (claim) => Object.fromEntries(Object.entries(good).filter(([k]) => k !== claim));
    const { privateKey: ec } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const { privateKey: rsa } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const now = nowSecs();
    // A refusal names its reason; `alg: none` and a missing `exp` only need to be refused
    // here (the test below asks that they are named too).
    const refused = /^unauthorized: token /;
    return [
      ['alg none, unsigned', jwt({ alg: 'none', typ: 'JWT' }, good), refused],
      ['alg none, with the good signature', jwt({ alg: 'none', typ: 'JWT' }, good) + signature, refused],
      ['alg None', jwt({ alg: 'None', typ: 'JWT' }, good), refused],
      ['no alg at all', jwt({ typ: 'JWT' }, good, hmac('sha256', daemon.secret)), refused],
      ['HS512 with the right secret', jwt({ alg: 'HS512', typ: 'JWT' }, good, hmac('sha512', daemon.secret)), /disallowed algorithm/],
      ['RS256 with a key of its own', jwt({ alg: 'RS256', typ: 'JWT' }, good, rs256(rsa)), /disallowed algorithm/],
      ['ES256 with a key of its own', jwt({ alg: 'ES256', typ: 'JWT' }, good, es256(ec)), /disallowed algorithm/],
      ['HS256 with the wrong key', jwt(HS256, good, hmac('sha256', 'an-attackers-own-secret-of-32-bytes!!')), /signature is invalid/],
      ['expired an hour ago', resigned({ ...good, exp: now - 3600 }), /has expired/],
      ['not valid for an hour (nbf)', resigned({ ...good, nbf: now + 3600 }), /not valid yet/],
      ['for another audience', resigned({ ...good, aud: 'another-app' }), /audience is not accepted/],
      ['without an audience', resigned(without('aud')), /claim aud is missing/],
      ['from another issuer', resigned({ ...good, iss: 'https://evil.example' }), /issuer is not accepted/],
      ['without an issuer', resigned(without('iss')), /claim iss is missing/],
      ['without exp', resigned(without('exp')), refused],
      ['a role forged into a signed token', edited({ ...good, role: 'admin' }), /signature is invalid/],
      ['another user forged into a signed token', edited({ ...good, sub: 'root' }), /signature is invalid/],
      ['a role the daemon does not know', resigned({ ...good, role: 'superuser' }), /claim role/],
      ['the admin role in capitals', resigned({ ...good, role: 'ADMIN' }), /claim role/],
      ['the admin role in a list', resigned({ ...good, role: ['admin'] }), refused],
      ['two role claims', resigned(JSON.stringify(good).replace('"role":"advocate"', '"role":"advocate","role":"admin"')), refused],
      ['a NUL in the user id', resigned({ ...good, sub: 'alice\u0000admin' }), /claim sub/],
      ['three dots', '...', /^unauthorized: /],
    ];
  }

  test('through the handshake: each is a connect_error with the reason, and nothing else reaches the socket', BOUNDED, async () => {
    const by = await bystander('hs-bystander');
    try {
      for (const [what, token, reason] of attempts()) {
        const s = socket(bridge.url, { token });
        const events = record(s);
        const refusal = await next(s, 'connect_error');
        assert.match(refusal.message, /^unauthorized: /, what);
        assert.match(refusal.message, reason, `${what}: ${refusal.message}`);
        assert.equal(s.connected, false, what);
        assert.deepEqual(events, [], `${what}: the refused socket heard something`);
        s.close();
      }
      // A token that is not a string at all is refused by the bridge, naming the field.
      const odd = socket(bridge.url, { token: { alg: 'none' } });
      assert.equal((await next(odd, 'connect_error')).message, 'unauthorized: auth.token must be a string (the JWT)');
      odd.close();
      // The good token the attempts were made from signs in: each refusal was about what changed.
      const alice = await signIn('alice');
      assert.deepEqual([alice.identity.userId, alice.identity.role], ['alice', 'advocate']);
      alice.s.close();
      await by.stillWorks('the refused handshakes');
    } finally {
      by.close();
    }
  });

  test('through the authenticate event: each is refused in the acknowledgement and by unauthorized, and the socket is closed', BOUNDED, async () => {
    const by = await bystander('ae-bystander');
    try {
      for (const [what, token, reason] of attempts()) {
        const s = await listenedTo(bridge.url);
        const events = record(s);
        const [unauthorized, closed] = [next(s, 'unauthorized'), next(s, 'disconnect')];
        const ack = await ask(s, 'authenticate', { token });
        assert.equal(ack.error?.code, 'UNAUTHENTICATED', `${what}: ${JSON.stringify(ack)}`);
        assert.match(ack.error.message, reason, what);
        const told = await unauthorized;
        assert.deepEqual(told, { code: 'UNAUTHENTICATED', message: ack.error.message }, what);
        assert.equal(await closed, 'io server disconnect', what);
        assert.deepEqual(events.map(([name]) => name), ['unauthorized'], `${what}: the refused socket heard more`);
        s.close();
      }
      await by.stillWorks('the refused authenticate events');
    } finally {
      by.close();
    }
  });

  test('an authenticate event sent the instant the socket connects is answered, not lost before the bridge listens', BOUNDED, async (t) => {
    // What a browser app does: connect without a token, and on `connect` send it. The
    // bridge must not acknowledge the connection before it listens for `authenticate`,
    // or the event is dropped and the socket is signed out ten seconds later as tokenless.
    // One socket at a time (the window is narrow), on a bridge that signs a tokenless
    // socket out after 1 s: a lost event shows as that sign-out.
    const impatient = await startBridge(daemon, ['--auth-timeout-ms', '1000']);
    const by = await bystander('race-bystander', { url: impatient.url });
    const attempts = 200;
    const lost = [];
    try {
      for (let i = 0; i < attempts; i++) {
        const s = socket(impatient.url, {});
        await next(s, 'connect');
        const signedOut = firstOf(s, ['unauthorized']);
        signedOut.catch(() => {});
        const answered = ask(s, 'authenticate', { token: tokenFor(`race-${i}`) }).then(
          (ack) => ({ event: 'ack', value: ack }),
          (e) => ({ event: 'no ack', value: e.message }),
        );
        const outcome = await Promise.race([answered, signedOut]);
        if (outcome.event !== 'ack') lost.push(`#${i}: ${JSON.stringify(outcome.value)}`);
        else assert.equal(outcome.value.userId, `race-${i}`, JSON.stringify(outcome.value));
        s.close();
      }
      t.diagnostic(`${lost.length} of ${attempts} authenticate events lost`);
      await by.stillWorks('sockets that authenticate at once');
      assert.deepEqual(lost, [], `${lost.length} of ${attempts} authenticate events sent on connect were never answered`);
    } finally {
      by.close();
      await impatient.stop();
    }
  });

  test('alg none and a token without exp are refused with a reason that names them', BOUNDED, async () => {
    // A reason a person can act on: "claim payload is missing or invalid" says neither.
    const by = await bystander('why-bystander');
    try {
      const cases = [
        ['alg none', jwt({ alg: 'none', typ: 'JWT' }, claimsOf('alice')), /^unauthorized: token uses a disallowed algorithm$/],
        ['without exp', jwt(HS256, { ...claimsOf('alice'), exp: undefined }, hmac('sha256', daemon.secret)), /^unauthorized: token claim exp is missing or invalid$/],
      ];
      const unclear = [];
      for (const [what, token, reason] of cases) {
        const s = socket(bridge.url, { token });
        const { message } = await next(s, 'connect_error');
        s.close();
        if (!reason.test(message)) unclear.push(`${what}: ${JSON.stringify(message)}`);
      }
      await by.stillWorks('the refusals');
      assert.deepEqual(unclear, [], 'refusals that do not say why');
    } finally {
      by.close();
    }
  });

  test('claims the daemon does not read confer nothing: a signed token with admin: true, roles or scope is its role claim and no more', BOUNDED, async () => {
    const by = await bystander('claims-bystander');
    const extra = { admin: true, isAdmin: true, roles: ['admin'], scope: 'admin legalchat:admin', groups: ['admins'], 'https://legalchat.example/role': 'admin' };
    const mallory = await signIn('mallory', 'client', 'websocket', { token: tokenFor('mallory', 'client', extra) });
    try {
      assert.deepEqual([mallory.identity.userId, mallory.identity.role], ['mallory', 'client']);
      // What only global admins may do is refused, and the bystander keeps their session.
      for (const [event, payload] of [
        ['revoke_sessions', { userId: by.user }],
        ['set_user_active', { userId: by.user, active: false }],
        ['get_audit', { conversationId: randomId(), seq: 1 }],
      ]) {
        const ack = await ask(mallory.s, event, payload);
        assert.equal(ack.error?.code, 'FORBIDDEN', `${event}: ${JSON.stringify(ack)}`);
      }
      // A client may not open a group either: the role claim is all that counts.
      const group = await ask(mallory.s, 'create_conversation', { type: 'group', participants: [], title: 'Admins only' });
      assert.equal(group.error?.code, 'FORBIDDEN', JSON.stringify(group));
      await by.stillWorks('a token with made-up admin claims');
    } finally {
      mallory.s.close();
      by.close();
    }
  });

  test('algorithm confusion against a public-key daemon: HS256 keyed with its public key, alg none and another key pair are refused', BOUNDED, async () => {
    // The identity provider's key pair: the daemon knows only the public half, and pins ES256.
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const publicPem = publicKey.export({ type: 'spki', format: 'pem' });
    const dir = mkdtempSync(join(tmpdir(), 'legalchat-idp-'));
    writeFileSync(join(dir, 'idp-public.pem'), publicPem);
    const idp = await startDaemon(['--jwt-algorithm', 'ES256', '--jwt-public-key', join(dir, 'idp-public.pem')]);
    const front = await startBridge(idp);
    let by;
    try {
      const claims = (user) => ({ sub: user, role: 'advocate', iat: nowSecs(), exp: nowSecs() + 600 });
      const mint = (user) => jwt({ alg: 'ES256', typ: 'JWT' }, claims(user), es256(privateKey));
      by = await bystander('idp-bystander', { url: front.url, mint });
      const { privateKey: stranger } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const cases = [
        ['HS256 keyed with the public key (PEM)', jwt(HS256, claims('alice'), hmac('sha256', publicPem)), /disallowed algorithm/],
        ['HS256 keyed with the public key (DER)', jwt(HS256, claims('alice'), hmac('sha256', publicKey.export({ type: 'spki', format: 'der' }))), /disallowed algorithm/],
        ['alg none', jwt({ alg: 'none', typ: 'JWT' }, claims('alice')), /^unauthorized: token /],
        ['ES256 of another key pair', jwt({ alg: 'ES256', typ: 'JWT' }, claims('alice'), es256(stranger)), /signature is invalid/],
      ];
      for (const [what, token, reason] of cases) {
        const s = socket(front.url, { token });
        const events = record(s);
        assert.match((await next(s, 'connect_error')).message, reason, what);
        assert.deepEqual(events, [], what);
        s.close();
        const t = await listenedTo(front.url);
        const ack = await ask(t, 'authenticate', { token });
        assert.equal(ack.error?.code, 'UNAUTHENTICATED', `${what} (authenticate): ${JSON.stringify(ack)}`);
        assert.match(ack.error.message, reason, `${what} (authenticate)`);
        t.close();
      }
      // The identity provider's own token signs in: the refusals were about the algorithm and key.
      const alice = await signIn('alice', 'advocate', 'websocket', { url: front.url, token: mint('alice') });
      assert.equal(alice.identity.userId, 'alice');
      alice.s.close();
      await by.stillWorks('algorithm confusion');
    } finally {
      by?.close();
      await front.stop();
      await idp.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Renders `text` as the web app does (`message-list.ts`: Markdown through `renderMarkdown`,
 * plain text as a child of `h`) against a minimal DOM, and returns what was made: the
 * element names, whether any element got an attribute or a listener, and the text.
 */
function renderedByTheApp(text, markdown) {
  class Node {
    constructor(tag) {
      Object.assign(this, { tag, attributes: {}, listeners: [], children: [] });
    }
    append(...children) {
      for (const c of children) this.children.push(typeof c === 'string' ? { text: c } : c);
    }
    setAttribute(name, value) {
      this.attributes[name] = value;
    }
    addEventListener(name) {
      this.listeners.push(name);
    }
    set className(value) {
      this.attributes.class = value;
    }
  }
  const saved = globalThis.document;
  // Only for this synchronous render: socket.io-client looks for a `document` to decide
  // whether it runs in a browser.
  globalThis.document = { createDocumentFragment: () => new Node('#fragment'), createElement: (tag) => new Node(tag) };
  let root;
  try {
    root = h('div', {}, markdown ? renderMarkdown(text) : text);
  } finally {
    globalThis.document = saved;
  }
  const tags = [];
  let decorated = false;
  const walk = (node) => {
    if ('text' in node) return node.text;
    if (node !== root && node.tag !== '#fragment') tags.push(node.tag);
    decorated ||= node !== root && (Object.keys(node.attributes).length > 0 || node.listeners.length > 0);
    return node.children.map(walk).join('');
  };
  const shown = walk(root);
  return { tags, decorated, shown };
}

describe('message injection', () => {
  const HOSTILE = [
    '<script>alert(document.cookie)</script>',
    '<img src=x onerror=alert(1)>',
    '"><svg onload=alert(1)>',
    '[the brief](javascript:alert(1))',
    '<a href="javascript:alert(1)">the brief</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">open</a>',
    '![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)',
    '**bold** <iframe src=//evil.example></iframe>',
    '`<b>code</b>` and ```\n<script>alert(1)</script>\n```',
    'invoice\u202Efdp.exe, \u2066isolated\u2069, zero\u200Bwidth\u200D joiners',
    '{{constructor.constructor("alert(1)")()}} ${alert(1)} __proto__',
    "Robert'); DROP TABLE messages;--",
    'line\u2028separator\u2029paragraph, tab\tand newline\n',
    '👩🏽‍⚖️ e\u0301 \uFEFF',
  ];

  test('hostile text round-trips byte for byte to the receiver and in history, and the web app renders it as text', BOUNDED, async () => {
    const by = await bystander('xss-bystander');
    const mallory = await signIn('xss-mallory');
    const alice = await signIn('xss-alice');
    try {
      const conv = await groupOf(mallory, ['xss-alice'], 'Injection');
      const sent = [];
      for (const [n, text] of HOSTILE.entries()) {
        for (const format of ['plain', 'markdown']) {
          const clientMessageId = `hostile-${n}-${format}`;
          const heard = next(alice.s, 'receive_message', (m) => m.clientMessageId === clientMessageId);
          const content = format === 'plain' ? text : { text, format };
          const ack = await ask(mallory.s, 'send_message', { conversationId: conv._id, content, clientMessageId });
          assert.ok(ack.seq >= 1, `${JSON.stringify(text)} (${format}): ${JSON.stringify(ack)}`);
          const m = await heard;
          assert.ok(Buffer.from(m.content.text).equals(Buffer.from(text)), `${JSON.stringify(text)} (${format}) arrived as ${JSON.stringify(m.content.text)}`);
          assert.deepEqual([m.content.type, m.content.format], ['text', format]);
          sent.push({ seq: ack.seq, text, format });
        }
      }
      // The render check sees the elements the renderer makes, and their text.
      assert.deepEqual(renderedByTheApp('**bold** and `<code>`', true), { tags: ['strong', 'code'], decorated: false, shown: 'bold and <code>' });
      // As stored: the history gives every text back unchanged.
      const page = await ask(alice.s, 'get_history', { conversationId: conv._id, limit: 100 });
      for (const { seq, text, format } of sent) {
        const m = page.messages.find((x) => x.seq === seq);
        assert.ok(m && Buffer.from(m.content.text).equals(Buffer.from(text)), `history #${seq}: ${JSON.stringify(m?.content)}`);
        // And shown by the web app: only its own Markdown elements, bare, and the hostile
        // markup as text — every `<` of the source is still there, as a character.
        const { tags, decorated, shown } = renderedByTheApp(m.content.text, format === 'markdown');
        assert.deepEqual(tags.filter((t) => !['strong', 'em', 'code', 'pre'].includes(t)), [], `${JSON.stringify(text)}: elements`);
        assert.equal(decorated, false, `${JSON.stringify(text)}: an attribute or a listener`);
        assert.equal(shown.split('<').length, text.split('<').length, `${JSON.stringify(text)} shown as ${JSON.stringify(shown)}`);
        if (format === 'plain') assert.equal(shown, text);
      }
      await by.stillWorks('hostile text');
    } finally {
      mallory.s.close();
      alice.s.close();
      by.close();
    }
  });

  test('control characters are refused in every text field, naming the field; nothing of them is stored or delivered', BOUNDED, async () => {
    const by = await bystander('ctl-bystander');
    const mallory = await signIn('ctl-mallory');
    const alice = await signIn('ctl-alice');
    try {
      const conv = await groupOf(mallory, ['ctl-alice'], 'Control');
      const first = await ask(mallory.s, 'send_message', { conversationId: conv._id, content: 'a clean message' });
      const id = conv._id;
      const unit = (ch) => `U\\+${ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
      const wrong = [];
      // NUL, BEL, ESC (terminal escapes), DEL and NEL (a C1 control).
      for (const ch of ['\u0000', '\u0007', '\u001b', '\u007f', '\u0085']) {
        const bad = `a${ch}b`;
        const control = (field) => new RegExp(`^${field}: contains the control character ${unit(ch)}$`);
        const cases = [
          ['send_message', { conversationId: id, content: bad }, control('content\\.text')],
          ['send_message', { conversationId: id, content: { text: bad, format: 'markdown' } }, control('content\\.text')],
          ['edit_message', { conversationId: id, seq: first.seq, content: bad }, control('content\\.text')],
          ['create_conversation', { type: 'group', participants: [], title: bad }, control('title')],
          ['update_conversation', { conversationId: id, title: bad }, control('title')],
          ['create_conversation', { type: 'group', participants: [], title: 'Fine', description: bad }, control('description')],
          ['update_conversation', { conversationId: id, description: bad }, control('description')],
          ['send_message', { conversationId: id, content: 'x', clientMessageId: bad }, /^client_?message_?id: /i],
          ['add_participants', { conversationId: id, userIds: [bad] }, /^user_?ids: /i],
          ['react', { conversationId: id, seq: first.seq, emoji: ch }, /^emoji: /],
        ];
        for (const [event, payload, reason] of cases) {
          const ack = await ask(mallory.s, event, payload);
          if (ack.error?.code !== 'INVALID_ARGUMENT' || !reason.test(ack.error.message)) {
            wrong.push(`${event} ${JSON.stringify(payload)}: ${JSON.stringify(ack).slice(0, 160)}`);
          }
        }
      }
      // A lone surrogate cannot be text at all.
      const surrogate = await ask(mallory.s, 'send_message', { conversationId: id, content: 'half \uD800 a pair' });
      if (surrogate.error?.code !== 'INVALID_ARGUMENT') wrong.push(`a lone surrogate: ${JSON.stringify(surrogate)}`);

      // A file's name is sanitized rather than refused: no control or bidirectional character survives.
      const file = pdfLike(100);
      const ticket = await ask(mallory.s, 'start_upload', { conversationId: id, fileName: 're\u0007port\u202Efdp.exe\u0000.pdf', size: file.length, sha256: sha256(file) });
      assert.ok(ticket.fileName, JSON.stringify(ticket));
      assert.doesNotMatch(ticket.fileName, /[\p{Cc}\u202A-\u202E\u2066-\u2069]/u, ticket.fileName);

      // Nothing with a control character reached Alice, or the log.
      const marker = next(alice.s, 'receive_message', (m) => m.content?.text === 'the end');
      await ask(mallory.s, 'send_message', { conversationId: id, content: 'the end' });
      await marker;
      const delivered = alice.events.filter(([name]) => name === 'receive_message').map(([, m]) => m.content.text);
      assert.deepEqual(delivered, ['a clean message', 'the end']);
      const page = await ask(alice.s, 'get_history', { conversationId: id });
      assert.ok(page.messages.every((m) => !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/.test(m.content?.text ?? '')));
      await by.stillWorks('control characters');
      assert.deepEqual(wrong, [], 'control characters that were not refused with INVALID_ARGUMENT naming the field');
    } finally {
      mallory.s.close();
      alice.s.close();
      by.close();
    }
  });
});

describe('cross-conversation access', () => {
  /**
   * Alice's conversation with Bob and Brenda, with messages, a reply, a reaction, a pin, a
   * read receipt and a file; and Carl, who is not in it but has its ids.
   */
  async function privileged(prefix) {
    const [alice, bob, brenda, carl] = [`${prefix}-alice`, `${prefix}-bob`, `${prefix}-brenda`, `${prefix}-carl`];
    const a = await signIn(alice);
    const b = await signIn(bob);
    const r = await signIn(brenda);
    const c = await signIn(carl);
    const secret = (what) => `${prefix} privileged ${what} ${crypto.randomBytes(4).toString('hex')}`;
    const title = secret('title');
    const description = secret('description');
    const conv = await groupOf(a, [bob, brenda], title);
    await ask(a.s, 'update_conversation', { conversationId: conv._id, description });
    await ask(b.s, 'join_room', { conversationId: conv._id });
    const texts = [secret('settlement floor'), secret('reply')];
    const m1 = await ask(a.s, 'send_message', { conversationId: conv._id, content: texts[0] });
    const m2 = await ask(b.s, 'send_message', { conversationId: conv._id, content: texts[1], replyTo: m1.seq });
    await ask(b.s, 'react', { conversationId: conv._id, seq: m1.seq, emoji: '👍' });
    await ask(a.s, 'pin_message', { conversationId: conv._id, seq: m1.seq });
    await ask(b.s, 'message_read', { conversationId: conv._id, seq: m2.seq });
    const file = pdfLike(2_000);
    const fileName = `${prefix}-privileged-memo.pdf`;
    const ticket = await ask(a.s, 'start_upload', { conversationId: conv._id, fileName, size: file.length, sha256: sha256(file) });
    const put = await fetch(`${bridge.url}${ticket.url}`, { method: 'PUT', body: file });
    assert.equal(put.status, 201, await put.clone().text());
    const { attachment } = await put.json();
    const m3 = await ask(a.s, 'send_message', { conversationId: conv._id, content: { text: '', type: 'document', attachments: [{ fileId: attachment.fileId }] } });
    assert.ok(m3.seq > m2.seq, JSON.stringify(m3));
    const before = await ask(a.s, 'get_history', { conversationId: conv._id, limit: 100 });
    return {
      a, b, r, c, ids: { alice, bob, brenda, carl }, conv, m1, m2, m3, fileId: attachment.fileId, before,
      // What Carl must never see: the conversation's words, its title and description, the
      // file's name and hash, the message ids and the participants he did not name.
      secrets: [...texts, title, description, fileName, attachment.sha256, m1._id, m2._id, m3._id, bob, brenda],
      close() {
        for (const x of [a, b, r, c]) x.s.close();
      },
    };
  }

  /** A refusal that reveals nothing: FORBIDDEN or NOT_FOUND with a reason, and no secret in the whole answer. */
  function refusedWithoutLeak(label, answer, secrets) {
    const problems = [];
    if (!['FORBIDDEN', 'NOT_FOUND'].includes(answer?.error?.code) || !answer.error.message) problems.push(`${label}: not refused: ${JSON.stringify(answer).slice(0, 200)}`);
    const text = JSON.stringify(answer ?? null);
    for (const s of secrets) if (text.includes(s)) problems.push(`${label}: the answer reveals ${JSON.stringify(s)}`);
    return problems;
  }

  /** Every request that names a conversation, as Carl would make it with `conv`'s ids. */
  function requests(conversationId, seq, fileId, myConversation) {
    return [
      ['send_message', { conversationId, content: 'let me in' }],
      ['send_message (a reply)', { conversationId, content: 'a reply', replyTo: seq }],
      ['send_message (their file)', { conversationId, content: { text: 'mine now', type: 'document', attachments: [{ fileId }] } }],
      ['send_message (their file, in my conversation)', { conversationId: myConversation, content: { text: '', type: 'document', attachments: [{ fileId }] } }],
      ['edit_message', { conversationId, seq, content: 'edited by an outsider' }],
      ['delete_message', { conversationId, seq }],
      ['react', { conversationId, seq, emoji: '👎' }],
      ['unreact', { conversationId, seq, emoji: '👍' }],
      ['pin_message', { conversationId, seq }],
      ['pin_message (unpin)', { conversationId, seq, unpin: true }],
      ['message_read', { conversationId, seq }],
      ['join_room', { conversationId }],
      ['get_history', { conversationId }],
      ['get_history (after)', { conversationId, after: 0, limit: 100 }],
      ['get_thread', { conversationId, seq }],
      ['list_pins', { conversationId }],
      ['get_receipts', { conversationId }],
      ['get_conversation', { conversationId }],
      ['update_conversation', { conversationId, title: 'taken over' }],
      ['add_participants', { conversationId, userIds: ['nobody-at-all'] }],
      ['remove_participant', { conversationId, userId: 'nobody-at-all' }],
      ['set_role', { conversationId, userId: 'nobody-at-all', role: 'admin' }],
      ['get_audit', { conversationId, seq }],
      ['start_download', { conversationId, fileId }],
      ['start_download (their file, in my conversation)', { conversationId: myConversation, fileId }],
      ['start_upload', { conversationId, fileName: 'in.pdf', size: 10, sha256: '0'.repeat(64) }],
    ];
  }

  test('leaked ids: a non-participant is refused every request, learns nothing, stores nothing, and the participants hear nothing', BOUNDED, async () => {
    const by = await bystander('leak-bystander');
    const x = await privileged('leak');
    try {
      const { conv, m1, fileId, c, secrets, ids } = x;
      const mine = await groupOf(c, [], "Carl's own");
      const problems = [];
      // Each answer is also the one for ids nobody uses (with the ids taken out): a
      // difference would tell Carl that the conversation or the file exists.
      const [unusedConversation, unusedFile] = [randomId(), randomId()];
      const unused = requests(unusedConversation, m1.seq, unusedFile, mine._id);
      const without = (answer, ...ids) => ids.reduce((text, id, n) => text.replaceAll(id, `<id ${n}>`), JSON.stringify(answer));
      for (const [n, [label, payload]] of requests(conv._id, m1.seq, fileId, mine._id).entries()) {
        const event = label.split(' ')[0];
        const answer = await ask(c.s, event, payload);
        problems.push(...refusedWithoutLeak(label, answer, secrets));
        const other = await ask(c.s, event, unused[n][1]);
        if (without(answer, conv._id, fileId) !== without(other, unusedConversation, unusedFile)) {
          problems.push(`${label}: told apart from ids nobody uses: ${JSON.stringify(answer)} vs ${JSON.stringify(other)}`);
        }
      }
      // Add himself, or change his role in it: refused too.
      problems.push(...refusedWithoutLeak('add_participants (himself)', await ask(c.s, 'add_participants', { conversationId: conv._id, userIds: [ids.carl] }), secrets));
      problems.push(...refusedWithoutLeak('set_role (himself)', await ask(c.s, 'set_role', { conversationId: conv._id, userId: ids.carl, role: 'admin' }), secrets));
      assert.deepEqual(problems, []);
      // The check finds what it looks for: a participant's own answer is full of it.
      const own = refusedWithoutLeak('alice', await ask(x.a.s, 'get_history', { conversationId: conv._id, limit: 100 }), secrets);
      assert.ok(own.length > secrets.length / 2, own.join('\n'));

      // Nor do his lists and presence queries show anything of it.
      const list = await ask(c.s, 'list_conversations', { limit: 100 });
      assert.deepEqual(list.conversations.map((k) => k._id), [mine._id]);
      const presence = await ask(c.s, 'get_presence', { userIds: [ids.alice, ids.bob] });
      assert.ok(!(presence.users ?? []).some((u) => u.online || u.lastSeen), `presence of people he shares nothing with: ${JSON.stringify(presence)}`);

      // Resuming from cursors that name the conversation delivers none of it.
      const resumed = socket(bridge.url, { token: tokenFor(ids.carl), cursors: { [conv._id]: 0 } });
      const resumedEvents = record(resumed);
      const caughtUp = next(resumed, 'connection_state', (st) => st.state === 'resumed');
      await next(resumed, 'authenticated');
      await caughtUp;
      const heard = resumedEvents.filter(([name]) => name !== 'authenticated');
      assert.ok(heard.every(([, p]) => !JSON.stringify(p).includes(conv._id)), `resumed into it: ${JSON.stringify(heard).slice(0, 300)}`);
      assert.ok(secrets.every((s) => !JSON.stringify(resumedEvents).includes(s)));
      resumed.close();

      // The participants heard nothing of Carl: a last message is the marker that all
      // which came before it has arrived.
      const marker = `${crypto.randomBytes(4).toString('hex')} marker`;
      const arrived = [x.b, x.r].map((p) => next(p.s, 'receive_message', (m) => m.content?.text === marker));
      await ask(x.a.s, 'send_message', { conversationId: conv._id, content: marker });
      await Promise.all(arrived);
      for (const [who, p] of [['alice', x.a], ['bob', x.b], ['brenda', x.r]]) {
        const about = p.events.filter((e) => JSON.stringify(e).includes(ids.carl) || JSON.stringify(e).includes('outsider') || JSON.stringify(e).includes('let me in'));
        assert.deepEqual(about, [], `${who} heard of Carl`);
      }
      // Nor was anything of theirs pushed to Carl (room_users, typing, receipts, messages).
      const pushed = JSON.stringify(c.events);
      assert.ok(!pushed.includes(conv._id) && secrets.every((s) => !pushed.includes(s)), `Carl heard: ${pushed.slice(0, 300)}`);

      // And nothing of his was stored: the log, the participants, the title, the pins and
      // the receipts are as they were.
      const page = await ask(x.a.s, 'get_history', { conversationId: conv._id, limit: 100 });
      // (Receipts move, and each state is as of the page's newest entry: those aside.)
      const entries = (messages) => messages.map(({ deliveryStatus, stateSeq, ...entry }) => entry);
      assert.deepEqual(entries(page.messages.slice(0, x.before.messages.length)), entries(x.before.messages));
      assert.deepEqual(page.messages.slice(x.before.messages.length).map((m) => m.content?.text), [marker]);
      const now = await ask(x.a.s, 'get_conversation', { conversationId: conv._id });
      assert.deepEqual(now.participants.map((p) => p.userId).sort(), [ids.alice, ids.bob, ids.brenda].sort());
      assert.equal(now.title, conv.title);
      assert.deepEqual(now.pinnedSeqs, [m1.seq]);
      const receipts = await ask(x.a.s, 'get_receipts', { conversationId: conv._id });
      assert.ok(receipts.states.every((st) => st.userId !== ids.carl), JSON.stringify(receipts));
      await by.stillWorks('requests with leaked ids');
    } finally {
      x.close();
      by.close();
    }
  });

  test('typing in a conversation that is not yours reaches nobody, and its acknowledgement reveals nothing', BOUNDED, async () => {
    // Typing is a signal the daemon never answers (by protocol): the bridge acknowledges
    // that it passed the signal on, not that anyone heard it. So what is checked is that
    // nobody hears it, and that the acknowledgement for a conversation one is not in is
    // the one for a conversation that does not exist.
    const by = await bystander('typing-bystander');
    const x = await privileged('typing');
    try {
      await ask(x.r.s, 'join_room', { conversationId: x.conv._id });
      const guessed = randomId();
      const answers = {};
      for (const [which, conversationId] of [['leaked', x.conv._id], ['guessed', guessed]]) {
        for (const event of ['typing_start', 'typing_stop', 'typing_start']) {
          const ack = await ask(x.c.s, event, { conversationId });
          for (const secret of x.secrets) assert.ok(!JSON.stringify(ack).includes(secret), `${event} (${which} id) reveals ${secret}`);
          (answers[which] ??= []).push(`${event}: ${JSON.stringify(ack).replaceAll(conversationId, '<id>')}`);
        }
      }
      assert.deepEqual(answers.leaked, answers.guessed, 'a conversation Carl is not in is told apart from one that does not exist');
      // Carl's session handles his frames in order: once a later request of his about the
      // conversation is answered, his typing signals were dealt with. Then Alice types, and
      // Bob and Brenda, in the room, hear her and never Carl.
      assert.equal((await ask(x.c.s, 'get_conversation', { conversationId: x.conv._id })).error?.code, 'NOT_FOUND');
      const heard = [x.b, x.r].map((p) => next(p.s, 'typing_start', (t) => t.userId === x.ids.alice));
      await ask(x.a.s, 'typing_start', { conversationId: x.conv._id });
      await Promise.all(heard);
      for (const [who, p] of [['alice', x.a], ['bob', x.b], ['brenda', x.r]]) {
        assert.deepEqual(p.events.filter(([name, e]) => name.startsWith('typing') && e?.userId === x.ids.carl), [], `${who} heard Carl type`);
      }
      // Nor did Carl hear anything of it.
      const pushed = JSON.stringify(x.c.events);
      assert.ok(!pushed.includes(x.conv._id) && x.secrets.every((secret) => !pushed.includes(secret)), `Carl heard: ${pushed.slice(0, 300)}`);
      await by.stillWorks('typing in a conversation that is not yours');
    } finally {
      x.close();
      by.close();
    }
  });

  test('guessed ids: random well-formed conversation, file and message ids are refused, and reveal nothing', BOUNDED, async () => {
    const by = await bystander('guess-bystander');
    const x = await privileged('guess');
    try {
      const mine = await groupOf(x.c, [], "Carl's own");
      const problems = [];
      for (let round = 0; round < 3; round++) {
        const [conversationId, fileId, seq] = [randomId(), randomId(), 1 + crypto.randomInt(1_000)];
        for (const [label, payload] of requests(conversationId, seq, fileId, mine._id)) {
          problems.push(...refusedWithoutLeak(`${label} (guess ${round + 1})`, await ask(x.c.s, label.split(' ')[0], payload), x.secrets));
        }
        // The real conversation with a guessed file id: the file is not found, and nothing else.
        problems.push(...refusedWithoutLeak('start_download (guessed file)', await ask(x.c.s, 'start_download', { conversationId: x.conv._id, fileId }), x.secrets));
      }
      assert.deepEqual(problems, []);
      await by.stillWorks('requests with guessed ids');
    } finally {
      x.close();
      by.close();
    }
  });

  test('who talks to whom stays private: a private conversation id computed from two user ids is refused as if it did not exist', BOUNDED, async () => {
    // A private conversation's id is derived from its two user ids (SHA-256 of a fixed
    // prefix and the sorted pair), so anyone can compute it. Answering FORBIDDEN for a pair
    // that talks and NOT_FOUND for one that does not would tell any user who talks to whom.
    const by = await bystander('oracle-bystander');
    const alice = await signIn('oracle-alice');
    const bob = await signIn('oracle-bob');
    const carl = await signIn('oracle-carl');
    try {
      const chat = await ask(alice.s, 'create_conversation', { type: 'private', participants: ['oracle-bob'] });
      assert.match(chat._id ?? '', /^[0-9a-f]{32}$/, JSON.stringify(chat));
      await ask(alice.s, 'send_message', { conversationId: chat._id, content: 'between the two of us' });
      const derived = (a, b) => {
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        return crypto.createHash('sha256').update(`legalchat/private/v1\0${lo}\0${hi}`).digest().subarray(0, 16).toString('hex');
      };
      const talking = derived('oracle-alice', 'oracle-bob');
      const silent = derived('oracle-alice', 'oracle-zed');
      // The probe is real: the derivation is the daemon's.
      assert.equal(talking, chat._id, 'the private conversation id as anyone can compute it');
      const [differences, notFound] = [[], []];
      for (const [event, payload] of [
        ['get_history', {}],
        ['send_message', { content: 'hello?' }],
        ['join_room', {}],
        ['get_conversation', {}],
        ['message_read', { seq: 1 }],
      ]) {
        const [a, b] = await Promise.all([talking, silent].map((conversationId) => ask(carl.s, event, { conversationId, ...payload })));
        assert.ok(a.error?.message && b.error?.message, `${event}: ${JSON.stringify([a, b])}`);
        // The code and the words, with the id that was asked about taken out; and nothing else.
        const said = (answer, id) => ({ code: answer.error.code, message: answer.error.message.replaceAll(id, '<id>'), rest: JSON.stringify(answer).replaceAll(id, '<id>') });
        if (!isDeepStrictEqual(said(a, talking), said(b, silent))) differences.push(`${event}: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
        if (a.error.code !== 'NOT_FOUND') notFound.push(`${event}: ${JSON.stringify(a)}`);
      }
      await by.stillWorks('probing private conversation ids');
      assert.deepEqual(differences, [], 'a pair that talks is told apart from one that does not');
      assert.deepEqual(notFound, [], 'a pair that talks is not refused as if the conversation did not exist');
    } finally {
      for (const x of [alice, bob, carl]) x.s.close();
      by.close();
    }
  });
});

describe('rate limits', () => {
  /**
   * `counts[i]` sends at once on `sockets[i]` (all of one user), then what came back. The
   * bucket holds the minute's 100 and refills one every 600 ms, so the boundary is exact
   * when the burst took less than that; `refill` is what a slower machine earned meanwhile.
   */
  async function burst(sockets, counts, conversationId) {
    const started = performance.now();
    const answers = await Promise.all(
      sockets.flatMap((s, i) => Array.from({ length: counts[i] }, (_, n) => ask(s, 'send_message', { conversationId, content: `burst ${i}.${n}` }))),
    );
    const refill = Math.floor((performance.now() - started) / (60_000 / MESSAGES_PER_MINUTE));
    return { accepted: answers.filter((a) => a.seq), refused: answers.filter((a) => !a.seq), refill };
  }

  function assertRateLimited(refused) {
    for (const a of refused) {
      assert.equal(a.error?.code, 'RATE_LIMITED', JSON.stringify(a));
      assert.match(a.error.message, /^message limit reached: at most 100 messages per minute; try again in \d+ s$/);
      assert.ok(a.error.retryAfterMs > 0 && a.error.retryAfterMs <= 60_000, `retryAfterMs ${a.error.retryAfterMs}`);
    }
  }

  test('100 messages a minute: the first 100 are accepted, the 101st refused RATE_LIMITED with the wait; the bystander is not touched', BOUNDED, async (t) => {
    const by = await bystander('rate-bystander');
    const rhonda = await signIn('rate-rhonda');
    try {
      // Created before the burst: a conversation is not a message.
      const conv = await groupOf(rhonda, [], 'Rate');
      const { accepted, refused, refill } = await burst([rhonda.s], [MESSAGES_PER_MINUTE + 1], conv._id);
      t.diagnostic(`${accepted.length} accepted, ${refused.length} refused; refill during the burst: ${refill}`);
      assert.ok(accepted.length >= MESSAGES_PER_MINUTE, `only ${accepted.length} of the first 100 were accepted: ${JSON.stringify(refused[0])}`);
      assert.ok(accepted.length <= MESSAGES_PER_MINUTE + refill, `${accepted.length} accepted`);
      if (refill === 0) assert.equal(refused.length, 1, 'the 101st is refused');
      assertRateLimited(refused);
      // What was accepted is stored, once each, and nothing else.
      assert.deepEqual(accepted.map((a) => a.seq).sort((a, b) => a - b), accepted.map((_, i) => i + 1));
      const c = await ask(rhonda.s, 'get_conversation', { conversationId: conv._id });
      assert.equal(c.lastSeq, accepted.length);
      // The limit is Rhonda's: the bystander sends as usual.
      await by.stillWorks("another user's rate limit");
      // And Rhonda is still limited (unless the bucket refilled meanwhile), with the wait.
      const again = await ask(rhonda.s, 'send_message', { conversationId: conv._id, content: 'one more' });
      if (!again.seq) assertRateLimited([again]);
    } finally {
      rhonda.s.close();
      by.close();
    }
  });

  test('the limit is per user across devices: two sockets of one user share the 100', BOUNDED, async (t) => {
    const by = await bystander('devices-bystander');
    const phone = await signIn('rate-dev');
    const laptop = await signIn('rate-dev');
    try {
      const conv = await groupOf(phone, [], 'Devices');
      const { accepted, refused, refill } = await burst([phone.s, laptop.s], [51, 51], conv._id);
      t.diagnostic(`${accepted.length} accepted, ${refused.length} refused; refill during the burst: ${refill}`);
      assert.ok(accepted.length >= MESSAGES_PER_MINUTE && accepted.length <= MESSAGES_PER_MINUTE + refill, `${accepted.length} accepted of 102 from two devices`);
      if (refill === 0) assert.equal(refused.length, 2, 'the 101st and 102nd are refused, whichever device sent them');
      assertRateLimited(refused);
      await by.stillWorks('a user over their limit on two devices');
    } finally {
      phone.s.close();
      laptop.s.close();
      by.close();
    }
  });

  test('10 uploads an hour across devices: the 11th start_upload is refused RATE_LIMITED with the wait; a resume still goes; the bystander uploads', BOUNDED, async () => {
    const by = await bystander('upload-bystander');
    const one = await signIn('rate-uploader');
    const two = await signIn('rate-uploader');
    let s;
    try {
      const conv = await groupOf(one, [], 'Uploads');
      const files = Array.from({ length: 11 }, (_, i) => Buffer.from(`note ${i} ${crypto.randomBytes(4).toString('hex')}\n`));
      const start = (s, file, extra = {}) => ask(s, 'start_upload', { conversationId: conv._id, fileName: 'note.txt', size: file.length, sha256: sha256(file), ...extra });
      const tickets = await Promise.all(files.slice(0, 10).map((f, i) => start(i % 2 ? two.s : one.s, f)));
      assert.deepEqual(tickets.map((tk) => tk.error?.code ?? 'ok'), Array(10).fill('ok'));
      const eleventh = await start(two.s, files[10]);
      assert.equal(eleventh.error?.code, 'RATE_LIMITED', JSON.stringify(eleventh));
      assert.match(eleventh.error.message, /^upload limit reached: at most 10 uploads per hour; try again in (\d+ min )?\d+ s$/);
      assert.ok(eleventh.error.retryAfterMs > 0 && eleventh.error.retryAfterMs <= 3_600_000, String(eleventh.error.retryAfterMs));
      // Resuming one of the ten is not a new upload.
      const resumed = await start(one.s, files[0], { uploadId: tickets[0].uploadId });
      assert.equal(resumed.uploadId, tickets[0].uploadId, JSON.stringify(resumed));
      // The limit is the user's: the bystander uploads as usual.
      const mine = pdfLike(500);
      s = socket(bridge.url, { token: tokenFor(by.user) });
      await next(s, 'authenticated');
      const own = await groupOf(s, [], 'Bystander files');
      const ticket = await ask(s, 'start_upload', { conversationId: own._id, fileName: 'mine.pdf', size: mine.length, sha256: sha256(mine) });
      const put = await fetch(`${bridge.url}${ticket.url}`, { method: 'PUT', body: mine });
      assert.equal(put.status, 201, await put.text());
      await by.stillWorks("another user's upload limit");
    } finally {
      s?.close();
      one.s.close();
      two.s.close();
      by.close();
    }
  });
});

describe('oversize and malformed input', () => {
  test('a packet larger than --max-payload closes its connection unread, over WebSocket and long-polling; one under it is read', BOUNDED, async () => {
    const by = await bystander('oversize-bystander');
    try {
      const wrong = [];
      for (const transport of ['websocket', 'polling']) {
        const x = await signIn(`oversize-${transport}`, 'advocate', transport);
        const conv = await groupOf(x, [], 'Oversize');
        // Under the limit: read, and refused for what it says (a message is at most 10 KiB).
        const under = await ask(x.s, 'send_message', { conversationId: conv._id, content: 'u'.repeat(200 * 1024) });
        assert.equal(under.error?.code, 'INVALID_ARGUMENT', `${transport}: ${JSON.stringify(under)}`);
        assert.match(under.error.message, /^content\.text: is 204800 bytes; the maximum is 10240$/);
        // Over it: the bridge must not buffer and parse it; the connection goes.
        const size = MAX_PAYLOAD + 64 * 1024;
        const dropped = firstOf(x.s, ['disconnect']);
        dropped.catch(() => {});
        const answered = ask(x.s, 'send_message', { conversationId: conv._id, content: 'o'.repeat(size) }).then(
          (ack) => ({ event: 'ack', value: ack }),
          (e) => ({ event: 'no ack', value: e.message }),
        );
        const first = await Promise.race([dropped, answered]);
        if (first.event !== 'disconnect') wrong.push(`${transport}: a ${size}-byte packet was read and answered: ${JSON.stringify(first.value).slice(0, 160)}`);
        else assert.match(first.value, /^transport (close|error)$/, transport);
        x.s.close();
      }
      await by.stillWorks('oversize packets');
      assert.deepEqual(wrong, [], 'packets over --max-payload that the bridge read');
    } finally {
      by.close();
    }
  });

  test('deeply nested JSON is refused with the parser\'s limit, and packets that are not Socket.IO close only their own connection', BOUNDED, async () => {
    const by = await bystander('nested-bystander');
    const x = await signIn('nested-x');
    try {
      const conv = await groupOf(x, [], 'Nested');
      // 1,000 deep through the client.
      let nested = 'x';
      for (let i = 0; i < 1_000; i++) nested = [nested];
      const deep = await ask(x.s, 'send_message', { conversationId: conv._id, content: nested });
      assert.equal(deep.error?.code, 'INVALID_ARGUMENT', JSON.stringify(deep));
      assert.match(deep.error.message, /^payload: recursion limit exceeded/);
      // Far deeper, written as raw packets with acknowledgement ids of their own (the client
      // itself cannot encode them) and under the payload limit: 100,000 arrays, 40,000
      // objects. Answered the same; no stack overflow.
      const engine = x.s.io.engine;
      for (const [ackId, body] of [[901, '['.repeat(100_000) + ']'.repeat(100_000)], [902, '{"a":'.repeat(40_000) + '1' + '}'.repeat(40_000)]]) {
        const answer = next(engine, 'packet', (p) => p.type === 'message' && String(p.data).startsWith(`3${ackId}[`));
        engine.write(`2${ackId}["send_message",{"conversationId":"${conv._id}","content":${body}}]`);
        const [ack] = JSON.parse(String((await answer).data).slice(String(ackId).length + 1));
        assert.equal(ack.error?.code, 'INVALID_ARGUMENT', JSON.stringify(ack));
        assert.match(ack.error.message, /^payload: recursion limit exceeded/);
      }
      // The socket goes on.
      const sent = await ask(x.s, 'send_message', { conversationId: conv._id, content: 'still here' });
      assert.equal(sent.seq, 1, JSON.stringify(sent));

      // Engine.IO messages that are no Socket.IO packet: truncated JSON, no event name, a
      // number for one, an object instead of an array, an unknown packet type, nothing.
      for (const raw of ['2["send_message",{', '2[]', '2[42]', '2{"event":"send_message"}', '9', '2', '']) {
        const y = await signIn('broken-y');
        const gone = next(y.s, 'disconnect');
        y.s.io.engine.write(raw);
        assert.match(await gone, /^transport (close|error)$/, JSON.stringify(raw));
        y.s.close();
      }
      await by.stillWorks('malformed packets');
    } finally {
      x.s.close();
      by.close();
    }
  });

  test('wrong types in every field of send_message are refused INVALID_ARGUMENT naming the field by its path; nothing is stored', BOUNDED, async () => {
    const by = await bystander('types-bystander');
    const x = await signIn('types-x');
    try {
      const conv = await groupOf(x, [], 'Types');
      const id = conv._id;
      const content = (fields) => ({ conversationId: id, content: { text: 'x', ...fields } });
      const cases = [
        ...[42, true, [], {}].map((v) => [{ conversationId: v, content: 'x' }, /^conversationId: must be a string$/]),
        [{ conversationId: 'not-an-id', content: 'x' }, /^conversationId: must be 32 lowercase hex/],
        [{ conversationId: id.toUpperCase(), content: 'x' }, /^conversationId: must be lowercase hex/],
        ...[42, true, [], null].map((v) => [{ conversationId: id, content: v }, /^content: must be a string or an object/]),
        [content({ text: 42 }), /^content\.text: must be a string$/],
        [content({ text: ['x'] }), /^content\.text: must be a string$/],
        [content({ type: 7 }), /^content\.type: must be a string$/],
        [content({ type: 'exe' }), /^content\.type: "exe" is not text, file, image or document$/],
        [content({ format: 1 }), /^content\.format: must be a string$/],
        [content({ format: 'html' }), /^content\.format: "html" is not plain or markdown$/],
        [content({ attachments: 'f' }), /^content\.attachments: must be a list/],
        [content({ attachments: [42] }), /^content\.attachments: each must be an object/],
        [content({ attachments: [{ fileId: 42 }] }), /^content\.attachments\.fileId: must be a string$/],
        [content({ attachments: [{}] }), /^content\.attachments\.fileId: is required$/],
        [content({ attachments: [{ fileId: randomId(), name: 42 }] }), /^content\.attachments\.name: must be a string$/],
        ...[42, true, {}].map((v) => [{ conversationId: id, content: 'x', clientMessageId: v }, /^clientMessageId: must be a string$/]),
        ...['1', -1, 0, 1.5, true, {}, 2 ** 64].map((v) => [{ conversationId: id, content: 'x', replyTo: v }, /^replyTo: must be the seq of a message/]),
        ...[42, 'text', true, [1], null].map((v) => [v, /^payload: must be an object$/]),
      ];
      const wrong = [];
      for (const [payload, reason] of cases) {
        const ack = await ask(x.s, 'send_message', payload);
        if (ack.error?.code !== 'INVALID_ARGUMENT' || !reason.test(ack.error.message)) wrong.push(`${JSON.stringify(payload)}: ${JSON.stringify(ack)}`);
      }
      const c = await ask(x.s, 'get_conversation', { conversationId: id });
      assert.equal(c.lastSeq, 0, 'nothing was stored');
      await by.stillWorks('payloads of the wrong types');
      assert.deepEqual(wrong, [], 'answers that do not name the field as the payload spells it');
    } finally {
      x.s.close();
      by.close();
    }
  });
});

describe('floods', () => {
  // A small queue towards each browser (the floor is 16 packets), so that a flood's answers
  // outrun the socket's writer on any machine, not only on a busy one.
  let small;
  before(async () => {
    small = await startBridge(daemon, ['--socket-buffer', '64']);
  });
  after(async () => {
    await small?.stop();
  });

  /**
   * Sends `n` requests `event` at once on `x` (signed in, its events recorded), `payload(i)`
   * each. An acknowledgement can be sent only once, so the bridge must answer every request,
   * or cut the socket off telling it why: an `error` event `{code: "OVERLOADED", message}`
   * before `io server disconnect` (the client then resumes from its cursors and sends again
   * what was not answered). Anything else fails here. Returns `results[i]` (the answer to
   * request i, or null if the cut-off left it unanswered), the cut-off's reason or null,
   * and when the flood started.
   */
  async function flood(x, n, event, payload) {
    let gone = null;
    x.s.on('disconnect', (reason) => {
      gone = reason;
    });
    const started = performance.now();
    // Long enough for every answer the daemon owes (the SDK gives up on a send after 30 s).
    const results = await Promise.all(Array.from({ length: n }, (_, i) => ask(x.s, event, payload(i), 40_000).catch((e) => ({ unanswered: e.message }))));
    const unanswered = results.filter((r) => r.unanswered).length;
    let cutOff = null;
    if (gone !== null) {
      assert.equal(gone, 'io server disconnect', `the socket went without the bridge closing it (${unanswered} of ${n} unanswered)`);
      const told = x.events.filter(([name]) => name === 'error').map(([, e]) => e);
      cutOff = told.find((e) => e?.code === 'OVERLOADED') ?? null;
      assert.ok(cutOff && /\S/.test(cutOff.message ?? ''), `the socket was cut off without an OVERLOADED reason: ${JSON.stringify(told)}`);
    }
    if (cutOff === null) assert.equal(unanswered, 0, `${unanswered} of ${n} ${event} were never answered, and the socket was not told why`);
    for (const r of results) {
      if (r.unanswered || !r.error) continue;
      assert.ok(r.error.code && r.error.message, `a refusal without a reason: ${JSON.stringify(r)}`);
    }
    return { results: results.map((r) => (r.unanswered ? null : r)), cutOff, started };
  }

  /** `{code: count}` of the refusals among `results`. */
  function refusals(results) {
    const codes = {};
    for (const r of results) if (r?.error) codes[r.error.code] = (codes[r.error.code] ?? 0) + 1;
    return codes;
  }

  test('a socket flooding typing_start: each answered, or the socket cut off with OVERLOADED and why; the other participant hears one typing state; the bystander is fine', BOUNDED, async (t) => {
    const by = await bystander('typing-flood-bystander', { url: small.url });
    const flooder = await signIn('tf-flooder', 'advocate', 'websocket', { url: small.url });
    const victim = await signIn('tf-victim', 'advocate', 'websocket', { url: small.url });
    let back = null;
    try {
      const conv = await groupOf(flooder, ['tf-victim'], 'Typing flood');
      await ask(victim.s, 'join_room', { conversationId: conv._id });
      const { results, cutOff, started } = await flood(flooder, 3_000, 'typing_start', () => ({ conversationId: conv._id }));
      const passedOn = results.filter((r) => r && !r.error).length;
      t.diagnostic(
        `3,000 typing_start in ${Math.round(performance.now() - started)} ms: ${passedOn} passed on, refused ${JSON.stringify(refusals(results))}, ` +
          `${results.filter((r) => r === null).length} unanswered; cut off: ${cutOff ? JSON.stringify(cutOff.message) : 'no'}`,
      );
      for (const r of results) if (r && !r.error) assert.deepEqual(r, { conversationId: conv._id });
      // Cut off, the flooder comes back as the SDK does: on a new socket.
      if (cutOff) back = await signIn('tf-flooder', 'advocate', 'websocket', { url: small.url });
      const flooderNow = back ?? flooder;
      // What was passed on reached the daemon: the victim hears the flooder type. (On the
      // same socket the marker below would be enough: a session handles its frames in order.)
      const typing = ([name, e]) => name === 'typing_start' && e.userId === 'tf-flooder';
      if (passedOn > 0 && !victim.events.some(typing)) await next(victim.s, 'typing_start', (e) => e.userId === 'tf-flooder');
      // A message is the marker: what the flood caused reaches the victim before it.
      const marker = next(victim.s, 'receive_message', (m) => m.content?.text === 'done typing');
      await ask(flooderNow.s, 'send_message', { conversationId: conv._id, content: 'done typing' });
      await marker;
      const elapsed = performance.now() - started;
      const starts = victim.events.filter(typing).length;
      t.diagnostic(`the victim heard ${starts} typing_start`);
      // One typing state: a start while typing changes nothing (a flood longer than the 3 s
      // auto-stop may start it again).
      assert.ok(starts >= Math.min(1, passedOn) && starts <= 1 + Math.floor(elapsed / 3_000), `the victim heard ${starts} typing_start`);
      await by.stillWorks('a typing flood');
    } finally {
      flooder.s.close();
      back?.s.close();
      victim.s.close();
      by.close();
    }
  });

  test("a socket flooding send_message: at most the minute's 100 stored, every other one refused with a reason or the socket cut off with OVERLOADED and why; nothing acknowledged is lost; the bystander is fine", BOUNDED, async (t) => {
    const by = await bystander('send-flood-bystander', { url: small.url });
    const flooder = await signIn('sf-flooder', 'advocate', 'websocket', { url: small.url });
    let back = null;
    try {
      const conv = await groupOf(flooder, [], 'Send flood');
      const N = 3_000;
      const text = (i) => `flood ${i}`;
      const { results, cutOff, started } = await flood(flooder, N, 'send_message', (i) => ({ conversationId: conv._id, content: text(i) }));
      const accepted = results.flatMap((r, i) => (r?.seq ? [{ ...r, text: text(i) }] : []));
      const refused = results.filter((r) => r?.error);
      t.diagnostic(
        `${accepted.length} accepted, refused ${JSON.stringify(refusals(results))}, ${results.filter((r) => r === null).length} unanswered; ` +
          `cut off: ${cutOff ? JSON.stringify(cutOff.message) : 'no'}`,
      );
      assert.equal(accepted.length + refused.length + results.filter((r) => r === null).length, N, 'an answer that is neither a seq nor a refusal');
      for (const a of refused) {
        assert.ok(['RATE_LIMITED', 'OVERLOADED'].includes(a.error.code), JSON.stringify(a));
        if (a.error.code === 'RATE_LIMITED') assert.ok(a.error.retryAfterMs > 0, JSON.stringify(a));
      }
      // What was stored, read back as the flooder (on a new socket after a cut-off, as the
      // SDK resumes): at most the limit, each text once, and every acknowledged message.
      if (cutOff) back = await signIn('sf-flooder', 'advocate', 'websocket', { url: small.url });
      const reader = (back ?? flooder).s;
      const stored = [];
      for (let after = 0; ; ) {
        const page = await ask(reader, 'get_history', { conversationId: conv._id, after, limit: 100 });
        assert.ok(Array.isArray(page.messages), JSON.stringify(page));
        stored.push(...page.messages);
        if (!page.hasMore || page.messages.length === 0) break;
        after = page.messages.at(-1).seq;
      }
      const refill = Math.floor((performance.now() - started) / (60_000 / MESSAGES_PER_MINUTE));
      t.diagnostic(`${stored.length} stored; refill meanwhile: ${refill}`);
      assert.ok(stored.length <= MESSAGES_PER_MINUTE + refill, `${stored.length} stored`);
      const texts = stored.map((m) => m.content?.text);
      assert.equal(new Set(texts).size, texts.length, 'a message stored twice');
      assert.ok(texts.every((x) => /^flood \d+$/.test(x)), JSON.stringify(texts.find((x) => !/^flood \d+$/.test(x))));
      const missing = accepted.filter((a) => !stored.some((m) => m.seq === a.seq && m._id === a._id && m.content?.text === a.text));
      assert.deepEqual(missing, [], 'acknowledged messages that are not stored as acknowledged');
      await by.stillWorks('a message flood');
    } finally {
      flooder.s.close();
      back?.s.close();
      by.close();
    }
  });

  test('a connection flood from an untrusted network: the burst is admitted, each one past it refused with the wait; the bystander is fine', BOUNDED, async (t) => {
    // The defaults (5 new connections a minute per address, bursts of 20), with loopback no
    // longer trusted.
    const guarded = await startBridge(daemon, ['--trusted-networks', '']);
    const flood = [];
    let by;
    try {
      by = await bystander('conn-bystander', { url: guarded.url }); // two of the 20
      const started = performance.now();
      for (let i = 0; i < 60; i++) flood.push(socket(guarded.url, { token: tokenFor(`conn-flood-${i}`) }));
      const outcomes = await Promise.all(flood.map((s) => firstOf(s, ['authenticated', 'connect_error'])));
      const refill = Math.floor((performance.now() - started) / 12_000);
      const admitted = outcomes.filter((o) => o.event === 'authenticated').length;
      t.diagnostic(`${admitted} of 60 admitted; refill during the flood: ${refill}`);
      assert.ok(admitted >= 18 && admitted <= 18 + refill, `${admitted} admitted besides the bystander's two`);
      for (const o of outcomes.filter((x) => x.event === 'connect_error')) {
        assert.match(o.value.message, /^rate_limited: too many new connections from your address; try again in \d+ s$/);
      }
      await by.stillWorks('a connection flood');
    } finally {
      for (const s of flood) s.close();
      by?.close();
      await guarded.stop();
    }
  });
});

/**
 * A raw TCP connection to the bridge that writes `bytes` one at a time, one every
 * `intervalMs` (none: it says nothing). `closed(deadline)` resolves true when the bridge
 * closed it, false at the deadline; `received` is what the bridge answered.
 */
function trickle(port, bytes, intervalMs) {
  const c = net.connect(port, '127.0.0.1');
  const data = Buffer.from(bytes);
  let at = 0;
  let timer = null;
  const conn = { received: '', sent: 0, isClosed: false };
  c.on('data', (d) => (conn.received += d));
  c.on('error', () => {});
  const closed = new Promise((resolve) => c.on('close', () => resolve(true)));
  closed.then(() => {
    conn.isClosed = true;
    clearInterval(timer);
  });
  conn.opened = new Promise((resolve) => c.on('connect', resolve));
  conn.opened.then(() => {
    timer = setInterval(() => {
      if (at < data.length) c.write(data.subarray(at, ++at));
      conn.sent = at;
    }, intervalMs);
  });
  conn.closed = (deadlineMs) =>
    new Promise((resolve) => {
      const left = Math.max(0, deadlineMs - Date.now());
      const t = setTimeout(() => resolve(false), left);
      closed.then(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  conn.socket = c;
  conn.destroy = () => {
    clearInterval(timer);
    c.destroy();
  };
  return conn;
}

// The two run at once: each waits on a server timeout (15 s, 30 s), and each has a bystander
// of its own that must be served meanwhile.
describe('slow connections', { concurrency: true }, () => {
  test('slowloris: 50 connections trickling a request head a byte a second, and 5 that say nothing, are closed by the bridge; the bystander is served meanwhile', BOUNDED, async (t) => {
    const by = await bystander('loris-bystander');
    const port = Number(new URL(bridge.url).port);
    const head = `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nX-Padding: ${'a'.repeat(200)}\r\n\r\n`;
    const conns = [];
    try {
      const deadline = Date.now() + HEAD_DEADLINE_MS;
      for (let i = 0; i < 50; i++) conns.push(trickle(port, head, 1_000));
      for (let i = 0; i < 5; i++) conns.push(trickle(port, '', 1_000));
      await Promise.all(conns.map((c) => c.opened));
      // While they hang on, the bridge serves everyone else.
      await by.stillWorks('55 slow connections opened');
      assert.equal((await fetch(`${bridge.url}/healthz`)).status, 200);
      const closed = await Promise.all(conns.map((c) => c.closed(deadline)));
      const open = closed.filter((x) => !x).length;
      t.diagnostic(`${closed.length - open} of ${conns.length} closed within ${HEAD_DEADLINE_MS / 1000} s; the trickling ones had sent ${Math.max(...conns.map((c) => c.sent))} of ${head.length} bytes`);
      await by.stillWorks('the slow connections');
      assert.equal(open, 0, `${open} of ${conns.length} connections that never completed a request head are still open after ${HEAD_DEADLINE_MS / 1000} s: the bridge gives a request's head no deadline`);
    } finally {
      for (const c of conns) c.destroy();
      by.close();
    }
  });

  test('an upload whose body stalls is answered and its connection closed; the bystander is served meanwhile', BOUNDED, async (t) => {
    const by = await bystander('stall-bystander');
    const x = await signIn('stall-x');
    const port = Number(new URL(bridge.url).port);
    let c;
    try {
      const conv = await groupOf(x, [], 'Stalled');
      const file = pdfLike(200_000);
      const ticket = await ask(x.s, 'start_upload', { conversationId: conv._id, fileName: 'stalled.pdf', size: file.length, sha256: sha256(file) });
      const deadline = Date.now() + BODY_DEADLINE_MS;
      // The exact Content-Length the ticket takes, then half of the body, then nothing.
      c = trickle(port, '', 1_000);
      await c.opened;
      c.socket.write(`PUT ${ticket.url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/pdf\r\nContent-Length: ${file.length}\r\n\r\n`);
      c.socket.write(file.subarray(0, file.length / 2));
      await by.stillWorks('a stalled upload began');
      const closed = await c.closed(deadline);
      t.diagnostic(`closed: ${closed}; answered: ${JSON.stringify(c.received.split('\r\n')[0])}`);
      assert.ok(closed, `the stalled upload's connection is still open after ${BODY_DEADLINE_MS / 1000} s`);
      assert.match(c.received, /^HTTP\/1\.1 [45]\d\d /, 'the stalled upload is answered with an error');
      await by.stillWorks('a stalled upload');
    } finally {
      c?.destroy();
      x.s.close();
      by.close();
    }
  });
});

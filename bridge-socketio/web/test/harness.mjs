// Test harness: a real `legalchatd` and a real `legalchat-bridge` as child processes on
// loopback, HS256 tokens signed with the daemon's secret, and the official
// socket.io-client. Every wait has a deadline; processes are killed when a test file ends.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { io } from 'socket.io-client';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');

/** Longest wait for any one expected event. */
export const EVENT_TIMEOUT_MS = 20_000;

/** The binaries under test: `LEGALCHAT_DAEMON_BIN` / `LEGALCHAT_BRIDGE_BIN`, or the debug build. */
export function binaries() {
  const target = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(repo, 'target');
  const daemon = process.env.LEGALCHAT_DAEMON_BIN ?? join(target, 'debug', 'legalchatd');
  const bridge = process.env.LEGALCHAT_BRIDGE_BIN ?? join(target, 'debug', 'legalchat-bridge');
  for (const [name, path] of [['legalchatd', daemon], ['legalchat-bridge', bridge]]) {
    if (!existsSync(path)) throw new Error(`${name} is not built at ${path}: run cargo build -p legalchat-daemon -p legalchat-bridge (or set LEGALCHAT_DAEMON_BIN / LEGALCHAT_BRIDGE_BIN)`);
  }
  return { daemon, bridge };
}

/** Spawns `bin` and resolves with the first stdout line matching `ready`. */
function spawnReady(bin, args, ready, name) {
  // Tests send far faster than a person: the daemon's message limit (100 per user per
  // minute by default) is raised, and stays on the path.
  const env = {
    ...process.env,
    LEGALCHAT_LOG: process.env.LEGALCHAT_LOG ?? 'warn',
    LEGALCHAT_MESSAGES_PER_MINUTE: process.env.LEGALCHAT_MESSAGES_PER_MINUTE ?? '1000000',
  };
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const stderr = [];
  child.stderr.on('data', (d) => {
    stderr.push(d.toString());
    if (stderr.length > 200) stderr.shift();
    // LEGALCHAT_TEST_STDERR=1 shows the servers' logs as they come.
    if (process.env.LEGALCHAT_TEST_STDERR === '1') process.stderr.write(`[${name}] ${d}`);
  });
  const lines = createInterface({ input: child.stdout });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not get ready within 60 s:\n${stderr.join('')}`));
    }, 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code} before it was ready:\n${stderr.join('')}`));
    });
    lines.on('line', (line) => {
      const m = ready.exec(line);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolvePromise({ child, match: m, stderr });
      }
    });
  });
}

function stop(child, signal = 'SIGTERM') {
  return new Promise((r) => {
    if (child.exitCode !== null || child.signalCode !== null) return r();
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      r();
    });
    child.kill(signal);
  });
}

/** A daemon on a fresh data directory. */
export async function startDaemon(extraArgs = []) {
  const { daemon: bin } = binaries();
  const dir = mkdtempSync(join(tmpdir(), 'legalchat-web-test-'));
  const secret = crypto.randomBytes(32).toString('hex');
  const args = ['--dev', '--data-dir', join(dir, 'data'), '--listen', '127.0.0.1:0', '--ops-listen', '127.0.0.1:0', '--jwt-secret', secret, ...extraArgs];
  let proc = await spawnReady(bin, args, /^legalchatd ready quic=(\S+) ops=(\S+)/, 'legalchatd');
  const d = {
    quic: proc.match[1],
    ca: join(dir, 'data', 'tls', 'cert.pem'),
    secret,
    /** A token for `user`; `extra` claims override the defaults (`iat` now, `exp` now + `ttlSecs`). */
    token: (user, role = 'advocate', ttlSecs = 3600, extra = {}) => token(secret, { sub: user, role, ...extra }, ttlSecs),
    /**
     * A token issued (`iat`) 2 s from now: one that a revocation or deactivation made
     * before now does not fence (they refuse tokens issued before their millisecond).
     */
    laterToken: (user, role = 'advocate', ttlSecs = 3600) => token(secret, { sub: user, role, iat: nowSecs() + 2 }, ttlSecs),
    /** Stops the daemon and starts it again on the same data directory and port. */
    async restart() {
      await stop(proc.child);
      const port = d.quic.split(':').pop();
      const again = args.map((a) => (a === '127.0.0.1:0' && args[args.indexOf(a) - 1] === '--listen' ? `127.0.0.1:${port}` : a));
      proc = await spawnReady(bin, again, /^legalchatd ready quic=(\S+) ops=(\S+)/, 'legalchatd');
    },
    async stop() {
      await stop(proc.child);
      rmSync(dir, { recursive: true, force: true });
    },
    stderr: () => proc.stderr.join(''),
  };
  return d;
}

/** A bridge in front of `daemon`; `args` are extra flags (e.g. `--auth-timeout-ms 500`). */
export async function startBridge(daemon, args = []) {
  const { bridge: bin } = binaries();
  const all = ['--daemon', daemon.quic, '--ca', daemon.ca, '--host', '127.0.0.1', '--port', '0', ...args];
  let proc = await spawnReady(bin, all, /^legalchat-bridge ready http=(\S+)/, 'legalchat-bridge');
  const b = {
    url: `http://${proc.match[1]}`,
    async stop() {
      await stop(proc.child);
    },
    /** Starts the bridge again on the same port (after `stop`). */
    async start() {
      const port = b.url.split(':').pop();
      proc = await spawnReady(bin, all.map((a, i) => (all[i - 1] === '--port' ? port : a)), /^legalchat-bridge ready http=(\S+)/, 'legalchat-bridge');
    },
    stderr: () => proc.stderr.join(''),
  };
  return b;
}

/** Seconds since the epoch, as JWTs count time. */
export function nowSecs() {
  return Math.floor(Date.now() / 1000);
}

/** An HS256 JWT the daemon accepts; `claims` may override `iat` and `exp`. */
export function token(secret, claims, ttlSecs = 3600) {
  const now = nowSecs();
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc({ iat: now, exp: now + ttlSecs, ...claims })}`;
  const sig = crypto.createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}

/** A raw socket.io-client socket; `auth` is the handshake's auth object. */
export function socket(url, auth, transport = 'websocket', options = {}) {
  return io(url, { auth, transports: [transport], forceNew: true, reconnection: false, ...options });
}

/** Resolves with the next `event` on `emitter` (matching `pred`), or rejects after the deadline. */
export function next(emitter, event, pred = () => true, timeoutMs = EVENT_TIMEOUT_MS) {
  return new Promise((resolvePromise, reject) => {
    const handler = (...args) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      emitter.off(event, handler);
      resolvePromise(args[0]);
    };
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`no ${event} within ${timeoutMs} ms`));
    }, timeoutMs);
    emitter.on(event, handler);
  });
}

/** Records every event of a socket, for assertions on order. */
export function record(sock) {
  const events = [];
  sock.onAny((name, ...args) => events.push([name, ...args]));
  return events;
}

/** Waits until `cond()` holds, checking on every event of `sock` and every 50 ms; rejects after the deadline. */
export async function until(cond, what, timeoutMs = EVENT_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

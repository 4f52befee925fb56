// LegalChat's JavaScript client: the requirements' `ChatClient` on the official
// socket.io-client, for browsers and Node.
//
//   app ──► ChatClient ──► outbox (keyed by client message id) ──► socket.io-client ──► bridge
//    ▲          │ cursors per conversation (newest seq seen)            │
//    └─ events ◄┴─ in order, exactly once; a gap is fetched ◄───────────┘
//
// Reconnecting: socket.io-client reconnects with backoff; each handshake carries the token
// and the cursors, and the bridge replays everything after them (messages, edits,
// deletes, reactions, receipts) before live events. Sends waiting in the outbox go again
// with the same client message id, so the server stores each once.
//
// Files: `start_upload` on the socket gives a one-time URL; the bytes go there in one
// plain HTTP PUT (XMLHttpRequest in browsers, for upload progress; fetch elsewhere). A PUT
// cut off is resumed: `start_upload` again with the same `uploadId` says from which byte.
// A message then refers to the stored file by its id.
//
// Tokens: the session ends when its token's `exp` passes (`tokenExpiresAt`) unless renewed
// in place (`renew_token`). With a `tokenProvider` the client renews by itself a while
// before (a fifth of the remaining life, 5–60 s); the renewed token is also what later
// handshakes send. When the server ends the session anyway (expired, revoked by an
// administrator, account deactivated) or refuses a handshake's token, the client does not
// reconnect with that token: it tries once with a fresh one from the provider, else stops
// and says why (`unauthorized`).

import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';
import type {
  Attachment,
  ChatEvents,
  ClientState,
  ContentInput,
  Conversation,
  ConversationType,
  DownloadTicket,
  Entry,
  ErrorBody,
  FileInput,
  HistoryPage,
  Identity,
  Message,
  ParticipantRole,
  Renewal,
  RoomUsers,
  SignOutReason,
  StoredAck,
  TextFormat,
  Unauthorized,
  UploadOptions,
  UploadTicket,
} from './types.js';

export type * from './types.js';

export interface ChatClientOptions {
  /** Which transports to use, in order of preference (default: polling, then upgrade to WebSocket). */
  transports?: ('polling' | 'websocket')[];
  /** Where to resume from: cursors saved from `cursors()` in an earlier run. */
  cursors?: Record<string, number>;
  /** Most sends waiting for the server at once (default 1,000). */
  outboxCapacity?: number;
  /** How long a send may wait, queued or in flight, before it fails (default 30 s). */
  sendTimeoutMs?: number;
  /** How long any other request may wait for its answer (default 10 s). */
  requestTimeoutMs?: number;
  /** Typing stops by itself after this long without `startTyping` (default 3 s, as the server). */
  typingTimeoutMs?: number;
  /** Further socket.io-client options (e.g. `path`, `reconnectionDelayMax`). */
  socket?: Partial<ManagerOptions & SocketOptions>;
  /**
   * Largest file `uploadFile` hashes and offers (default 52,428,800 bytes, the server's
   * default). A larger file is refused at once, in the server's words; the server
   * judges again.
   */
  maxFileBytes?: number;
  /** How often in a row an upload is resumed after a failure a retry can mend (default 5). */
  uploadRetries?: number;
  /**
   * Where fresh tokens come from (your sign-in service). Given, the client renews the
   * session before its token expires (at `tokenExpiresAt` minus a fifth of the remaining
   * life, 5–60 s before) with `renew_token`, and reconnects with the renewed token; when
   * the server ends the session or refuses the token anyway, it tries once with a fresh
   * token before it gives up (`unauthorized`). A rejection counts as no token.
   */
  tokenProvider?: () => Promise<string>;
}

/** A refused request. `code` is the server's (`INVALID_ARGUMENT`, `FORBIDDEN`, …). */
export class ChatError extends Error {
  readonly code: string;
  /** The server's message alone (`message` is `code: detail`). */
  readonly detail: string;
  /** `RATE_LIMITED`: milliseconds until the request would be accepted, when the server says (else null). */
  readonly retryAfterMs: number | null;
  constructor(body: ErrorBody) {
    super(`${body.code}: ${body.message}`);
    this.name = 'ChatError';
    this.code = body.code;
    this.detail = body.message;
    this.retryAfterMs = typeof body.retryAfterMs === 'number' ? body.retryAfterMs : null;
  }
}

/**
 * A failed upload. `status` is the HTTP status of the PUT when it got one (e.g. 400 for a
 * file type that cannot be attached, 413 for a body longer than the ticket's); `uploadId`
 * names what the server kept of it: pass it as `uploadId` to resume. Cancelled: `ABORTED`.
 */
export class UploadError extends ChatError {
  readonly status: number | null;
  readonly uploadId: string | null;
  constructor(body: ErrorBody, extra: { status?: number | null; uploadId?: string | null } = {}) {
    super(body);
    this.name = 'UploadError';
    this.status = extra.status ?? null;
    this.uploadId = extra.uploadId ?? null;
  }
}

/** Codes after which sending the same thing again cannot succeed. */
const FINAL_CODES = new Set([
  'INVALID_ARGUMENT',
  'FORBIDDEN',
  'NOT_FOUND',
  'UNAUTHENTICATED',
  'UNAUTHORIZED',
  'ALREADY_EXISTS',
  'FAILED_PRECONDITION',
  'PAYLOAD_TOO_LARGE',
]);
/**
 * A fresh client message id: 32 hex digits, the time in milliseconds (12) then 80 random
 * bits (20). The random bits keep two sends apart; the time in front keeps a
 * conversation's new ids next to each other in the server's index, where inserting them
 * is cheapest. (`crypto.randomUUID` exists only in secure contexts; `getRandomValues`
 * everywhere.)
 */
export function newClientMessageId(now: number = Date.now()): string {
  const time = Math.max(0, Math.min(Math.floor(now), 0xffff_ffff_ffff)).toString(16).padStart(12, '0');
  const random = Array.from(crypto.getRandomValues(new Uint8Array(10)), (b) => b.toString(16).padStart(2, '0')).join('');
  return time + random;
}

/** The server's default largest attachment: 50 MiB. */
export const MAX_FILE_BYTES = 52_428_800;
/** Codes of `start_upload` that a later attempt can get past (e.g. the cut-off attempt still winding down). */
const RETRY_START = new Set(['CONFLICT', 'UNAVAILABLE', 'TIMEOUT', 'OVERLOADED']);
/** HTTP statuses of an upload that a new ticket can get past: ticket lapsed, upload still busy, server unavailable. */
const RETRY_STATUS = new Set([401, 409, 502, 503, 504]);

/** What one HTTP attempt at an upload came to. */
type PutOutcome =
  | { kind: 'stored'; attachment: Attachment }
  | { kind: 'refused'; status: number; error: ErrorBody }
  | { kind: 'network'; message: string }
  | { kind: 'aborted' };

/** `52428800` → `50 MiB`, `1536` → `1.5 KiB`, `12` → `12 bytes` (as the server writes sizes). */
export function formatBytes(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${bytes} ${bytes === 1 ? 'byte' : 'bytes'}`;
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

/** The file as a Blob (bytes are wrapped as they are). */
function toBlob(file: FileInput): Blob {
  if (typeof Blob !== 'undefined' && file instanceof Blob) return file;
  if (file instanceof ArrayBuffer) return new Blob([file]);
  if (ArrayBuffer.isView(file)) return new Blob([new Uint8Array(file.buffer, file.byteOffset, file.byteLength) as BlobPart]);
  throw new ChatError({ code: 'INVALID_ARGUMENT', message: 'file: must be a Blob, a File, an ArrayBuffer or bytes' });
}

type NodeGlobal = { process?: { versions?: { node?: string } } };

/** WebCrypto: global in browsers (secure contexts) and Node ≥ 19; `node:crypto`'s in Node 18. */
async function subtleCrypto(): Promise<SubtleCrypto> {
  const subtle = globalThis.crypto?.subtle;
  if (subtle) return subtle;
  if ((globalThis as NodeGlobal).process?.versions?.node) {
    // Not a literal, so that bundlers for browsers leave it alone.
    const spec = 'node:crypto';
    const mod = (await import(/* @vite-ignore */ spec)) as { webcrypto: Crypto };
    return mod.webcrypto.subtle;
  }
  throw new ChatError({ code: 'UNAVAILABLE', message: 'uploads need WebCrypto, which browsers offer only to secure pages (https, or http://localhost)' });
}

/** The SHA-256 of a whole file, as 64 lowercase hex digits. */
export async function sha256Hex(file: Blob): Promise<string> {
  const digest = await (await subtleCrypto()).digest('SHA-256', await file.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Node's fetch streams a request body with the Content-Length given; browsers' fetch cannot (it is a forbidden header). */
function fetchStreamsWithLength(): boolean {
  return typeof (globalThis as NodeGlobal).process?.versions?.node === 'string' && typeof TransformStream !== 'undefined';
}

function abortedError(uploadId: string | null): UploadError {
  return new UploadError({ code: 'ABORTED', message: 'the upload was cancelled' }, { uploadId });
}

/** Waits `ms`, or less when `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** What an upload's HTTP answer says. */
function putOutcome(status: number, text: string): PutOutcome {
  const body = ((): { attachment?: Attachment; error?: ErrorBody } | null => {
    try {
      return JSON.parse(text) as { attachment?: Attachment; error?: ErrorBody } | null;
    } catch {
      return null; // not JSON: a proxy's page, say
    }
  })();
  if (status >= 200 && status < 300 && body?.attachment) return { kind: 'stored', attachment: body.attachment };
  if (body?.error && typeof body.error.code === 'string') return { kind: 'refused', status, error: body.error };
  return { kind: 'refused', status, error: { code: status >= 200 && status < 300 ? 'PROTOCOL' : `HTTP_${status}`, message: text.trim().slice(0, 200) || `the server answered ${status}` } };
}

/** A network failure in words (Node's fetch hides the cause one level down). */
function describeFailure(e: unknown): string {
  const err = e as { message?: string; cause?: { message?: string; code?: string } };
  const cause = err?.cause?.code ?? err?.cause?.message;
  return [err?.message ?? String(e), cause].filter(Boolean).join(': ');
}

/** The longest a timer can wait (setTimeout's limit, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * How long before a token's expiry to renew it: a fifth of the remaining life, at least
 * 5 s and at most 60 s (as the Rust SDK does).
 */
export function renewalLeadMs(expiresAtMs: number, nowMs: number = Date.now()): number {
  return Math.min(60_000, Math.max(5_000, (expiresAtMs - nowMs) / 5));
}

/** Milliseconds from `nowMs` until a token expiring at `expiresAtMs` should be renewed (0: now). */
export function renewalDelayMs(expiresAtMs: number, nowMs: number = Date.now()): number {
  return Math.max(0, expiresAtMs - nowMs - renewalLeadMs(expiresAtMs, nowMs));
}

/**
 * Why the server signed the user out, from its message: `your token expired…`, `token has
 * expired`, `…revoked by an administrator…`, `this token was revoked…`, `…deactivated…`.
 */
export function signOutReason(message: string): SignOutReason {
  if (/deactivated/i.test(message)) return 'deactivated';
  if (/revoked/i.test(message)) return 'revoked';
  if (/expired/i.test(message)) return 'expired';
  return 'refused';
}

/** Held out-of-order entries per conversation before they are dropped and refetched. */
const MAX_HELD = 1_000;
/** Message ids remembered for `markAsRead(messageId)`. */
const MAX_INDEXED = 20_000;

interface PendingSend {
  clientMessageId: string;
  payload: Record<string, unknown>;
  deadline: number;
  resolve: (ack: StoredAck) => void;
  reject: (e: Error) => void;
  /** The connection epoch it was last sent on (0: not yet). */
  sentOn: number;
  timer: ReturnType<typeof setTimeout>;
}

type Handler<K extends keyof ChatEvents> = (...args: ChatEvents[K]) => void;

/** One user's connection to LegalChat through the Socket.IO bridge. */
export class ChatClient {
  readonly url: string | undefined;
  private readonly options: Required<Omit<ChatClientOptions, 'socket' | 'cursors' | 'transports' | 'tokenProvider'>> &
    Pick<ChatClientOptions, 'socket' | 'transports' | 'tokenProvider'>;
  private socket: Socket | null = null;
  private token = '';
  private identity: Identity | null = null;
  private _state: ClientState = 'idle';
  private readonly positions = new Map<string, number>();
  private readonly held = new Map<string, Map<number, Entry>>();
  private readonly fetching = new Set<string>();
  private readonly outbox = new Map<string, PendingSend>();
  private readonly index = new Map<string, { conversationId: string; seq: number }>();
  private readonly handlers = new Map<keyof ChatEvents, Set<Handler<keyof ChatEvents>>>();
  private readonly typingTimers = new Map<string, { last: number; timer: ReturnType<typeof setTimeout> }>();
  /** Rooms the app joined: joined again on every new socket. */
  private readonly rooms = new Set<string>();
  /** Counts authenticated connections; acks of an older one are stale. */
  private epoch = 0;
  private stopped = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private retries = 0;
  /** The pending `connect()`. */
  private waiting: { resolve: (identity: Identity) => void; reject: (e: Error) => void } | null = null;
  /** When the token provider is next asked for a renewal. */
  private renewTimer: ReturnType<typeof setTimeout> | null = null;
  /** A fresh token was tried after a refusal, and no session has started since: the next refusal is final. */
  private authRetried = false;
  /** Waiting for the token provider after a refusal: no reconnection meanwhile (it would send the refused token). */
  private reauthing = false;
  /** Whether a session has been up on the current socket's client since `connect`. */
  private wasUp = false;

  /** `url`: the bridge (default: the page's own origin). */
  constructor(url?: string, options: ChatClientOptions = {}) {
    this.url = url;
    this.options = {
      outboxCapacity: options.outboxCapacity ?? 1_000,
      sendTimeoutMs: options.sendTimeoutMs ?? 30_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      typingTimeoutMs: options.typingTimeoutMs ?? 3_000,
      maxFileBytes: options.maxFileBytes ?? MAX_FILE_BYTES,
      uploadRetries: options.uploadRetries ?? 5,
      socket: options.socket,
      transports: options.transports,
      tokenProvider: options.tokenProvider,
    };
    for (const [c, seq] of Object.entries(options.cursors ?? {})) this.positions.set(c, seq);
  }

  // ─────────────────────────── connection ───────────────────────────

  /** The client's state: `online` once authenticated. */
  get state(): ClientState {
    return this._state;
  }

  /** Who is signed in (after `connect` resolved). */
  get me(): Identity | null {
    return this.identity;
  }

  /** The newest seq seen per conversation: save it to resume a later run (`options.cursors`). */
  cursors(): Record<string, number> {
    return Object.fromEntries(this.positions);
  }

  /**
   * Connects with `token` and resolves once authenticated. A refused token rejects with
   * a `ChatError` (`UNAUTHENTICATED`) and stops the client (with a `tokenProvider`, after
   * one more try with a fresh token); an unreachable bridge keeps being retried (with
   * backoff) until `disconnect()`.
   */
  connect(token: string): Promise<Identity> {
    if (this.socket) this.teardown();
    this.waiting?.reject(new ChatError({ code: 'CLOSED', message: 'connect was called again' }));
    this.waiting = null;
    this.token = token;
    this.stopped = false;
    this.authRetried = false;
    this.reauthing = false;
    this.wasUp = false;
    this.setState('connecting');
    const socket = io(this.url ?? '', {
      autoConnect: false,
      reconnectionDelay: 500,
      reconnectionDelayMax: 10_000,
      randomizationFactor: 0.5,
      transports: this.options.transports ?? ['polling', 'websocket'],
      ...this.options.socket,
      // A function: every (re)connection sends the cursors of that moment.
      auth: (cb: (data: object) => void) => cb({ token: this.token, cursors: this.cursors() }),
    });
    this.socket = socket;
    const ready = new Promise<Identity>((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
    this.wire(socket);
    socket.connect();
    return ready;
  }

  /** Disconnects for good; sends still waiting fail. */
  disconnect(): void {
    this.stopped = true;
    this.teardown();
    this.waiting?.reject(new ChatError({ code: 'CLOSED', message: 'the client disconnected' }));
    this.waiting = null;
    this.failOutbox(new ChatError({ code: 'CLOSED', message: 'the client disconnected' }));
    this.setState('closed');
  }

  private teardown(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.cancelRenewal();
    for (const t of this.typingTimers.values()) clearTimeout(t.timer);
    this.typingTimers.clear();
    if (this.socket) {
      this.socket.removeAllListeners();
      this.socket.io.removeAllListeners();
      this.socket.disconnect();
      this.socket = null;
    }
  }

  private wire(socket: Socket): void {
    socket.on('authenticated', (identity: Identity) => {
      this.identity = identity;
      this.epoch += 1;
      this.retries = 0;
      this.authRetried = false;
      this.reauthing = false;
      this.wasUp = true;
      // The session's events start after these positions.
      for (const [c, seq] of Object.entries(identity.cursors)) {
        if ((this.positions.get(c) ?? 0) < seq) this.positions.set(c, seq);
      }
      this.waiting?.resolve(identity);
      this.waiting = null;
      this.scheduleRenewal();
      this.setState('online');
      this.flushOutbox();
      // A new socket is a new session: the rooms joined before are joined again.
      for (const c of this.rooms) void this.request('join_room', { conversationId: c }).catch(() => {});
    });
    // The server ended the session (token expired, sessions revoked, account deactivated)
    // or refused the token; the socket is closed after it.
    socket.on('unauthorized', (e: ErrorBody) => this.authFailed(e, this._state === 'online'));
    socket.on('connect_error', (err: Error & { data?: unknown }) => {
      if (err.message.startsWith('unauthorized')) {
        this.authFailed({ code: 'UNAUTHENTICATED', message: err.message }, false);
      } else if (!socket.active) {
        // Refused by the server for another reason (e.g. the daemon is unavailable):
        // socket.io-client does not retry that by itself.
        this.retryLater();
      }
      if (this._state !== 'closed') this.setState('offline', err.message);
    });
    socket.on('disconnect', (reason: string) => {
      if (this.stopped) return;
      this.setState('offline', reason);
      if (reason === 'io server disconnect') {
        // The bridge ended the socket (e.g. this client fell behind): resync from the cursors.
        this.retryLater();
      }
    });
    for (const name of [
      'receive_message',
      'message_edited',
      'message_deleted',
      'reaction_added',
      'reaction_removed',
      'message_pinned',
      'message_unpinned',
      'conversation_event',
    ]) {
      socket.on(name, (entry: Entry) => this.receive(entry));
    }
    socket.on('conversation_updated', (c: Conversation) => {
      if (!this.positions.has(c._id) && c.participants.some((p) => p.userId === this.identity?.userId)) {
        // A conversation the user was just added to: its log comes from the first entry.
        this.positions.set(c._id, 0);
      }
      this.fire('conversation', c);
    });
    socket.on('message_delivered', (r: { status?: string; conversationId: string; userId?: string; seq: number; timestamp: string }) => {
      // `status: "sent"` is the sender's copy of its own acknowledgement; sends resolve through the ack.
      if (r.status === 'delivered' && r.userId) this.fire('receipt', { conversationId: r.conversationId, userId: r.userId, seq: r.seq, timestamp: r.timestamp, kind: 'delivered' });
    });
    socket.on('message_read', (r: { conversationId: string; userId: string; seq: number; timestamp: string }) =>
      this.fire('receipt', { ...r, kind: 'read' }),
    );
    socket.on('typing_start', (t: { conversationId: string; userId: string }) => this.fire('typing', { ...t, active: true }));
    socket.on('typing_stop', (t: { conversationId: string; userId: string }) => this.fire('typing', { ...t, active: false }));
    socket.on('user_online', (p: { userId: string; lastSeen: string | null }) => this.fire('presence', { ...p, online: true }));
    socket.on('user_offline', (p: { userId: string; lastSeen: string | null }) => this.fire('presence', { ...p, online: false }));
    socket.on('room_users', (r: RoomUsers) => this.fire('room_users', r));
    socket.on('connection_state', (s: ChatEvents['server_state'][0]) => this.fire('server_state', s));
    socket.on('error', (e: ErrorBody) => this.fire('error', e));
  }

  /**
   * The server refused the token or ended the session because of it. Never again with
   * that token: with a provider, once with a fresh one (not for a deactivated account:
   * no token helps); else the client stops.
   */
  private authFailed(e: ErrorBody, ended: boolean): void {
    if (this.stopped || this.reauthing) return;
    const body: Unauthorized = { code: e.code, message: e.message, reason: signOutReason(e.message), ended: ended || this.wasUp };
    const provider = this.options.tokenProvider;
    if (!provider || this.authRetried || body.reason === 'deactivated') return this.refused(body);
    this.authRetried = true;
    this.reauthing = true;
    this.cancelRenewal();
    const socket = this.socket;
    const refusedToken = this.token;
    this.setState('offline', e.message);
    if (socket?.connected) socket.disconnect(); // the server closes it anyway
    const stale = () => this.stopped || this.socket !== socket;
    void this.fromProvider(provider).then(
      (token) => {
        if (stale()) return;
        this.reauthing = false;
        // The same token again would be refused again (or, expired within the server's
        // leeway, accepted and ended at once).
        if (token === refusedToken) return this.refused(body);
        this.token = token;
        socket?.connect();
      },
      (err: Error) => {
        if (stale()) return;
        this.reauthing = false;
        this.refused({ ...body, message: `${body.message} (and no new token: ${err.message})` });
      },
    );
  }

  /** A token from the provider, within `requestTimeoutMs`. */
  private fromProvider(provider: () => Promise<string>): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the token provider gave no token within ${this.options.requestTimeoutMs} ms`)), this.options.requestTimeoutMs);
      Promise.resolve()
        .then(provider)
        .then(
          (token) => {
            clearTimeout(timer);
            if (typeof token === 'string' && token.trim()) resolve(token.trim());
            else reject(new Error('the token provider gave no token'));
          },
          (err: unknown) => {
            clearTimeout(timer);
            reject(err instanceof Error ? err : new Error(String(err)));
          },
        );
    });
  }

  private refused(e: Unauthorized): void {
    if (this.stopped) return;
    this.stopped = true;
    this.teardown();
    this.failOutbox(new ChatError(e));
    this.waiting?.reject(new ChatError(e));
    this.waiting = null;
    this.setState('closed', e.message);
    this.fire('unauthorized', e);
  }

  // ─────────────────────────── tokens ───────────────────────────

  /** When the session's token expires (ms since the epoch), or null when unknown. */
  private expiresAtMs(): number | null {
    const at = Date.parse(this.identity?.tokenExpiresAt ?? '');
    return Number.isFinite(at) && at > 0 ? at : null;
  }

  private cancelRenewal(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = null;
  }

  /** Arms the renewal from the provider (when there is one): when due, or after `notBeforeMs`. */
  private scheduleRenewal(notBeforeMs = 0): void {
    this.cancelRenewal();
    const at = this.expiresAtMs();
    if (!this.options.tokenProvider || at === null || this.stopped) return;
    const delay = Math.max(notBeforeMs, renewalDelayMs(at));
    this.renewTimer = setTimeout(() => {
      this.renewTimer = null;
      // A timer cannot wait longer than about 24.8 days: for a longer token, wait again.
      if (delay > MAX_TIMER_MS) this.scheduleRenewal();
      else void this.renewFromProvider();
    }, Math.min(delay, MAX_TIMER_MS));
  }

  /** After a failed renewal or one that did not move the expiry: again in a while, while the token lasts. */
  private renewAgainLater(): void {
    const at = this.expiresAtMs();
    if (at === null) return;
    const left = at - Date.now();
    if (left <= 0) return; // the session ends; the provider is asked again then
    this.scheduleRenewal(Math.min(5_000, Math.max(1_000, left / 2)));
  }

  private async renewFromProvider(): Promise<void> {
    const provider = this.options.tokenProvider;
    // Offline: the next session's `authenticated` arms it again.
    if (!provider || this.stopped || this._state !== 'online') return;
    try {
      const token = await this.fromProvider(provider);
      if (this.stopped || this._state !== 'online') return;
      // The provider has nothing newer yet: ask again in a while.
      if (token === this.token) return this.renewAgainLater();
      await this.renewToken(token);
    } catch (e) {
      if (this.stopped) return;
      const body = e instanceof ChatError ? { code: e.code, message: e.detail } : { code: 'UNAVAILABLE', message: (e as Error)?.message ?? String(e) };
      this.fire('error', { code: body.code, message: `renewing the session's token failed: ${body.message}` });
      if (this._state === 'online') this.renewAgainLater();
    }
  }

  /**
   * Renews the session in place with `token` (same user and role): the session then ends
   * at its `exp` instead, and later reconnections send it. Refused (another user's token,
   * another role, a revoked or expired one): rejects with a `ChatError`, and the session
   * goes on until the old token's expiry. For apps that get tokens themselves; with a
   * `tokenProvider` the client does this by itself.
   */
  async renewToken(token: string): Promise<Renewal> {
    const epoch = this.epoch;
    const ack = await this.request<Renewal>('renew_token', { token });
    this.token = token;
    // Reconnected meanwhile: the new session started with the old token and keeps its own
    // expiry (its renewal is armed already); the next handshakes send this token.
    if (epoch !== this.epoch) {
      this.fire('token_renewed', { token, tokenExpiresAt: ack.tokenExpiresAt });
      return ack;
    }
    const before = this.expiresAtMs();
    if (this.identity) this.identity = { ...this.identity, tokenExpiresAt: ack.tokenExpiresAt };
    const after = this.expiresAtMs();
    // A token that lasts no longer (the same one, say) is no renewal: the provider is asked
    // again in a while rather than at once.
    if (before !== null && after !== null && after <= before) this.renewAgainLater();
    else this.scheduleRenewal();
    this.fire('token_renewed', { token, tokenExpiresAt: ack.tokenExpiresAt });
    return ack;
  }

  private retryLater(): void {
    if (this.stopped || this.retryTimer || this.reauthing) return;
    const delay = Math.min(10_000, 500 * 2 ** Math.min(this.retries, 5)) * (0.5 + Math.random() / 2);
    this.retries += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.stopped && this.socket && !this.socket.connected) this.socket.connect();
    }, delay);
  }

  private setState(state: ClientState, reason?: string): void {
    if (this._state === state) return;
    this._state = state;
    this.fire('state', state, reason);
  }

  // ─────────────────────────── events ───────────────────────────

  /** Subscribes to an event; returns the function that unsubscribes. */
  on<K extends keyof ChatEvents>(event: K, handler: (...args: ChatEvents[K]) => void): () => void {
    let set = this.handlers.get(event);
    if (!set) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(handler as Handler<keyof ChatEvents>);
    return () => this.off(event, handler);
  }

  off<K extends keyof ChatEvents>(event: K, handler: (...args: ChatEvents[K]) => void): void {
    this.handlers.get(event)?.delete(handler as Handler<keyof ChatEvents>);
  }

  private fire<K extends keyof ChatEvents>(event: K, ...args: ChatEvents[K]): void {
    for (const h of this.handlers.get(event) ?? []) {
      try {
        (h as Handler<K>)(...args);
      } catch (e) {
        // An app handler's failure must not break delivery to the others.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /** Takes a log entry: in order and exactly once to the app; a gap is fetched. */
  private receive(entry: Entry): void {
    const c = entry.conversationId;
    const at = this.positions.get(c) ?? 0;
    if (entry.seq <= at) return; // seen already (a replay after a reconnect)
    if (entry.seq > at + 1) {
      let held = this.held.get(c);
      if (!held) {
        held = new Map();
        this.held.set(c, held);
      }
      if (held.size >= MAX_HELD) held.clear(); // the fetch brings them again
      held.set(entry.seq, entry);
      void this.fetchGap(c);
      return;
    }
    this.deliver(entry);
    const held = this.held.get(c);
    if (held) {
      for (let next = entry.seq + 1; held.has(next); next++) {
        const e = held.get(next)!;
        held.delete(next);
        this.deliver(e);
      }
      if (held.size === 0) this.held.delete(c);
    }
  }

  private deliver(entry: Entry): void {
    this.positions.set(entry.conversationId, entry.seq);
    if (!entry.event) {
      this.remember(entry);
      this.settleEcho(entry as Message);
      this.fire('entry', entry);
      this.fire('message', entry as Message);
    } else {
      this.fire('entry', entry);
      if ('targetSeq' in entry.event) this.fire('message_event', entry);
    }
  }

  /** The echo of one of our sends settles it even when its ack was lost. */
  private settleEcho(m: Message): void {
    const pending = this.outbox.get(m.clientMessageId);
    if (pending && m.senderId === this.identity?.userId) {
      this.settle(pending, { _id: m._id, conversationId: m.conversationId, seq: m.seq, timestamp: m.timestamp, duplicate: false, clientMessageId: m.clientMessageId });
    }
  }

  private remember(m: Entry): void {
    this.index.set(m._id, { conversationId: m.conversationId, seq: m.seq });
    if (this.index.size > MAX_INDEXED) {
      const oldest = this.index.keys().next().value;
      if (oldest !== undefined) this.index.delete(oldest);
    }
  }

  private async fetchGap(c: string): Promise<void> {
    if (this.fetching.has(c)) return;
    this.fetching.add(c);
    try {
      while (this.held.get(c)?.size) {
        const after = this.positions.get(c) ?? 0;
        const page = await this.history(c, { after, limit: 100 });
        for (const m of page.messages) this.receive(m);
        if (!page.hasMore && (this.positions.get(c) ?? 0) === after) break;
      }
    } catch {
      // The next reconnect's replay fills it.
    } finally {
      this.fetching.delete(c);
    }
  }

  // ─────────────────────────── requests ───────────────────────────

  private request<T>(event: string, payload: object): Promise<T> {
    const socket = this.socket;
    if (!socket || !socket.connected || this._state !== 'online') {
      return Promise.reject(new ChatError({ code: 'UNAVAILABLE', message: `${event}: not connected` }));
    }
    return socket
      .timeout(this.options.requestTimeoutMs)
      .emitWithAck(event, payload)
      .then((answer: T | { error: ErrorBody }) => {
        if (answer && typeof answer === 'object' && 'error' in answer) throw new ChatError(answer.error);
        return answer as T;
      }, (e: Error) => {
        throw e instanceof ChatError ? e : new ChatError({ code: 'TIMEOUT', message: `${event}: no answer in time (${e.message})` });
      });
  }

  /**
   * Sends a message; resolves once it is stored durably (`seq` is its place in the log).
   * While the client is offline it waits in the outbox and goes when the client is back,
   * with the same client message id, so that it is stored once.
   */
  sendMessage(conversationId: string, content: ContentInput, options: { replyTo?: number; clientMessageId?: string } = {}): Promise<StoredAck> {
    if (this._state === 'closed') {
      // Disconnected, or signed out by the server: nothing would send it.
      return Promise.reject(new ChatError({ code: 'CLOSED', message: 'the client is closed (connect again first)' }));
    }
    if (this.outbox.size >= this.options.outboxCapacity) {
      return Promise.reject(new ChatError({ code: 'OVERLOADED', message: `the outbox holds ${this.outbox.size} unsent messages` }));
    }
    const clientMessageId = options.clientMessageId ?? newClientMessageId();
    const existing = this.outbox.get(clientMessageId);
    if (existing) return new Promise((resolve, reject) => {
      const [r0, j0] = [existing.resolve, existing.reject];
      existing.resolve = (a) => { r0(a); resolve(a); };
      existing.reject = (e) => { j0(e); reject(e); };
    });
    return new Promise<StoredAck>((resolve, reject) => {
      const pending: PendingSend = {
        clientMessageId,
        payload: { conversationId, content, clientMessageId, replyTo: options.replyTo ?? null },
        deadline: Date.now() + this.options.sendTimeoutMs,
        resolve,
        reject,
        sentOn: 0,
        timer: setTimeout(() => {
          if (this.outbox.get(clientMessageId) === pending) {
            this.outbox.delete(clientMessageId);
            reject(new ChatError({ code: 'TIMEOUT', message: `not stored within ${this.options.sendTimeoutMs} ms` }));
          }
        }, this.options.sendTimeoutMs),
      };
      this.outbox.set(clientMessageId, pending);
      if (this._state === 'online') this.transmit(pending);
    });
  }

  /** Replies to message `replyToSeq`. */
  reply(conversationId: string, replyToSeq: number, content: ContentInput): Promise<StoredAck> {
    return this.sendMessage(conversationId, content, { replyTo: replyToSeq });
  }

  /** Sends still waiting for the server, oldest first. */
  pendingSends(): { clientMessageId: string; conversationId: string; content: ContentInput; replyTo: number | null }[] {
    return [...this.outbox.values()].map((p) => ({
      clientMessageId: p.clientMessageId,
      conversationId: p.payload.conversationId as string,
      content: p.payload.content as ContentInput,
      replyTo: (p.payload.replyTo as number | null) ?? null,
    }));
  }

  private transmit(pending: PendingSend): void {
    const socket = this.socket;
    if (!socket) return;
    const epoch = this.epoch;
    pending.sentOn = epoch;
    const wait = Math.max(1, pending.deadline - Date.now());
    socket
      .timeout(wait)
      .emitWithAck('send_message', pending.payload)
      .then(
        (answer: StoredAck | { error: ErrorBody }) => {
          if (this.outbox.get(pending.clientMessageId) !== pending) return;
          if ('error' in answer) {
            if (FINAL_CODES.has(answer.error.code) || epoch === this.epoch) {
              this.outbox.delete(pending.clientMessageId);
              clearTimeout(pending.timer);
              pending.reject(new ChatError(answer.error));
            }
            // Otherwise (unavailable, overloaded on an older connection): sent again after reconnecting.
            return;
          }
          this.settle(pending, answer);
        },
        () => {
          // No answer on that connection: the next authenticated connection sends it again.
        },
      );
  }

  private settle(pending: PendingSend, ack: StoredAck): void {
    if (this.outbox.get(pending.clientMessageId) !== pending) return;
    this.outbox.delete(pending.clientMessageId);
    clearTimeout(pending.timer);
    pending.resolve(ack);
  }

  private flushOutbox(): void {
    for (const pending of this.outbox.values()) {
      if (pending.sentOn !== this.epoch) this.transmit(pending);
    }
  }

  private failOutbox(e: Error): void {
    for (const pending of this.outbox.values()) {
      clearTimeout(pending.timer);
      pending.reject(e);
    }
    this.outbox.clear();
  }

  /** Replaces a message's text (the author, within the server's edit window). */
  editMessage(conversationId: string, seq: number, content: ContentInput): Promise<StoredAck> {
    return this.request('edit_message', { conversationId, seq, content });
  }

  /** Deletes a message (its author, or a moderator). */
  deleteMessage(conversationId: string, seq: number): Promise<StoredAck> {
    return this.request('delete_message', { conversationId, seq });
  }

  /** Adds the user's reaction `emoji` (one Unicode emoji) to message `seq`. */
  react(conversationId: string, seq: number, emoji: string): Promise<StoredAck> {
    return this.request('react', { conversationId, seq, emoji });
  }

  /** Takes the user's reaction back. */
  unreact(conversationId: string, seq: number, emoji: string): Promise<StoredAck> {
    return this.request('unreact', { conversationId, seq, emoji });
  }

  /** Pins (or unpins) message `seq`. */
  pin(conversationId: string, seq: number, unpin = false): Promise<StoredAck> {
    return this.request('pin_message', { conversationId, seq, unpin });
  }

  /** Joins a conversation's room: typing signals and who is there (`room_users`). */
  joinConversation(conversationId: string): Promise<RoomUsers> {
    return this.request<RoomUsers>('join_room', { conversationId }).then((r) => {
      this.rooms.add(conversationId);
      return r;
    });
  }

  /** Leaves the room. Messages keep coming: they are the user's by membership. */
  leaveConversation(conversationId: string): Promise<{ conversationId: string }> {
    this.rooms.delete(conversationId);
    return this.request('leave_room', { conversationId });
  }

  /** Marks a message (and everything before it in its conversation) as read. */
  markAsRead(messageId: string): Promise<{ conversationId: string; seq: number }> {
    const at = this.index.get(messageId);
    if (!at) return Promise.reject(new ChatError({ code: 'NOT_FOUND', message: `message ${messageId} has not been seen by this client` }));
    return this.markReadAt(at.conversationId, at.seq);
  }

  /** Marks a conversation read up to `seq`. */
  markReadAt(conversationId: string, seq: number): Promise<{ conversationId: string; seq: number }> {
    return this.request('message_read', { conversationId, seq });
  }

  /**
   * Says the user is typing. Call it on every keystroke: it is sent at most once a
   * second, and `typing_stop` follows by itself after `typingTimeoutMs` without a call.
   */
  startTyping(conversationId: string): void {
    const now = Date.now();
    const t = this.typingTimers.get(conversationId);
    if (t) clearTimeout(t.timer);
    const last = t && now - t.last < 1_000 ? t.last : (void this.request('typing_start', { conversationId }).catch(() => {}), now);
    this.typingTimers.set(conversationId, { last, timer: setTimeout(() => this.stopTyping(conversationId), this.options.typingTimeoutMs) });
  }

  /** Says the user stopped typing. */
  stopTyping(conversationId: string): void {
    const t = this.typingTimers.get(conversationId);
    if (!t) return;
    clearTimeout(t.timer);
    this.typingTimers.delete(conversationId);
    void this.request('typing_stop', { conversationId }).catch(() => {});
  }

  /** A page of history: the newest by default, or `before` / `after` a seq. */
  history(conversationId: string, page: { before?: number; after?: number; limit?: number } = {}): Promise<HistoryPage> {
    return this.request<HistoryPage>('get_history', { conversationId, ...page }).then((p) => {
      for (const m of p.messages) if (!m.event) this.remember(m);
      return p;
    });
  }

  /** The replies to message `seq`. */
  thread(conversationId: string, seq: number, page: { after?: number; limit?: number } = {}): Promise<HistoryPage> {
    return this.request('get_thread', { conversationId, seq, ...page });
  }

  /** The pinned messages. */
  pins(conversationId: string): Promise<HistoryPage> {
    return this.request('list_pins', { conversationId });
  }

  /** The user's conversations, most recently active first. */
  listConversations(limit = 100): Promise<Conversation[]> {
    return this.request<{ conversations: Conversation[] }>('list_conversations', { limit }).then((r) => r.conversations);
  }

  getConversation(conversationId: string): Promise<Conversation> {
    return this.request('get_conversation', { conversationId });
  }

  createConversation(c: { type: ConversationType; participants: string[]; title?: string; description?: string; caseId?: string }): Promise<Conversation> {
    return this.request('create_conversation', c);
  }

  updateConversation(
    conversationId: string,
    update: { title?: string; description?: string; settings?: { notifications?: boolean; encryption?: boolean; retention?: number } },
  ): Promise<Conversation> {
    return this.request('update_conversation', { conversationId, ...update });
  }

  addParticipants(conversationId: string, userIds: string[], role: ParticipantRole = 'member'): Promise<Conversation> {
    return this.request('add_participants', { conversationId, userIds, role });
  }

  removeParticipant(conversationId: string, userId: string): Promise<Conversation> {
    return this.request('remove_participant', { conversationId, userId });
  }

  /** Delivery and read positions of every participant. */
  receipts(conversationId: string): Promise<{ conversationId: string; states: { userId: string; deliveredSeq: number; readSeq: number; deliveredAt: string | null; readAt: string | null }[] }> {
    return this.request('get_receipts', { conversationId });
  }

  presence(userIds: string[]): Promise<{ userId: string; online: boolean; lastSeen: string | null }[]> {
    return this.request<{ users: { userId: string; online: boolean; lastSeen: string | null }[] }>('get_presence', { userIds }).then((r) => r.users);
  }

  // ─────────────────────────── administration ───────────────────────────

  /**
   * Ends every live session of `userId` at once (each hears `unauthorized`, "…revoked by an
   * administrator…") and refuses their tokens issued before now. Global admins only
   * (`FORBIDDEN` otherwise); `NOT_FOUND` for a user who never signed in.
   */
  revokeSessions(userId: string): Promise<void> {
    return this.request('revoke_sessions', { userId }).then(() => undefined);
  }

  /**
   * Deactivates (`false`: their sessions end, and they cannot sign in) or reactivates
   * (`true`) `userId`. Deactivating also refuses their tokens issued before now, so after
   * reactivating they sign in with a new token. Global admins only.
   */
  setUserActive(userId: string, active: boolean): Promise<void> {
    return this.request('set_user_active', { userId, active }).then(() => undefined);
  }

  // ─────────────────────────── files ───────────────────────────

  /** A URL the bridge gave (`/api/…`), made absolute against the bridge (or the page). */
  private absolute(path: string): string {
    const base = this.url || (globalThis as { location?: { href: string } }).location?.href;
    if (!base) throw new ChatError({ code: 'INVALID_ARGUMENT', message: 'the client has no bridge URL to resolve file URLs against' });
    return new URL(path, base).href;
  }

  /** A request that first waits for the client to be online (at most `sendTimeoutMs`), as sends do. */
  private async requestOnline<T>(event: string, payload: object, signal?: AbortSignal): Promise<T> {
    if (this._state === 'idle' || this._state === 'closed') {
      throw new ChatError({ code: 'CLOSED', message: `${event}: the client is not connected (connect first)` });
    }
    if (this._state === 'offline' || this._state === 'connecting') {
      await new Promise<void>((resolve, reject) => {
        let off = () => {};
        const finish = (e?: Error) => {
          clearTimeout(timer);
          off();
          signal?.removeEventListener('abort', aborted);
          if (e) reject(e);
          else resolve();
        };
        const aborted = () => finish(abortedError(null));
        const timer = setTimeout(
          () => finish(new ChatError({ code: 'UNAVAILABLE', message: `${event}: not connected within ${this.options.sendTimeoutMs} ms` })),
          this.options.sendTimeoutMs,
        );
        off = this.on('state', (s) => {
          if (s === 'online') finish();
          else if (s === 'closed') finish(new ChatError({ code: 'UNAVAILABLE', message: `${event}: the client disconnected` }));
        });
        signal?.addEventListener('abort', aborted, { once: true });
      });
    }
    return this.request<T>(event, payload);
  }

  /**
   * Uploads a file into a conversation and resolves with the stored attachment, which a
   * message can then carry (`sendMessage(…, {text, type, attachments: [{fileId}]})`, or
   * `sendFile` for both at once).
   *
   * The file is hashed (SHA-256, WebCrypto), `start_upload` gives a one-time URL, and the
   * bytes go there in one PUT: with XMLHttpRequest where there is one (browsers: upload
   * progress), else with fetch (Node streams the body and reports progress as it goes).
   * When the connection fails, or the ticket lapsed, or the server is briefly busy, the
   * upload is resumed from the byte the server confirmed (`start_upload` with its
   * `uploadId`), at most `uploadRetries` times in a row without progress. A refusal
   * (size, type, rate, malware, access) rejects with an `UploadError` carrying the
   * server's code and message, and the HTTP status when there was one.
   */
  async uploadFile(conversationId: string, file: FileInput, options: UploadOptions = {}): Promise<Attachment> {
    const { signal, onProgress } = options;
    const blob = toBlob(file);
    const name = options.name ?? (file as { name?: unknown }).name;
    if (typeof name !== 'string' || !name.trim()) {
      throw new UploadError({ code: 'INVALID_ARGUMENT', message: 'fileName: is required (pass options.name for a Blob or bytes)' });
    }
    const total = blob.size;
    // The server's own limit once it has said it; the option until then.
    const max = this.identity?.maxFileBytes || this.options.maxFileBytes;
    if (total > max) {
      throw new UploadError({ code: 'INVALID_ARGUMENT', message: `size: the file is ${total} bytes; the largest accepted is ${max} bytes (${formatBytes(max)})` });
    }
    let uploadId = options.uploadId ?? null;
    if (signal?.aborted) throw abortedError(uploadId);
    const sha256 = await sha256Hex(blob);
    const retries = this.options.uploadRetries;
    let failures = 0;
    let reached = -1;
    const again = async () => {
      failures += 1;
      await pause(Math.min(5_000, 250 * 2 ** (failures - 1)) * (0.75 + Math.random() / 2), signal);
    };
    for (;;) {
      if (signal?.aborted) throw abortedError(uploadId);
      let ticket: UploadTicket;
      try {
        const ask = { conversationId, fileName: name, size: total, sha256, ...(uploadId ? { uploadId } : {}) };
        ticket = await this.requestOnline<UploadTicket>('start_upload', ask, signal);
      } catch (e) {
        if (signal?.aborted) throw abortedError(uploadId);
        const code = e instanceof ChatError ? e.code : 'UNAVAILABLE';
        const detail = e instanceof ChatError ? e.detail : String(e);
        if (code === 'NOT_FOUND' && uploadId && failures < retries) {
          // The server no longer has that upload (it finished, was refused, or the server
          // restarted): start it afresh.
          uploadId = null;
          failures += 1;
          continue;
        }
        if (RETRY_START.has(code) && failures < retries) {
          await again();
          continue;
        }
        throw new UploadError({ code, message: detail }, { uploadId });
      }
      uploadId = ticket.uploadId;
      // Progress since the last attempt: the count of failures in a row starts again.
      if (ticket.offset > reached) {
        if (reached >= 0) failures = 0;
        reached = ticket.offset;
      }
      onProgress?.(ticket.offset, total);
      const outcome = await this.put(ticket, blob, onProgress, signal);
      if (outcome.kind === 'stored') {
        onProgress?.(total, total);
        return outcome.attachment;
      }
      if (outcome.kind === 'aborted' || signal?.aborted) throw abortedError(uploadId);
      if (outcome.kind === 'network') {
        if (failures < retries) {
          await again();
          continue;
        }
        throw new UploadError({ code: 'UNAVAILABLE', message: `the upload failed: ${outcome.message}` }, { uploadId });
      }
      if (RETRY_STATUS.has(outcome.status) && failures < retries) {
        await again();
        continue;
      }
      throw new UploadError(outcome.error, { status: outcome.status, uploadId });
    }
  }

  /** One HTTP attempt: the file from the ticket's offset to its end. */
  private put(ticket: UploadTicket, blob: Blob, onProgress: UploadOptions['onProgress'], signal?: AbortSignal): Promise<PutOutcome> {
    const url = this.absolute(ticket.url);
    const body = blob.slice(ticket.offset);
    const [offset, total] = [ticket.offset, blob.size];
    const progress = (sent: number) => onProgress?.(Math.min(total, offset + sent), total);
    if (typeof XMLHttpRequest !== 'undefined') {
      return new Promise((resolve) => {
        const xhr = new XMLHttpRequest();
        const cancel = () => xhr.abort();
        const finish = (o: PutOutcome) => {
          signal?.removeEventListener('abort', cancel);
          resolve(o);
        };
        xhr.open('PUT', url);
        xhr.setRequestHeader('Content-Type', 'application/octet-stream');
        xhr.upload.onprogress = (e) => progress(e.loaded);
        xhr.onload = () => finish(putOutcome(xhr.status, xhr.responseText));
        xhr.onerror = () => finish({ kind: 'network', message: 'the connection failed' });
        xhr.ontimeout = () => finish({ kind: 'network', message: 'the connection timed out' });
        xhr.onabort = () => finish(signal?.aborted ? { kind: 'aborted' } : { kind: 'network', message: 'the request was aborted' });
        signal?.addEventListener('abort', cancel, { once: true });
        xhr.send(body);
      });
    }
    const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
    const init: RequestInit & { duplex?: 'half' } = { method: 'PUT', headers, signal };
    if (onProgress && fetchStreamsWithLength()) {
      // Streamed, to count bytes as they go; the length is still exact.
      let sent = 0;
      headers['Content-Length'] = String(body.size);
      init.duplex = 'half';
      init.body = body.stream().pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, out) {
            sent += chunk.byteLength;
            progress(sent);
            out.enqueue(chunk);
          },
        }),
      );
    } else {
      init.body = body;
    }
    return fetch(url, init).then(
      (res) =>
        res.text().then(
          (text) => putOutcome(res.status, text),
          (e: Error) => (signal?.aborted ? { kind: 'aborted' as const } : { kind: 'network' as const, message: describeFailure(e) }),
        ),
      (e: Error) => (signal?.aborted ? { kind: 'aborted' as const } : { kind: 'network' as const, message: describeFailure(e) }),
    );
  }

  /**
   * Uploads a file and sends it as a message: `image` for an image (as the server
   * recognised it), `document` otherwise, with `text` (default empty) beside it. Resolves
   * with the send's acknowledgement and the attachment.
   */
  async sendFile(
    conversationId: string,
    file: FileInput,
    options: UploadOptions & { text?: string; format?: TextFormat; replyTo?: number; clientMessageId?: string } = {},
  ): Promise<StoredAck & { attachment: Attachment }> {
    const attachment = await this.uploadFile(conversationId, file, options);
    const ack = await this.sendMessage(
      conversationId,
      {
        text: options.text ?? '',
        format: options.format ?? 'plain',
        type: attachment.type.startsWith('image/') ? 'image' : 'document',
        attachments: [{ fileId: attachment.fileId, name: attachment.name }],
      },
      { replyTo: options.replyTo, clientMessageId: options.clientMessageId },
    );
    return { ...ack, attachment };
  }

  /**
   * A one-time download of an attachment (current participants only): its absolute URL,
   * good for one GET within about a minute, with the file's name, size, type and SHA-256.
   * `inline`: images are then shown in the page instead of saved (previews).
   */
  async startDownload(conversationId: string, fileId: string, options: { inline?: boolean } = {}): Promise<DownloadTicket> {
    const ticket = await this.request<DownloadTicket>('start_download', { conversationId, fileId });
    const url = new URL(this.absolute(ticket.url));
    if (options.inline) url.search = 'inline';
    return { ...ticket, url: url.href };
  }

  /** The absolute one-time URL of an attachment (see `startDownload`). */
  downloadUrl(conversationId: string, fileId: string, options: { inline?: boolean } = {}): Promise<string> {
    return this.startDownload(conversationId, fileId, options).then((t) => t.url);
  }
}

export type { Message, Entry, Conversation };

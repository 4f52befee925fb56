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

import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';
import type {
  ChatEvents,
  ClientState,
  ContentInput,
  Conversation,
  ConversationType,
  Entry,
  ErrorBody,
  HistoryPage,
  Identity,
  Message,
  ParticipantRole,
  RoomUsers,
  StoredAck,
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
}

/** A refused request. `code` is the server's (`INVALID_ARGUMENT`, `FORBIDDEN`, …). */
export class ChatError extends Error {
  readonly code: string;
  constructor(body: ErrorBody) {
    super(`${body.code}: ${body.message}`);
    this.name = 'ChatError';
    this.code = body.code;
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
 * A fresh client message id: 128 random bits as hex. (`crypto.randomUUID` exists only in
 * secure contexts; `getRandomValues` everywhere.)
 */
function randomId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
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
  private readonly options: Required<Omit<ChatClientOptions, 'socket' | 'cursors' | 'transports'>> &
    Pick<ChatClientOptions, 'socket' | 'transports'>;
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

  /** `url`: the bridge (default: the page's own origin). */
  constructor(url?: string, options: ChatClientOptions = {}) {
    this.url = url;
    this.options = {
      outboxCapacity: options.outboxCapacity ?? 1_000,
      sendTimeoutMs: options.sendTimeoutMs ?? 30_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      typingTimeoutMs: options.typingTimeoutMs ?? 3_000,
      socket: options.socket,
      transports: options.transports,
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
   * a `ChatError` (`UNAUTHENTICATED`) and stops the client; an unreachable bridge keeps
   * being retried (with backoff) until `disconnect()`.
   */
  connect(token: string): Promise<Identity> {
    if (this.socket) this.teardown();
    this.token = token;
    this.stopped = false;
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
      const onAuth = (identity: Identity) => {
        socket.off('unauthorized', onRefused);
        resolve(identity);
      };
      const onRefused = (e: ErrorBody) => {
        socket.off('authenticated', onAuth);
        reject(new ChatError(e));
      };
      socket.once('authenticated', onAuth);
      socket.once('unauthorized', onRefused);
    });
    this.wire(socket);
    socket.connect();
    return ready;
  }

  /** Disconnects for good; sends still waiting fail. */
  disconnect(): void {
    this.stopped = true;
    this.teardown();
    this.failOutbox(new ChatError({ code: 'CLOSED', message: 'the client disconnected' }));
    this.setState('closed');
  }

  private teardown(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
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
      // The session's events start after these positions.
      for (const [c, seq] of Object.entries(identity.cursors)) {
        if ((this.positions.get(c) ?? 0) < seq) this.positions.set(c, seq);
      }
      this.setState('online');
      this.flushOutbox();
      // A new socket is a new session: the rooms joined before are joined again.
      for (const c of this.rooms) void this.request('join_room', { conversationId: c }).catch(() => {});
    });
    socket.on('unauthorized', (e: ErrorBody) => this.refused(e));
    socket.on('connect_error', (err: Error & { data?: unknown }) => {
      if (err.message.startsWith('unauthorized')) {
        this.refused({ code: 'UNAUTHENTICATED', message: err.message });
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

  private refused(e: ErrorBody): void {
    if (this.stopped) return;
    this.stopped = true;
    this.teardown();
    this.failOutbox(new ChatError(e));
    this.setState('closed', e.message);
    this.fire('unauthorized', e);
  }

  private retryLater(): void {
    if (this.stopped || this.retryTimer) return;
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
    if (this.outbox.size >= this.options.outboxCapacity) {
      return Promise.reject(new ChatError({ code: 'OVERLOADED', message: `the outbox holds ${this.outbox.size} unsent messages` }));
    }
    const clientMessageId = options.clientMessageId ?? randomId();
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
}

export type { Message, Entry, Conversation };

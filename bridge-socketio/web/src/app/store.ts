// The app's state: conversations, each conversation's loaded log, sends not yet stored,
// receipts, typing and presence. It only changes through the methods below, which then
// tell the listeners (the views re-render, the cache is saved).
//
// A conversation's log is held as its messages by seq plus the range of seqs [lo, hi]
// that is loaded without gaps. Entries that are not messages (edits, deletes, reactions,
// pins) are folded into the message they target, by the `.proto`'s rule: an event applies
// to a message whose state is older than it (`stateSeq < event.seq`); the folded message
// then carries the event's seq as its `stateSeq`, so every event applies exactly once,
// whether it comes live, in a replay or in a page of history.

import type { Attachment, ContentType, Conversation, Entry, HistoryPage, Message, Receipt, StoredAck, TextFormat } from '../client/index.js';

/** A message the user sent that the server has not confirmed yet. */
export interface PendingSend {
  clientMessageId: string;
  conversationId: string;
  text: string;
  format: TextFormat;
  /** `image` or `document` for a file (uploaded already); absent for text. */
  type?: ContentType;
  attachments?: Attachment[];
  replyTo: number | null;
  createdAt: string;
  /** Its seq once acknowledged (it shows as sent until its `message` event arrives). */
  seq: number | null;
  /** Why it could not be sent (then it can be retried). */
  failed: string | null;
}

/** How far a participant has received and read a conversation. */
export interface Positions {
  delivered: number;
  read: number;
}

interface Log {
  lo: number;
  hi: number;
  messages: Map<number, Message>;
}

/** What the cache keeps. */
export interface Snapshot {
  version: 1;
  conversations: Conversation[];
  logs: { conversationId: string; lo: number; hi: number; messages: Message[] }[];
  receipts: { conversationId: string; users: [string, Positions][] }[];
  pending: PendingSend[];
  cursors: Record<string, number>;
}

/** Messages kept per conversation in the cache. */
const CACHED_MESSAGES = 100;

/** What a message says in one line: its text, or its files ("📎 Exhibit A.pdf"). */
export function contentPreview(content: { text: string; attachments?: Attachment[] } | null | undefined): string {
  if (!content) return '';
  if (content.text) return content.text;
  const files = content.attachments ?? [];
  return files.length ? `📎 ${files.map((a) => a.name).join(', ')}` : '';
}

/** Applies one event entry to the message it targets; returns the message unchanged when the event is already in it. */
export function fold(m: Message, e: Entry): Message {
  const ev = e.event;
  if (!ev || !('targetSeq' in ev) || e.seq <= m.stateSeq) return m;
  const next: Message = { ...m, stateSeq: e.seq };
  switch (ev.type) {
    case 'edited':
      // A redacted edit was replaced by a later one: folding skips it.
      if (ev.redacted || !ev.content) return next;
      return { ...next, content: { ...ev.content, attachments: m.content?.attachments ?? [] }, editedAt: e.timestamp };
    case 'deleted':
      return { ...next, content: null, deletedAt: e.timestamp, deletedBy: e.senderId };
    case 'reaction_added':
      if (m.reactions.some((r) => r.userId === e.senderId && r.emoji === ev.emoji)) return next;
      return { ...next, reactions: [...m.reactions, { userId: e.senderId, emoji: ev.emoji }] };
    case 'reaction_removed':
      return { ...next, reactions: m.reactions.filter((r) => !(r.userId === e.senderId && r.emoji === ev.emoji)) };
    case 'pinned':
    case 'unpinned':
      return { ...next, pinned: ev.type === 'pinned' };
  }
}

export class ChatStore {
  private readonly convs = new Map<string, Conversation>();
  private readonly logs = new Map<string, Log>();
  private readonly sends = new Map<string, PendingSend>();
  private readonly positions = new Map<string, Map<string, Positions>>();
  private readonly typists = new Map<string, Set<string>>();
  private readonly online = new Map<string, boolean>();
  private readonly listeners = new Set<() => void>();

  /** `me`: the user, or empty until the first authentication names them. */
  constructor(public me: string) {}

  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private changed(): void {
    for (const fn of this.listeners) fn();
  }

  // ─────────────── conversations ───────────────

  /** The user's conversations, most recently active first. */
  conversations(): Conversation[] {
    const at = (c: Conversation) => c.lastMessage?.timestamp ?? c.updatedAt ?? c.createdAt ?? '';
    return [...this.convs.values()].sort((a, b) => at(b).localeCompare(at(a)));
  }

  conversation(id: string): Conversation | undefined {
    return this.convs.get(id);
  }

  /** The server's list replaces ours, except for newer last messages that came while it was on its way. */
  setConversations(list: Conversation[]): void {
    const held = new Map(this.convs);
    this.convs.clear();
    for (const c of list) {
      const mine = held.get(c._id);
      const newer = mine?.lastMessage && mine.lastMessage.seq > (c.lastMessage?.seq ?? 0);
      // The server's last message has only the text: a file's name is ours to add.
      const same = mine?.lastMessage && c.lastMessage && mine.lastMessage.seq === c.lastMessage.seq && !c.lastMessage.content;
      if (newer) this.convs.set(c._id, { ...c, lastMessage: mine.lastMessage, lastSeq: Math.max(c.lastSeq, mine.lastSeq), updatedAt: mine.updatedAt });
      else if (same) this.convs.set(c._id, { ...c, lastMessage: { ...c.lastMessage!, content: this.previewOf(c._id, c.lastMessage!.seq) ?? mine.lastMessage!.content } });
      else this.convs.set(c._id, c);
    }
    this.changed();
  }

  upsertConversation(c: Conversation): void {
    const mine = this.convs.get(c._id)?.lastMessage;
    const last = c.lastMessage;
    // As in setConversations: the server's last message has no file names.
    const keep = last && !last.content && mine?.seq === last.seq ? { ...c, lastMessage: { ...last, content: mine.content } } : c;
    this.convs.set(c._id, keep);
    this.changed();
  }

  /** What the loaded message `seq` says in one line (undefined: not loaded). */
  previewOf(conversationId: string, seq: number): string | undefined {
    const m = this.message(conversationId, seq);
    if (!m) return undefined;
    return m.deletedAt !== null || !m.content ? '' : contentPreview(m.content);
  }

  /** A person's name as the conversations know it. */
  nameOf(userId: string): string {
    for (const c of this.convs.values()) {
      const p = c.participants.find((x) => x.userId === userId);
      if (p?.displayName) return p.displayName;
    }
    return userId;
  }

  /** Everyone the user shares a conversation with. */
  contacts(): string[] {
    const ids = new Set<string>();
    for (const c of this.convs.values()) for (const p of c.participants) if (p.userId !== this.me) ids.add(p.userId);
    return [...ids];
  }

  /** The title, or who else is in it. */
  titleOf(c: Conversation): string {
    if (c.title) return c.title;
    const others = c.participants.filter((p) => p.userId !== this.me).map((p) => this.nameOf(p.userId));
    return others.length ? others.join(', ') : 'Just you';
  }

  // ─────────────── messages ───────────────

  /** The loaded messages of a conversation, in log order. */
  messages(conversationId: string): Message[] {
    const log = this.logs.get(conversationId);
    return log ? [...log.messages.values()].sort((a, b) => a.seq - b.seq) : [];
  }

  message(conversationId: string, seq: number): Message | undefined {
    return this.logs.get(conversationId)?.messages.get(seq);
  }

  /** The oldest loaded seq; older entries exist while it is above 1. */
  oldestSeq(conversationId: string): number | null {
    return this.logs.get(conversationId)?.lo ?? null;
  }

  /** The newest loaded message's seq (0: none). */
  newestMessageSeq(conversationId: string): number {
    let newest = 0;
    for (const seq of this.logs.get(conversationId)?.messages.keys() ?? []) newest = Math.max(newest, seq);
    return newest;
  }

  private log(conversationId: string, from: number): Log {
    let log = this.logs.get(conversationId);
    if (!log) {
      log = { lo: from, hi: from - 1, messages: new Map() };
      this.logs.set(conversationId, log);
    }
    return log;
  }

  /** Puts a message in its log, keeping whichever copy has the newer state. */
  private put(log: Log, m: Message): void {
    const held = log.messages.get(m.seq);
    if (!held || m.stateSeq > held.stateSeq) log.messages.set(m.seq, m);
    if (m.senderId === this.me && this.sends.has(m.clientMessageId)) this.sends.delete(m.clientMessageId);
    // The server's view of who read the user's own message.
    if (m.senderId === this.me) for (const r of m.deliveryStatus.read) this.bump(m.conversationId, r.userId, { read: m.seq });
  }

  /** A new message, live or replayed, in seq order. */
  addMessage(m: Message): void {
    const log = this.log(m.conversationId, m.seq);
    this.put(log, m);
    log.hi = Math.max(log.hi, m.seq);
    this.typists.get(m.conversationId)?.delete(m.senderId);
    const c = this.convs.get(m.conversationId);
    if (c && m.seq > (c.lastMessage?.seq ?? 0)) {
      this.convs.set(c._id, {
        ...c,
        lastMessage: { content: contentPreview(m.content), timestamp: m.timestamp, senderId: m.senderId, seq: m.seq },
        lastSeq: Math.max(c.lastSeq, m.seq),
        updatedAt: m.timestamp,
        unreadCount: c.unreadCount + (m.senderId === this.me ? 0 : 1),
      });
    }
    this.changed();
  }

  /** An edit, delete, reaction or pin. */
  applyEvent(e: Entry): void {
    const log = this.log(e.conversationId, e.seq);
    log.hi = Math.max(log.hi, e.seq);
    this.foldInto(log, e);
    this.changed();
  }

  private foldInto(log: Log, e: Entry): void {
    if (!e.event || !('targetSeq' in e.event)) return;
    const target = log.messages.get(e.event.targetSeq);
    if (!target) return; // not loaded: a page that brings it has it folded already
    log.messages.set(target.seq, fold(target, e));
    const c = this.convs.get(e.conversationId);
    if (c?.lastMessage?.seq === target.seq && (e.event.type === 'edited' || e.event.type === 'deleted')) {
      this.convs.set(c._id, { ...c, lastMessage: { ...c.lastMessage, content: contentPreview(log.messages.get(target.seq)?.content) } });
    }
  }

  /** A page of history: the newest (`latest`) or the one before the oldest loaded (`older`). */
  addPage(page: HistoryPage, kind: 'latest' | 'older'): void {
    const entries = page.messages;
    const id = page.conversationId;
    let log = this.logs.get(id);
    if (entries.length === 0) {
      if (kind === 'older' || !log) this.log(id, 1).lo = 1;
      this.changed();
      return;
    }
    const first = entries[0].seq;
    const last = entries[entries.length - 1].seq;
    if (log && kind === 'latest' && first > log.hi + 1) {
      // The page does not meet what is loaded (e.g. a cache from long ago): start afresh from it.
      this.logs.delete(id);
      log = undefined;
    }
    if (log && kind === 'latest' && last < log.lo - 1) return; // older than what live entries already brought
    log ??= this.log(id, first);
    for (const e of entries) {
      if (e.event) this.foldInto(log, e);
      else this.put(log, e as Message);
    }
    // `hasMore`: older entries exist (the newest page and pages before a seq alike).
    log.lo = page.hasMore ? Math.min(log.lo, first) : 1;
    log.hi = Math.max(log.hi, last);
    this.changed();
  }

  // ─────────────── sends ───────────────

  addPending(p: PendingSend): void {
    this.sends.set(p.clientMessageId, p);
    this.changed();
  }

  pending(conversationId?: string): PendingSend[] {
    const all = [...this.sends.values()];
    return conversationId ? all.filter((p) => p.conversationId === conversationId) : all;
  }

  /** Stored: it shows as sent until its message arrives (or at once, if it has). */
  settle(clientMessageId: string, ack: StoredAck): void {
    const p = this.sends.get(clientMessageId);
    if (!p) return;
    if (this.message(ack.conversationId, ack.seq)) this.sends.delete(clientMessageId);
    else this.sends.set(clientMessageId, { ...p, seq: ack.seq, failed: null });
    this.changed();
  }

  fail(clientMessageId: string, reason: string): void {
    const p = this.sends.get(clientMessageId);
    if (!p) return;
    this.sends.set(clientMessageId, { ...p, failed: reason });
    this.changed();
  }

  discard(clientMessageId: string): void {
    if (this.sends.delete(clientMessageId)) this.changed();
  }

  // ─────────────── receipts, typing, presence ───────────────

  private bump(conversationId: string, userId: string, to: Partial<Positions>): void {
    let users = this.positions.get(conversationId);
    if (!users) {
      users = new Map();
      this.positions.set(conversationId, users);
    }
    const at = users.get(userId) ?? { delivered: 0, read: 0 };
    const read = Math.max(at.read, to.read ?? 0);
    users.set(userId, { read, delivered: Math.max(at.delivered, to.delivered ?? 0, read) });
  }

  setReceipts(conversationId: string, states: { userId: string; deliveredSeq: number; readSeq: number }[]): void {
    for (const s of states) this.bump(conversationId, s.userId, { delivered: s.deliveredSeq, read: s.readSeq });
    this.changed();
  }

  receipt(r: Receipt): void {
    this.bump(r.conversationId, r.userId, r.kind === 'read' ? { read: r.seq } : { delivered: r.seq });
    this.changed();
  }

  /** The others who have read up to `seq`. */
  readers(conversationId: string, seq: number): string[] {
    const users = this.positions.get(conversationId) ?? new Map<string, Positions>();
    return [...users].filter(([u, p]) => u !== this.me && p.read >= seq).map(([u]) => u);
  }

  /** Whether `seq` reached at least one other participant. */
  delivered(conversationId: string, seq: number): boolean {
    return [...(this.positions.get(conversationId) ?? [])].some(([u, p]) => u !== this.me && p.delivered >= seq);
  }

  /** The user read the conversation up to `seq`. */
  markedRead(conversationId: string, seq: number): void {
    this.bump(conversationId, this.me, { read: seq });
    const c = this.convs.get(conversationId);
    if (c) this.convs.set(c._id, { ...c, unreadCount: 0, mentionCount: 0 });
    this.changed();
  }

  myReadSeq(conversationId: string): number {
    return this.positions.get(conversationId)?.get(this.me)?.read ?? 0;
  }

  typing(conversationId: string, userId: string, active: boolean): void {
    if (userId === this.me) return;
    let set = this.typists.get(conversationId);
    if (!set) {
      set = new Set();
      this.typists.set(conversationId, set);
    }
    if (active) set.add(userId);
    else set.delete(userId);
    this.changed();
  }

  /** Who is typing in a conversation, by name. */
  typingIn(conversationId: string): string[] {
    return [...(this.typists.get(conversationId) ?? [])].map((u) => this.nameOf(u));
  }

  /** Typing signals stop with the connection. */
  clearTyping(): void {
    this.typists.clear();
    this.changed();
  }

  setPresence(userId: string, online: boolean): void {
    this.online.set(userId, online);
    this.changed();
  }

  /** Online, offline, or not known yet. */
  isOnline(userId: string): boolean | undefined {
    return this.online.get(userId);
  }

  // ─────────────── cache ───────────────

  snapshot(cursors: Record<string, number>): Snapshot {
    const logs = [...this.logs].map(([conversationId, log]) => {
      const messages = [...log.messages.values()].sort((a, b) => a.seq - b.seq).slice(-CACHED_MESSAGES);
      const lo = messages.length < log.messages.size ? messages[0].seq : log.lo;
      return { conversationId, lo, hi: log.hi, messages };
    });
    const receipts = [...this.positions].map(([conversationId, users]) => ({ conversationId, users: [...users] }));
    return { version: 1, conversations: [...this.convs.values()], logs, receipts, pending: [...this.sends.values()], cursors };
  }

  restore(s: Snapshot): void {
    for (const c of s.conversations) this.convs.set(c._id, c);
    for (const l of s.logs) this.logs.set(l.conversationId, { lo: l.lo, hi: l.hi, messages: new Map(l.messages.map((m) => [m.seq, m])) });
    for (const r of s.receipts) this.positions.set(r.conversationId, new Map(r.users));
    for (const p of s.pending) this.sends.set(p.clientMessageId, p);
    this.changed();
  }
}

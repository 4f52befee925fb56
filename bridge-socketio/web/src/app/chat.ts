// ChatContainer: the signed-in app. It owns the ChatClient, the store and the views, and
// wires them: client events → store → (re-render, save to the cache); user actions →
// client requests.
//
// Offline: the store starts from the cache (conversations, recent history, unsent
// messages, resume cursors), so a reload without a network shows what was there. Sends
// are shown at once as "Sending…"; the ChatClient's outbox holds them until the
// connection returns and sends them with the same client message id, so each is stored
// once; their `message` event (same id) then replaces the placeholder.
//
// Files (FileUpload): uploaded first (the upload waits for the connection, and resumes
// after a cut), then sent like any message: as a pending send carrying the stored
// attachment, so the outbox and the cache treat it as they treat text.

import {
  type Attachment,
  ChatClient,
  type ClientState,
  type Identity,
  type Message,
  newClientMessageId,
  type TextFormat,
} from '../client/index.js';
import { ImageViewer, saveFrom } from './attachments.js';
import * as cache from './cache.js';
import { ConversationList } from './conversation-list.js';
import { h, setChildren } from './dom.js';
import { FileUpload } from './file-upload.js';
import { type InputMode, MessageInput } from './message-input.js';
import { MessageList } from './message-list.js';
import { demoToken, signOutMessage } from './signin.js';
import { ConnectionBanner, presenceDot, TypingIndicator } from './status.js';
import { ChatStore, type PendingSend, type Snapshot } from './store.js';

/** Who is signed in: kept in sessionStorage, so it lasts as long as the tab. */
export interface Session {
  token: string;
  /** Known once signed in (or from the demo account chosen): names the cache. */
  me?: { userId: string; role: string };
  /** Signed in through a demo account (development mode): fresh tokens come from the bridge's list. */
  demo?: boolean;
}

/** How long a send may wait for the connection before it shows as failed. */
const SEND_TIMEOUT_MS = 60 * 60_000;
const HISTORY_PAGE = 50;

const cacheKey = (userId: string) => `user:${userId}`;

/** Forgets what this device keeps for a user (on sign-out). */
export function forget(userId: string): Promise<void> {
  return cache.remove(cacheKey(userId));
}

/**
 * Shows the chat in `root`. `saveSession` keeps what was learned about the session;
 * `signOut` is called on "Sign out" and when the server refuses the token.
 */
export async function startChat(
  root: HTMLElement,
  session: Session,
  saveSession: (s: Session) => void,
  signOut: (reason?: string) => void,
): Promise<void> {
  // With the user known before connecting, the cache shows at once and the session
  // resumes from its cursors; else both start with the first connection.
  const snapshot = session.me ? await cache.load<Snapshot>(cacheKey(session.me.userId)) : undefined;
  // A demo account's session is renewed from the bridge's list before its token expires,
  // so that a tab left open stays signed in.
  const demo = session.demo && session.me;
  const client = new ChatClient(undefined, {
    cursors: snapshot?.version === 1 ? snapshot.cursors : undefined,
    sendTimeoutMs: SEND_TIMEOUT_MS,
    tokenProvider: demo ? () => demoToken(demo.userId, demo.role) : undefined,
  });
  // What this tab knows of its session; a renewed token replaces the old one (a reload
  // then signs in with it).
  let current = session;
  const keep = (s: Session) => {
    current = s;
    saveSession(s);
  };
  const store = new ChatStore(session.me?.userId ?? '');
  if (snapshot?.version === 1) store.restore(snapshot);
  // Everything registered here goes when the user signs out.
  const teardown = new AbortController();
  const leave = (reason?: string) => {
    if (teardown.signal.aborted) return;
    teardown.abort();
    client.disconnect();
    if (store.me) void forget(store.me);
    signOut(reason);
  };
  const who = h('span', { class: 'who' }, session.me ? `Signed in as ${session.me.userId} (${session.me.role})` : '');
  // The first authentication names the user; later ones must name the same one.
  const adopt = (identity: Identity) => {
    if (store.me && store.me !== identity.userId) return leave('That token belongs to another user.');
    store.me = identity.userId;
    who.textContent = `Signed in as ${identity.displayName || identity.userId} (${identity.role})`;
    if (!current.me) keep({ ...current, me: { userId: identity.userId, role: identity.role } });
  };
  client.on('token_renewed', ({ token }) => {
    if (!teardown.signal.aborted) keep({ ...current, token });
  });
  // Signed out by the server (token expired, sessions revoked, account deactivated) or
  // refused: the client has stopped (it does not reconnect with a refused token); back to
  // the sign-in page, which says why.
  client.on('unauthorized', (e) => leave(signOutMessage(e)));
  wire(root, client, store, { who, adopt, leave, signal: teardown.signal });
  client.connect(current.token).catch((e: Error) => leave(`Sign-in refused: ${e.message}`));
}

interface Hooks {
  who: HTMLElement;
  adopt(identity: Identity): void;
  leave(reason?: string): void;
  signal: AbortSignal;
}

function wire(root: HTMLElement, client: ChatClient, store: ChatStore, hooks: Hooks): void {
  const { signal } = hooks;
  const banner = new ConnectionBanner();
  const notice = h('p', { class: 'notice', role: 'alert' });
  const main = h('main', { class: 'layout' });
  setChildren(
    root,
    h('header', { class: 'top' }, h('h1', {}, 'LegalChat'), hooks.who, h('button', { type: 'button', class: 'signout', onclick: () => hooks.leave() }, 'Sign out')),
    banner.el,
    notice,
    main,
  );
  let openId: string | null = null;
  let state: ClientState = client.state;
  let joined: string | null = null;

  const say = (text: string) => {
    notice.textContent = text;
  };
  const failed = (what: string) => (e: Error) => say(`${what} failed: ${e.message}`);

  // ─────────────── sending ───────────────

  const transmit = (p: PendingSend) => {
    const content = p.attachments?.length
      ? { text: p.text, format: p.format, type: p.type ?? 'document', attachments: p.attachments.map((a) => ({ fileId: a.fileId, name: a.name })) }
      : { text: p.text, format: p.format };
    client
      .sendMessage(p.conversationId, content, { clientMessageId: p.clientMessageId, replyTo: p.replyTo ?? undefined })
      .then((ack) => store.settle(p.clientMessageId, ack), (e: Error) => store.fail(p.clientMessageId, e.message));
  };

  const submit = async (text: string, format: TextFormat, mode: InputMode): Promise<boolean> => {
    if (!openId) return false;
    say('');
    if (mode.kind === 'edit') {
      return client.editMessage(openId, mode.of.seq, { text, format }).then(() => true, (e: Error) => (failed('Editing')(e), false));
    }
    const p: PendingSend = {
      clientMessageId: newClientMessageId(),
      conversationId: openId,
      text,
      format,
      replyTo: mode.kind === 'reply' ? mode.to.seq : null,
      createdAt: new Date().toISOString(),
      seq: null,
      failed: null,
    };
    store.addPending(p);
    transmit(p);
    return true;
  };

  /** Uploads a file, then sends it as a message of its own. */
  const sendFile = async (conversationId: string, file: File, options: { onProgress(sent: number, total: number): void; signal: AbortSignal; uploadId?: string }) => {
    const attachment = await client.uploadFile(conversationId, file, options);
    const p: PendingSend = {
      clientMessageId: newClientMessageId(),
      conversationId,
      text: '',
      format: 'plain',
      type: attachment.type.startsWith('image/') ? 'image' : 'document',
      attachments: [attachment],
      replyTo: null,
      createdAt: new Date().toISOString(),
      seq: null,
      failed: null,
    };
    store.addPending(p);
    transmit(p);
  };

  const download = (conversationId: string, a: Attachment) => {
    client.downloadUrl(conversationId, a.fileId).then((url) => saveFrom(url, a.name), failed(`Downloading ${a.name}`));
  };
  /** The conversation of the image in the viewer. */
  let viewing = '';
  const viewer = new ImageViewer({ download: (a) => download(viewing, a) });
  const openImage = (conversationId: string, a: Attachment) => {
    viewing = conversationId;
    viewer.show(a, client.downloadUrl(conversationId, a.fileId, { inline: true }));
  };

  // ─────────────── views ───────────────

  const list = new ConversationList({
    store,
    onCreate: async (participants, title) => {
      if (participants.length === 0) return 'Name at least one person.';
      const type = participants.length === 1 && !title ? 'private' : 'group';
      try {
        const c = await client.createConversation({ type, participants, title: title || undefined });
        store.upsertConversation(c);
        location.hash = `c=${c._id}`;
        return null;
      } catch (e) {
        // One private conversation per pair: open the one there is.
        const existing = type === 'private' && store.conversations().find((c) => c.type === 'private' && c.participants.some((p) => p.userId === participants[0]));
        if (existing) {
          location.hash = `c=${existing._id}`;
          return null;
        }
        return (e as Error).message;
      }
    },
  });

  const messages = new MessageList({
    store,
    onReply: (m) => input.replyTo(m),
    onEdit: (m) => input.edit(m),
    onDelete: (m) => {
      if (confirm('Delete this message for everyone?')) client.deleteMessage(m.conversationId, m.seq).catch(failed('Deleting'));
    },
    onPin: (m) => void client.pin(m.conversationId, m.seq, m.pinned).catch(failed('Pinning')),
    onReact: (m, emoji) => {
      const mine = m.reactions.some((r) => r.userId === store.me && r.emoji === emoji);
      (mine ? client.unreact(m.conversationId, m.seq, emoji) : client.react(m.conversationId, m.seq, emoji)).catch(failed('Reacting'));
    },
    onRetry: (p) => {
      store.addPending({ ...p, failed: null });
      transmit(p);
    },
    onDiscard: (p) => store.discard(p.clientMessageId),
    onOpenImage: openImage,
    onDownload: download,
    onLoadOlder: async () => {
      const id = openId;
      const before = id && store.oldestSeq(id);
      if (!id || !before) return;
      await client.history(id, { before, limit: HISTORY_PAGE }).then((page) => store.addPage(page, 'older'), failed('Loading history'));
    },
  });

  const uploads = new FileUpload({ conversation: () => openId, upload: sendFile });
  signal.addEventListener('abort', () => uploads.cancelAll());

  const input = new MessageInput({
    before: uploads.button,
    onSubmit: submit,
    onTyping: () => openId && client.startTyping(openId),
    onStopTyping: () => openId && client.stopTyping(openId),
    nameOf: (u) => (u === store.me ? 'yourself' : store.nameOf(u)),
  });

  const typing = new TypingIndicator();
  const title = h('h2', { tabindex: '-1' });
  const people = h('p', { class: 'people' });
  const back = h('a', { href: '#', class: 'back', 'aria-label': 'Back to conversations' }, '‹');
  const chat = h(
    'section',
    { class: 'chat-pane', 'aria-labelledby': 'chat-title' },
    h('div', { class: 'pane-head chat-head' }, back, h('div', {}, title, people)),
    messages.el,
    typing.el,
    uploads.el,
    input.el,
    viewer.el,
  );
  title.id = 'chat-title';
  uploads.dropOn(chat, signal);
  // A file dropped beside the drop zone is not opened in place of the app.
  for (const type of ['dragover', 'drop'] as const) {
    window.addEventListener(type, (e) => e.dataTransfer?.types.includes('Files') && e.preventDefault(), { signal });
  }
  const placeholder = h('section', { class: 'chat-pane placeholder' }, h('p', {}, 'Choose a conversation, or start a new one.'));
  setChildren(main, list.el, placeholder);

  // ─────────────── rendering ───────────────

  let scheduled = false;
  const render = () => {
    scheduled = false;
    // Signed out meanwhile (the server's sign-out closes the client just before it says
    // why): the sign-in page has taken the root.
    if (signal.aborted) return;
    banner.render(state);
    list.render(openId);
    const c = openId ? store.conversation(openId) : undefined;
    main.classList.toggle('has-open', !!c);
    const pane = c ? chat : placeholder;
    if (!pane.isConnected) main.replaceChild(pane, c ? placeholder : chat);
    uploads.show(c ? c._id : null);
    if (!c) return;
    title.textContent = store.titleOf(c);
    setChildren(
      people,
      c.participants.map((p) =>
        h('span', { class: 'person' }, p.userId === store.me ? 'You' : store.nameOf(p.userId), p.userId !== store.me && presenceDot(store.isOnline(p.userId))),
      ),
    );
    messages.render(c._id, state === 'online');
    typing.render(store.typingIn(c._id));
    markRead();
  };
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(render);
  };

  // Saved after every change, one write at a time: changes made while a write is under
  // way go in the next one. (Not on a timer: background tabs delay timers by seconds or
  // more, and a reload in between would lose what the cache should have had.)
  let saving: 'idle' | 'soon' | 'writing' = 'idle';
  let again = false;
  const save = () => {
    if (saving === 'writing') again = true;
    if (saving !== 'idle') return;
    saving = 'soon';
    // After this task's other changes: one snapshot for a burst of events.
    queueMicrotask(async () => {
      saving = 'writing';
      do {
        again = false;
        if (store.me && !signal.aborted) await cache.save(cacheKey(store.me), store.snapshot(client.cursors()));
      } while (again);
      saving = 'idle';
    });
  };
  store.onChange(() => {
    schedule();
    save();
  });
  document.addEventListener('visibilitychange', () => schedule(), { signal });

  // Reads what is on screen: up to the newest message, when the tab is visible.
  let reading = 0;
  const markRead = () => {
    if (!openId || state !== 'online' || document.visibilityState !== 'visible') return;
    const newest = store.newestMessageSeq(openId);
    if (newest <= Math.max(store.myReadSeq(openId), reading)) return;
    const id = openId;
    reading = newest;
    client.markReadAt(id, newest).then(() => store.markedRead(id, newest), () => (reading = 0));
  };

  // ─────────────── opening a conversation ───────────────

  const refreshOpen = async () => {
    const id = openId;
    if (!id || state !== 'online') return;
    joined = id;
    const [page, receipts] = await Promise.all([
      client.history(id, { limit: HISTORY_PAGE }),
      client.receipts(id),
      client.joinConversation(id),
    ]).catch((e: Error) => (failed('Loading the conversation')(e), [null, null]));
    if (page) store.addPage(page, 'latest');
    if (receipts) store.setReceipts(id, receipts.states);
  };

  const route = () => {
    const id = /^#c=([0-9a-f]+)$/i.exec(location.hash)?.[1] ?? null;
    if (id === openId) return;
    if (openId) client.stopTyping(openId);
    // Typing signals come only for the open conversation.
    if (joined) void client.leaveConversation(joined).catch(() => {});
    joined = null;
    openId = id;
    reading = 0;
    if (viewer.el.open) viewer.el.close();
    input.reset();
    say('');
    schedule();
    if (id) {
      void refreshOpen();
      queueMicrotask(() => title.focus());
    }
  };
  window.addEventListener('hashchange', route, { signal });

  // ─────────────── client events ───────────────

  client.on('state', (s) => {
    if (s === 'online' && client.me) hooks.adopt(client.me);
    if (signal.aborted) return;
    state = s;
    if (s !== 'online') {
      store.clearTyping();
      joined = null;
    }
    schedule();
    if (s === 'online') void refresh();
  });
  client.on('message', (m: Message) => store.addMessage(m));
  client.on('message_event', (e) => store.applyEvent(e));
  client.on('conversation', (c) => store.upsertConversation(c));
  client.on('receipt', (r) => store.receipt(r));
  client.on('typing', (t) => store.typing(t.conversationId, t.userId, t.active));
  client.on('presence', (p) => store.setPresence(p.userId, p.online));

  const refresh = async () => {
    try {
      store.setConversations(await client.listConversations());
      const contacts = store.contacts();
      if (contacts.length) for (const p of await client.presence(contacts)) store.setPresence(p.userId, p.online);
    } catch (e) {
      failed('Loading conversations')(e as Error);
    }
    await refreshOpen();
  };

  // Unsent messages from before a reload go again, with their ids: stored once at most.
  for (const p of store.pending()) if (p.seq === null && !p.failed) transmit(p);
  route();
  schedule();
}


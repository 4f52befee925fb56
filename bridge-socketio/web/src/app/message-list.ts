// MessageList: one conversation's messages as a `role="log"` live region, oldest first,
// with the user's unconfirmed sends at the end. Older pages load on scrolling to the top
// or with the "Load older messages" button. Each message has its replies' quote, its
// reactions (MessageReactions), read receipts on the user's own messages, and a menu of
// actions: reply, react, edit, delete, pin. Files show under the text (image previews,
// file chips); a message of files alone has no text line.

import type { Attachment, Message } from '../client/index.js';
import { attachmentsEl } from './attachments.js';
import { h, KeyedList, type Row, srOnly } from './dom.js';
import { plainText, renderMarkdown } from './markdown.js';
import { type ChatStore, contentPreview, type PendingSend } from './store.js';

/** The reactions offered by the picker, with the names screen readers say. */
export const REACTIONS: [string, string][] = [
  ['👍', 'thumbs up'],
  ['✅', 'check mark'],
  ['👀', 'eyes'],
  ['🙏', 'thank you'],
  ['😊', 'smile'],
  ['🎉', 'celebrate'],
];

export interface MessageListProps {
  store: ChatStore;
  onReply(m: Message): void;
  onEdit(m: Message): void;
  onDelete(m: Message): void;
  onPin(m: Message): void;
  /** Adds the user's reaction, or takes it back if it is there. */
  onReact(m: Message, emoji: string): void;
  onRetry(p: PendingSend): void;
  onDiscard(p: PendingSend): void;
  onLoadOlder(): Promise<void>;
  /** Shows an image attachment in full. */
  onOpenImage(conversationId: string, a: Attachment): void;
  /** Saves an attachment. */
  onDownload(conversationId: string, a: Attachment): void;
}

const time = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

export class MessageList {
  readonly el: HTMLElement;
  private readonly log = h('div', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Messages' });
  private readonly older: HTMLButtonElement;
  private readonly rows = new KeyedList(this.log);
  private conversationId: string | null = null;
  /** The message whose action menu is open, and whether its reaction picker is. */
  private menu: { key: string; picker: boolean } | null = null;
  private loading = false;
  private online = false;
  private canLoad = false;

  constructor(private readonly props: MessageListProps) {
    this.older = h('button', { type: 'button', class: 'older', onclick: () => void this.loadOlder() }, 'Load older messages');
    this.el = h('div', { class: 'scroller' }, this.older, this.log);
    this.el.addEventListener('scroll', () => {
      if (this.el.scrollTop < 60) void this.loadOlder();
    });
    this.log.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this.menu) {
        const key = this.menu.key;
        this.setMenu(null);
        this.log.querySelector<HTMLElement>(`[data-key="${CSS.escape(key)}"] .more`)?.focus();
      }
    });
  }

  private async loadOlder(): Promise<void> {
    if (this.loading || !this.canLoad) return;
    this.loading = true;
    this.older.textContent = 'Loading…';
    try {
      await this.props.onLoadOlder();
    } finally {
      this.loading = false;
      this.older.textContent = 'Load older messages';
    }
  }

  private setMenu(menu: { key: string; picker: boolean } | null): void {
    this.menu = menu;
    if (this.conversationId) this.render(this.conversationId, this.online);
  }

  /** `online`: whether older pages can be fetched now. */
  render(conversationId: string, online: boolean): void {
    const { store } = this.props;
    const switched = conversationId !== this.conversationId;
    if (switched) {
      this.rows.clear();
      this.menu = null;
      this.conversationId = conversationId;
    }
    const oldest = store.oldestSeq(conversationId);
    this.online = online;
    this.canLoad = online && oldest !== null && oldest > 1;
    this.older.hidden = !this.canLoad;

    // Keep the view where the reader is: at the bottom it follows new messages; higher
    // up, the first visible message stays put when older ones are added above it.
    const el = this.el;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
    const anchor = atBottom ? null : [...this.log.children].find((c) => (c as HTMLElement).offsetTop + (c as HTMLElement).offsetHeight > el.scrollTop) as HTMLElement | undefined;
    const anchorTop = anchor?.offsetTop ?? 0;

    const rows: Row[] = store.messages(conversationId).map((m) => this.messageRow(m));
    for (const p of store.pending(conversationId).sort((a, b) => a.createdAt.localeCompare(b.createdAt))) rows.push(this.pendingRow(p));
    this.rows.update(rows);

    if (switched || atBottom) el.scrollTop = el.scrollHeight;
    else if (anchor?.isConnected) el.scrollTop += anchor.offsetTop - anchorTop;
  }

  private messageRow(m: Message): Row {
    const { store } = this.props;
    const key = `${m.senderId}:${m.clientMessageId || m._id}`;
    const mine = m.senderId === store.me;
    const status = mine ? this.receipt(m) : '';
    const quoted = m.replyTo ? store.message(m.conversationId, m.replyTo) : undefined;
    const menu = this.menu?.key === key ? this.menu : null;
    return {
      key,
      version: [m, status, quoted, menu?.picker, store.nameOf(m.senderId)],
      build: () => this.messageEl(m, key, status, menu),
    };
  }

  private receipt(m: Message): string {
    const readers = this.props.store.readers(m.conversationId, m.seq);
    if (readers.length) return `Read by ${readers.map((u) => this.props.store.nameOf(u)).join(', ')}`;
    return this.props.store.delivered(m.conversationId, m.seq) ? 'Delivered' : 'Sent';
  }

  private messageEl(m: Message, key: string, status: string, menu: { picker: boolean } | null): HTMLElement {
    const { store } = this.props;
    const mine = m.senderId === store.me;
    const deleted = m.deletedAt !== null || !m.content;
    const sender = mine ? 'You' : store.nameOf(m.senderId);
    const menuId = `menu-${m.seq}`;
    return h(
      'article',
      { class: `msg${mine ? ' mine' : ''}`, 'data-key': key, 'data-seq': m.seq },
      this.meta(sender, m.timestamp, m.editedAt !== null && !deleted, m.pinned),
      m.replyTo !== null && this.quote(m),
      deleted ? h('p', { class: 'body deleted' }, 'Message deleted') : this.content(m.conversationId, m.content!.text, m.content!.format === 'markdown', m.content!.attachments),
      this.reactions(m),
      mine && h('p', { class: 'status' }, h('span', { 'aria-hidden': 'true' }, status === 'Sent' ? '✓ ' : '✓✓ '), status),
      !deleted &&
        h(
          'button',
          {
            type: 'button',
            class: 'icon more',
            'aria-label': `Actions for ${mine ? 'your' : `${sender}’s`} message`,
            'aria-expanded': menu ? 'true' : 'false',
            'aria-controls': menuId,
            'data-focus': 'more',
            onclick: () => this.setMenu(menu ? null : { key, picker: false }),
          },
          '⋯',
        ),
      menu && this.actions(m, key, menuId, menu.picker),
    );
  }

  private meta(sender: string, at: string, edited: boolean, pinned: boolean): HTMLElement {
    return h(
      'p',
      { class: 'meta' },
      h('span', { class: 'sender' }, sender),
      ' ',
      h('time', { datetime: at }, time.format(new Date(at))),
      edited && h('span', { class: 'tag' }, ' (edited)'),
      pinned && h('span', { class: 'tag' }, ' · Pinned'),
    );
  }

  private body(text: string, markdown: boolean): HTMLElement {
    return h('div', { class: 'body' }, markdown ? renderMarkdown(text) : text);
  }

  /** The text (unless it is empty beside files), then the files. */
  private content(conversationId: string, text: string, markdown: boolean, files: Attachment[] | undefined): (HTMLElement | null)[] {
    const actions = {
      open: (a: Attachment) => this.props.onOpenImage(conversationId, a),
      download: (a: Attachment) => this.props.onDownload(conversationId, a),
    };
    return [text || !files?.length ? this.body(text, markdown) : null, attachmentsEl(files, actions)];
  }

  /** The quoted message: as it is now if it is loaded, else the server's preview. */
  private quote(m: { conversationId: string; replyTo: number | null; replyPreview?: Message['replyPreview'] }): HTMLElement {
    const { store } = this.props;
    const target = store.message(m.conversationId, m.replyTo!);
    const who = target?.senderId ?? m.replyPreview?.senderId;
    const deleted = target ? target.deletedAt !== null || !target.content : (m.replyPreview?.deleted ?? false);
    const text = target?.content ? plainText(target.content.text, target.content.format) || contentPreview(target.content) : (m.replyPreview?.text ?? '');
    return h(
      'blockquote',
      { class: 'quote' },
      srOnly('In reply to '),
      h('span', { class: 'sender' }, who ? (who === store.me ? 'You' : store.nameOf(who)) : 'a message'),
      ': ',
      deleted ? h('em', {}, 'Message deleted') : text.length > 140 ? `${text.slice(0, 140)}…` : text,
    );
  }

  /** MessageReactions: one chip per emoji with its count; pressing a chip toggles the user's own. */
  private reactions(m: Message): HTMLElement | null {
    if (m.reactions.length === 0) return null;
    const by = new Map<string, string[]>();
    for (const r of m.reactions) by.set(r.emoji, [...(by.get(r.emoji) ?? []), r.userId]);
    const { store } = this.props;
    return h(
      'div',
      { class: 'reactions' },
      [...by].map(([emoji, users]) =>
        h(
          'button',
          {
            type: 'button',
            class: 'chip',
            'aria-pressed': users.includes(store.me) ? 'true' : 'false',
            'data-focus': `chip-${emoji}`,
            onclick: () => this.props.onReact(m, emoji),
          },
          `${emoji} ${users.length}`,
          srOnly(` — ${users.map((u) => (u === store.me ? 'you' : store.nameOf(u))).join(', ')}`),
        ),
      ),
    );
  }

  private actions(m: Message, key: string, id: string, picker: boolean): HTMLElement {
    const mine = m.senderId === this.props.store.me;
    const act = (label: string, run: () => void, focus = label) =>
      h('button', { type: 'button', 'data-focus': focus, onclick: () => { this.setMenu(null); run(); } }, label);
    return h(
      'div',
      { class: 'actions', id, role: 'group', 'aria-label': 'Message actions' },
      act('Reply', () => this.props.onReply(m)),
      h('button', { type: 'button', 'aria-expanded': picker ? 'true' : 'false', 'data-focus': 'react', onclick: () => this.setMenu({ key, picker: !picker }) }, 'React'),
      mine && act('Edit', () => this.props.onEdit(m)),
      mine && act('Delete', () => this.props.onDelete(m)),
      act(m.pinned ? 'Unpin' : 'Pin', () => this.props.onPin(m), 'pin'),
      picker &&
        h(
          'div',
          { class: 'picker', role: 'group', 'aria-label': 'Choose a reaction' },
          REACTIONS.map(([emoji, name]) =>
            h('button', { type: 'button', class: 'icon', 'aria-label': `React with ${name}`, 'data-focus': `pick-${emoji}`, onclick: () => { this.setMenu(null); this.props.onReact(m, emoji); } }, emoji),
          ),
        ),
    );
  }

  private pendingRow(p: PendingSend): Row {
    const key = `${this.props.store.me}:${p.clientMessageId}`;
    return { key, version: [p], build: () => this.pendingEl(p, key) };
  }

  private pendingEl(p: PendingSend, key: string): HTMLElement {
    return h(
      'article',
      { class: 'msg mine pending', 'data-key': key },
      this.meta('You', p.createdAt, false, false),
      p.replyTo !== null && this.quote(p),
      this.content(p.conversationId, p.text, p.format === 'markdown', p.attachments),
      p.failed
        ? h(
            'p',
            { class: 'status failed' },
            `Not sent: ${p.failed} `,
            h('button', { type: 'button', 'data-focus': 'retry', onclick: () => this.props.onRetry(p) }, 'Retry'),
            ' ',
            h('button', { type: 'button', 'data-focus': 'discard', onclick: () => this.props.onDiscard(p) }, 'Discard'),
          )
        : h('p', { class: 'status' }, p.seq === null ? 'Sending…' : [h('span', { 'aria-hidden': 'true' }, '✓ '), 'Sent']),
    );
  }
}

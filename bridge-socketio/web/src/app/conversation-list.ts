// ConversationList: the user's conversations (links to `#c=<id>`, so the browser's back
// button works on phones), unread counts, presence, and a form to start a conversation.

import type { Conversation } from '../client/index.js';
import { h, KeyedList, srOnly } from './dom.js';
import { presenceDot } from './status.js';
import type { ChatStore } from './store.js';

export interface ConversationListProps {
  store: ChatStore;
  /** Creates a conversation with `participants`; resolves with an error message, or null. */
  onCreate(participants: string[], title: string): Promise<string | null>;
}

export class ConversationList {
  readonly el: HTMLElement;
  private readonly list: KeyedList;
  private readonly empty = h('p', { class: 'empty' }, 'No conversations yet. Start one with “New conversation”.');
  private readonly form: HTMLFormElement;
  private readonly toggle: HTMLButtonElement;

  constructor(private readonly props: ConversationListProps) {
    const people = h('input', { id: 'new-people', name: 'people', required: true, autocomplete: 'off', placeholder: 'e.g. bob, carol' });
    const title = h('input', { id: 'new-title', name: 'title', autocomplete: 'off' });
    const error = h('p', { class: 'form-error', role: 'alert' });
    this.form = h(
      'form',
      { class: 'new-conv', id: 'new-conv', hidden: true },
      h('label', { for: 'new-people' }, 'People (user IDs, separated by commas)'),
      people,
      h('label', { for: 'new-title' }, 'Title (optional)'),
      title,
      error,
      h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Create'), h('button', { type: 'button', onclick: () => this.close() }, 'Cancel')),
    );
    this.form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const ids = people.value.split(/[\s,]+/).filter(Boolean);
      error.textContent = (await this.props.onCreate(ids, title.value.trim())) ?? '';
      if (!error.textContent) {
        this.form.reset();
        this.close();
      }
    });
    this.toggle = h('button', { type: 'button', 'aria-expanded': 'false', 'aria-controls': 'new-conv', onclick: () => (this.form.hidden ? this.open() : this.close()) }, 'New conversation');
    const ul = h('ul', { class: 'convs' });
    this.list = new KeyedList(ul);
    this.el = h('nav', { class: 'list-pane', 'aria-label': 'Conversations' }, h('div', { class: 'pane-head' }, h('h2', {}, 'Conversations'), this.toggle), this.form, ul, this.empty);
  }

  private open(): void {
    this.form.hidden = false;
    this.toggle.setAttribute('aria-expanded', 'true');
    this.form.querySelector('input')?.focus();
  }

  private close(): void {
    this.form.hidden = true;
    this.toggle.setAttribute('aria-expanded', 'false');
  }

  render(openId: string | null): void {
    const { store } = this.props;
    const convs = store.conversations();
    this.empty.hidden = convs.length > 0;
    this.list.update(
      convs.map((c) => {
        const title = store.titleOf(c);
        const others = c.participants.filter((p) => p.userId !== store.me);
        // Presence for one-to-one conversations: is the other person there.
        const online = others.length === 1 ? store.isOnline(others[0].userId) : undefined;
        return { key: c._id, version: [c, title, online, c._id === openId], build: () => this.item(c, title, online, c._id === openId) };
      }),
    );
  }

  private item(c: Conversation, title: string, online: boolean | undefined, current: boolean): HTMLElement {
    const last = c.lastMessage;
    const said = last && (last.content || this.props.store.previewOf(c._id, last.seq) || 'Message deleted');
    const preview = last ? `${last.senderId === this.props.store.me ? 'You' : this.props.store.nameOf(last.senderId)}: ${said}` : 'No messages yet';
    return h(
      'li',
      {},
      h(
        'a',
        { class: 'conv', href: `#c=${c._id}`, 'aria-current': current ? 'page' : null, 'data-focus': 'conv' },
        h('span', { class: 'conv-title' }, online !== undefined && presenceDot(online), h('span', { class: 'name' }, title)),
        h('span', { class: 'conv-preview' }, preview),
        c.unreadCount > 0 && h('span', { class: 'badge' }, c.unreadCount, srOnly(' unread')),
      ),
    );
  }
}

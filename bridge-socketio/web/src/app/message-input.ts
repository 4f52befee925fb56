// MessageInput: a labelled text area with Markdown formatting buttons (and Ctrl/⌘+B, I,
// E), Enter to send and Shift+Enter for a new line. It also edits a message and
// replies to one: a bar above the text says which, with a button to cancel.

import type { Message, TextFormat } from '../client/index.js';
import { h, setChildren } from './dom.js';
import { looksLikeMarkdown } from './markdown.js';
import { contentPreview } from './store.js';

export type InputMode = { kind: 'new' } | { kind: 'reply'; to: Message } | { kind: 'edit'; of: Message };

export interface MessageInputProps {
  /** Sends, replies or saves an edit; resolves false to keep the text (it failed). */
  onSubmit(text: string, format: TextFormat, mode: InputMode): Promise<boolean>;
  onTyping(): void;
  onStopTyping(): void;
  /** A name for the author of a message ("You" for the user's own). */
  nameOf(userId: string): string;
  /** Shown before the text field (the attach button). */
  before?: HTMLElement;
}

const MAX_HEIGHT_PX = 160;

export class MessageInput {
  readonly el: HTMLFormElement;
  private readonly text: HTMLTextAreaElement;
  private readonly context = h('div', { class: 'context' });
  private mode: InputMode = { kind: 'new' };
  /** Set once a formatting button or shortcut was used on the current text. */
  private formatted = false;

  constructor(private readonly props: MessageInputProps) {
    this.text = h('textarea', { id: 'composer-text', rows: 1, placeholder: 'Write a message…', autocomplete: 'off' });
    const tool = (label: string, shortcut: string, glyph: string, marker: string) =>
      h('button', { type: 'button', class: 'icon', 'aria-label': `${label} (Ctrl+${shortcut})`, title: `${label} (Ctrl+${shortcut})`, onclick: () => this.wrap(marker) }, glyph);
    this.el = h(
      'form',
      { class: 'composer' },
      this.context,
      h(
        'div',
        { class: 'row' },
        h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Formatting' }, tool('Bold', 'B', 'B', '**'), tool('Italic', 'I', 'I', '_'), tool('Code', 'E', '</>', '`')),
      ),
      h('label', { for: 'composer-text', class: 'sr-only' }, 'Message'),
      h('div', { class: 'row' }, props.before, this.text, h('button', { type: 'submit', class: 'primary send' }, 'Send')),
    );
    this.el.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.submit();
    });
    this.text.addEventListener('keydown', (e) => this.keydown(e));
    this.text.addEventListener('input', () => {
      this.grow();
      if (this.mode.kind !== 'edit' && this.text.value.trim()) this.props.onTyping();
    });
  }

  private keydown(e: KeyboardEvent): void {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      void this.submit();
    } else if (e.key === 'Escape' && this.mode.kind !== 'new') {
      e.preventDefault();
      this.reset();
    } else if ((e.ctrlKey || e.metaKey) && !e.altKey) {
      const marker = { b: '**', i: '_', e: '`' }[e.key.toLowerCase()];
      if (marker) {
        e.preventDefault();
        this.wrap(marker);
      }
    }
  }

  /** Puts `marker` around the selection (a fence around several lines of code). */
  private wrap(marker: string): void {
    const t = this.text;
    const [start, end] = [t.selectionStart, t.selectionEnd];
    const selected = t.value.slice(start, end);
    const [open, close] = marker === '`' && selected.includes('\n') ? ['```\n', '\n```'] : [marker, marker];
    t.setRangeText(open + selected + close, start, end);
    t.setSelectionRange(start + open.length, start + open.length + selected.length);
    this.formatted = true;
    t.focus();
    this.grow();
  }

  private grow(): void {
    this.text.style.height = 'auto';
    this.text.style.height = `${Math.min(this.text.scrollHeight, MAX_HEIGHT_PX)}px`;
  }

  private async submit(): Promise<void> {
    const text = this.text.value.trim();
    if (!text) return;
    const format: TextFormat = this.formatted || looksLikeMarkdown(text) ? 'markdown' : 'plain';
    const mode = this.mode;
    this.props.onStopTyping();
    // A new message is queued at once, so the field clears at once; an edit waits for the server.
    if (mode.kind !== 'edit') this.reset();
    if ((await this.props.onSubmit(text, format, mode)) && mode.kind === 'edit') this.reset();
  }

  /** Back to writing a new message, with an empty field. */
  reset(): void {
    this.mode = { kind: 'new' };
    this.text.value = '';
    this.formatted = false;
    setChildren(this.context);
    this.grow();
  }

  replyTo(m: Message): void {
    this.mode = { kind: 'reply', to: m };
    this.bar(`Replying to ${this.props.nameOf(m.senderId)}`, contentPreview(m.content), 'Cancel reply');
    this.text.focus();
  }

  edit(m: Message): void {
    this.mode = { kind: 'edit', of: m };
    this.text.value = m.content?.text ?? '';
    this.formatted = m.content?.format === 'markdown';
    this.bar('Editing your message', '', 'Cancel editing');
    this.grow();
    this.text.focus();
  }

  private bar(what: string, quote: string, cancel: string): void {
    setChildren(
      this.context,
      h('p', {}, h('strong', {}, what), quote && `: ${quote.length > 80 ? `${quote.slice(0, 80)}…` : quote}`),
      h('button', { type: 'button', class: 'icon', 'aria-label': cancel, onclick: () => { this.reset(); this.text.focus(); } }, '✕'),
    );
  }

  focus(): void {
    this.text.focus();
  }
}

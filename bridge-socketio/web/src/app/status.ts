// Small status views: presence dots, who is typing, and the connection banner.

import type { ClientState } from '../client/index.js';
import { h, srOnly } from './dom.js';

/** OnlineStatus: a coloured dot, with its meaning in words for screen readers. */
export function presenceDot(online: boolean | undefined): HTMLElement {
  const label = online === undefined ? '' : online ? 'online' : 'offline';
  return h('span', { class: 'presence' }, h('span', { class: `dot ${label || 'unknown'}`, 'aria-hidden': 'true' }), label && srOnly(` (${label})`));
}

/** TypingIndicator: "bob is typing…", polite so that it does not interrupt. */
export class TypingIndicator {
  readonly el = h('div', { class: 'typing', role: 'status', 'aria-live': 'polite' });
  private text = '';

  render(names: string[]): void {
    const text =
      names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : 'Several people are typing…';
    if (text === this.text) return;
    this.text = text;
    this.el.textContent = text;
  }
}

/** The banner that says the app is offline and that sends wait for the connection. */
export class ConnectionBanner {
  // Always in the page and only emptied: a live region that appears is not announced.
  readonly el = h('div', { class: 'banner', role: 'status' });

  render(state: ClientState): void {
    const text =
      state === 'offline' ? 'Offline — messages will be sent when the connection returns' : state === 'connecting' ? 'Connecting…' : '';
    if (this.el.textContent !== text) this.el.textContent = text;
  }
}

// The sign-in page. In development mode the bridge lists demo accounts
// (`GET /api/dev/accounts`): one button each, and the same list gives a signed-in tab a
// fresh token when its session is due for renewal. Otherwise the user pastes an access
// token. When the server signs the user out (token expired, sessions revoked, account
// deactivated), the page says so above the choices.

import type { Unauthorized } from '../client/index.js';
import { h, setChildren } from './dom.js';
import type { Session } from './chat.js';

interface DemoAccount {
  userId: string;
  role: string;
  token: string;
}

async function fetchDemoAccounts(): Promise<DemoAccount[]> {
  const res = await fetch('/api/dev/accounts', { cache: 'no-store' });
  if (!res.ok) throw new Error(`the bridge lists no demo accounts (HTTP ${res.status})`);
  const body = (await res.json()) as { accounts?: DemoAccount[] };
  return Array.isArray(body.accounts) ? body.accounts : [];
}

async function demoAccounts(): Promise<DemoAccount[]> {
  try {
    return await fetchDemoAccounts();
  } catch {
    return []; // offline, no bridge, or not development mode: the token form still works
  }
}

/**
 * The demo account's current token for `userId` (and `role`), from the bridge's list: the
 * ChatClient's `tokenProvider` in development mode. Rejects when the list has none.
 */
export async function demoToken(userId: string, role?: string): Promise<string> {
  const account = (await fetchDemoAccounts()).find((a) => a.userId === userId && (!role || a.role === role));
  if (!account) throw new Error(`no demo account for ${userId}`);
  return account.token;
}

/**
 * What to tell a user the server signed out (`ended`: they had been signed in) or whose
 * sign-in it refused, in plain words.
 */
export function signOutMessage(e: Pick<Unauthorized, 'reason' | 'message' | 'ended'>): string {
  switch (e.reason) {
    case 'expired':
      return e.ended ? 'Your session expired. Sign in again to continue.' : 'That sign-in has expired. Sign in again.';
    case 'revoked':
      return e.ended
        ? 'An administrator signed you out. Sign in again to continue.'
        : 'That sign-in was revoked by an administrator. Sign in again with a new one.';
    case 'deactivated':
      return 'Your account has been deactivated. Ask an administrator to reactivate it.';
    default:
      return `Sign-in refused: ${e.message.replace(/^unauthorized: /, '')}`;
  }
}

export async function showSignIn(root: HTMLElement, signIn: (s: Session) => void, reason?: string): Promise<void> {
  const status = h('p', { class: 'notice', role: 'alert' }, reason ?? '');
  const card = h('div', { class: 'card' }, h('h1', {}, 'LegalChat'), h('h2', {}, 'Sign in'), status, h('p', { class: 'loading' }, 'Loading…'));
  setChildren(root, h('main', { class: 'signin' }, card));

  const accounts = await demoAccounts();
  card.querySelector('.loading')?.remove();
  if (accounts.length) {
    card.append(
      h('p', {}, 'Development mode: choose a demo account.'),
      h(
        'ul',
        { class: 'accounts' },
        accounts.map((a) =>
          h('li', {}, h(
            'button',
            { type: 'button', class: 'primary', onclick: () => signIn({ token: a.token, me: { userId: a.userId, role: a.role }, demo: true }) },
            `Sign in as ${a.userId} (${a.role})`,
          ),
        ),
        ),
      ),
    );
    return;
  }
  const token = h('input', { id: 'token', type: 'password', required: true, autocomplete: 'off', spellcheck: 'false' });
  const form = h(
    'form',
    { class: 'token-form' },
    h('label', { for: 'token' }, 'Paste your access token'),
    token,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (token.value.trim()) signIn({ token: token.value.trim() });
  });
  card.append(form);
}

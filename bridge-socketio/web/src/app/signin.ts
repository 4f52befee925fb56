// The sign-in page. In development mode the bridge lists demo accounts
// (`GET /api/dev/accounts`): one button each. Otherwise the user pastes an access token.

import { h, setChildren } from './dom.js';
import type { Session } from './chat.js';

interface DemoAccount {
  userId: string;
  role: string;
  token: string;
}

async function demoAccounts(): Promise<DemoAccount[]> {
  try {
    const res = await fetch('/api/dev/accounts', { cache: 'no-store' });
    if (!res.ok) return [];
    const body = (await res.json()) as { accounts?: DemoAccount[] };
    return Array.isArray(body.accounts) ? body.accounts : [];
  } catch {
    return []; // offline, or no bridge: the token form still works
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
          h('li', {}, h('button', { type: 'button', class: 'primary', onclick: () => signIn({ token: a.token, me: { userId: a.userId, role: a.role } }) }, `Sign in as ${a.userId} (${a.role})`)),
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

// LegalChat in the browser: the sign-in page, or the chat for the session this tab holds.

import './styles.css';
import { type Session, startChat } from './chat.js';
import { showSignIn } from './signin.js';

const SESSION_KEY = 'legalchat.session';
const root = document.getElementById('app')!;

function readSession(): Session | null {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null') as Session | null;
    return s && typeof s.token === 'string' ? s : null;
  } catch {
    return null;
  }
}

function saveSession(s: Session): void {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
}

function signIn(s: Session): void {
  saveSession(s);
  void startChat(root, s, saveSession, signOut);
}

function signOut(reason?: string): void {
  sessionStorage.removeItem(SESSION_KEY);
  history.replaceState(null, '', location.pathname);
  void showSignIn(root, signIn, reason);
}

// The app shell works offline once the service worker has cached it.
if ('serviceWorker' in navigator && window.isSecureContext) {
  navigator.serviceWorker.register('/sw.js').catch(() => {});
}

const session = readSession();
if (session) void startChat(root, session, saveSession, signOut);
else void showSignIn(root, signIn);

// A key-value store on IndexedDB for what must survive a reload while offline: the
// conversation list, recent history, unsent messages and the resume cursors. Failures
// (private browsing, quota) only cost the cache: the app works on without it.

const DB_NAME = 'legalchat';
const STORE = 'kv';

let db: Promise<IDBDatabase> | null = null;

function open(): Promise<IDBDatabase> {
  db ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  return db;
}

function run<T>(mode: IDBTransactionMode, op: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  return open().then(
    (d) =>
      new Promise<T>((resolve, reject) => {
        const req = op(d.transaction(STORE, mode).objectStore(STORE));
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      }),
  );
}

export function load<T>(key: string): Promise<T | undefined> {
  return run<T | undefined>('readonly', (s) => s.get(key)).catch(() => undefined);
}

export function save(key: string, value: unknown): Promise<void> {
  return run('readwrite', (s) => s.put(value, key)).then(
    () => undefined,
    () => undefined,
  );
}

export function remove(key: string): Promise<void> {
  return run('readwrite', (s) => s.delete(key)).then(
    () => undefined,
    () => undefined,
  );
}

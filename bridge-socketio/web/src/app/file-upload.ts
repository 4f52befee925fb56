// FileUpload: the attach button (a labelled button in front of a hidden file input) and
// drag-and-drop onto the conversation pane. Each file gets a row with a progress bar
// (`role="progressbar"`) while it uploads, one at a time; a stored file is sent at once as
// a message of its own. A refusal stays in its row in plain words (too large, a type that
// cannot be attached, the hour's upload limit and how long to wait, …) until dismissed;
// a failure of the connection can be retried, and resumes where the server got to.

import { type ChatError, formatBytes, type UploadError } from '../client/index.js';
import { h, icon } from './dom.js';

/** A paper clip, upright then tilted. */
const PAPERCLIP = 'M16 6v10a4 4 0 0 1-8 0V5a2.5 2.5 0 0 1 5 0v10a1 1 0 0 1-2 0V7';

export interface FileUploadProps {
  /** The conversation dropped or chosen files go to (null: none is open). */
  conversation(): string | null;
  /** Uploads `file` into a conversation and sends it; rejects with the client's error. */
  upload(
    conversationId: string,
    file: File,
    options: { onProgress(sent: number, total: number): void; signal: AbortSignal; uploadId?: string },
  ): Promise<void>;
}

type State = 'waiting' | 'preparing' | 'uploading' | 'failed';

interface Item {
  id: number;
  conversationId: string;
  file: File;
  state: State;
  sent: number;
  error: string;
  /** Set when the failure can be retried: what the server kept of it. */
  retry: { uploadId?: string } | null;
  abort: AbortController;
  row?: { el: HTMLElement; bar: HTMLElement; fill: HTMLElement; status: HTMLElement };
}

/** What the file picker offers first (the server judges by content, whatever the name). */
const ACCEPT = '.pdf,.doc,.docx,.xls,.xlsx,.ppt,.pptx,.txt,.png,.jpg,.jpeg,.gif,.webp,application/pdf,image/png,image/jpeg,image/gif,image/webp,text/plain';
const ALLOWED = 'a PDF, an Office document, an image (PNG, JPEG, GIF, WebP) or plain text';
/** Codes after which the same upload may succeed later. */
const TRANSIENT = new Set(['UNAVAILABLE', 'TIMEOUT', 'OVERLOADED', 'CONFLICT', 'UNAUTHORIZED', 'INTERNAL']);

/** Why an upload failed, in words for the person who tried. */
export function describeUploadError(name: string, e: unknown): string {
  const err = e as Partial<ChatError> & Error;
  const code = err.code ?? '';
  const detail = err.detail ?? err.message ?? String(e);
  let m: RegExpExecArray | null;
  if ((m = /the file is (\d+) bytes; the largest accepted is (\d+) bytes/.exec(detail))) {
    return `${name} is too large (${formatBytes(Number(m[1]))}): the largest file you can attach is ${formatBytes(Number(m[2]))}.`;
  }
  if (/an empty file cannot be attached/.test(detail)) return `${name} is empty: there is nothing to attach.`;
  if ((m = /is ([\w.+-]+\/[\w.+-]+), which cannot be attached/.exec(detail))) {
    return `${name} cannot be attached: its content is ${m[1]}, and only ${ALLOWED} can be attached.`;
  }
  if (/is not a file type that can be attached/.test(detail)) return `${name} cannot be attached: only ${ALLOWED} can be attached.`;
  if (code === 'RATE_LIMITED') {
    m = /at most (\d+) uploads per hour; try again in (.+)$/.exec(detail);
    if (m) return `${name} was not uploaded: you can upload at most ${m[1]} files an hour. Try again in ${m[2]}.`;
    const wait = err.retryAfterMs ? ` Try again in ${Math.ceil(err.retryAfterMs / 60_000)} min.` : '';
    return `${name} was not uploaded: you have uploaded too many files (${detail}).${wait}`;
  }
  if ((m = /the malware scanner found (.+)$/.exec(detail))) return `${name} was refused: the malware scanner found ${m[1]}.`;
  if (/malware scanner is unavailable/.test(detail)) return `${name} cannot be accepted now: the malware scanner is unavailable. Try again later.`;
  if (/^sha256:/.test(detail)) return `${name} changed while it was being uploaded. Try again.`;
  // The server answers alike for a conversation that does not exist and for one the
  // sender is not in, so that nobody learns who talks to whom; so does this sentence.
  if (code === 'NOT_FOUND' && /^conversation \S+ not found\b/.test(detail)) {
    return `${name} was not uploaded: this conversation was not found, or you are not a participant.`;
  }
  if (code === 'UNAVAILABLE' || code === 'TIMEOUT') return `${name} was not uploaded: the connection failed (${detail}).`;
  return `${name} was not uploaded: ${detail}`;
}

export class FileUpload {
  /** The attach button, for the composer. */
  readonly button: HTMLButtonElement;
  /** The uploads of the open conversation, for above the composer. */
  readonly el: HTMLElement;
  private readonly input: HTMLInputElement;
  private readonly list = h('ul', { class: 'uploads', 'aria-label': 'Uploads' });
  /** Says when uploads start and end (the bars themselves are not live regions). */
  private readonly announcer = h('p', { class: 'sr-only', role: 'status' });
  private items: Item[] = [];
  private running = false;
  private shown: string | null = null;
  private ids = 0;

  constructor(private readonly props: FileUploadProps) {
    this.input = h('input', { type: 'file', multiple: true, accept: ACCEPT, hidden: true, tabindex: '-1' });
    this.input.addEventListener('change', () => {
      const files = [...(this.input.files ?? [])];
      this.input.value = ''; // the same file can be chosen again
      this.add(files);
    });
    this.button = h(
      'button',
      {
        type: 'button',
        class: 'icon attach',
        'aria-label': 'Attach files',
        title: 'Attach files: PDF, Office documents, images, text; up to 50 MiB each (or drop them here)',
        onclick: () => this.input.click(),
      },
      icon(PAPERCLIP, 'rotate(40 12 12)'),
    );
    this.el = h('div', { class: 'upload-area' }, this.list, this.announcer, this.input);
  }

  /** Accepts files dropped onto `zone` (it shows `.dropping` while files are dragged over it). */
  dropOn(zone: HTMLElement, signal: AbortSignal): void {
    let depth = 0;
    const carriesFiles = (e: DragEvent) => !!e.dataTransfer && [...e.dataTransfer.types].includes('Files') && !!this.props.conversation();
    const done = () => {
      depth = 0;
      zone.classList.remove('dropping');
    };
    zone.addEventListener(
      'dragenter',
      (e) => {
        if (!carriesFiles(e)) return;
        e.preventDefault();
        depth += 1;
        zone.classList.add('dropping');
      },
      { signal },
    );
    zone.addEventListener(
      'dragover',
      (e) => {
        if (!carriesFiles(e)) return;
        e.preventDefault();
        e.dataTransfer!.dropEffect = 'copy';
      },
      { signal },
    );
    zone.addEventListener(
      'dragleave',
      () => {
        depth = Math.max(0, depth - 1);
        if (depth === 0) done();
      },
      { signal },
    );
    zone.addEventListener(
      'drop',
      (e) => {
        done();
        if (!carriesFiles(e)) return;
        e.preventDefault();
        this.add([...e.dataTransfer!.files]);
      },
      { signal },
    );
  }

  /** Queues files for the open conversation. */
  add(files: File[]): void {
    const conversationId = this.props.conversation();
    if (!conversationId || files.length === 0) return;
    for (const file of files) {
      this.items.push({ id: ++this.ids, conversationId, file, state: 'waiting', sent: 0, error: '', retry: null, abort: new AbortController() });
    }
    this.announcer.textContent = files.length === 1 ? `Uploading ${files[0].name}` : `Uploading ${files.length} files`;
    this.render();
    void this.pump();
  }

  /** Shows the uploads of `conversationId` (the others go on meanwhile). */
  show(conversationId: string | null): void {
    if (conversationId === this.shown) return;
    this.shown = conversationId;
    this.render();
  }

  /** Cancels everything (on sign-out). */
  cancelAll(): void {
    for (const item of this.items) item.abort.abort();
    this.items = [];
    this.render();
  }

  /** One upload at a time, in the order they were added. */
  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      for (let item = this.nextWaiting(); item; item = this.nextWaiting()) await this.run(item);
    } finally {
      this.running = false;
    }
  }

  private nextWaiting(): Item | undefined {
    return this.items.find((i) => i.state === 'waiting');
  }

  private async run(item: Item): Promise<void> {
    const retry = item.retry;
    item.retry = null;
    this.set(item, 'preparing');
    try {
      await this.props.upload(item.conversationId, item.file, {
        signal: item.abort.signal,
        uploadId: retry?.uploadId,
        onProgress: (sent) => {
          item.sent = sent;
          if (item.state !== 'uploading') this.set(item, 'uploading');
          else this.progress(item);
        },
      });
      item.sent = item.file.size;
      this.progress(item);
      this.drop(item);
      this.announcer.textContent = `${item.file.name} sent`;
    } catch (e) {
      if (item.abort.signal.aborted) {
        this.drop(item);
        this.announcer.textContent = `${item.file.name}: upload cancelled`;
        return;
      }
      const err = e as Partial<UploadError>;
      item.error = describeUploadError(item.file.name, e);
      item.retry = TRANSIENT.has(err.code ?? '') ? { uploadId: err.uploadId ?? undefined } : null;
      this.set(item, 'failed');
    }
  }

  private set(item: Item, state: State): void {
    item.state = state;
    item.row = undefined; // rebuilt in its new shape
    this.render();
  }

  private drop(item: Item): void {
    this.items = this.items.filter((i) => i !== item);
    this.render();
  }

  private render(): void {
    const rows = this.items.filter((i) => i.conversationId === this.shown).map((i) => (i.row ??= this.row(i)).el);
    // Rows that stay are not moved (a focused button in one keeps its focus).
    const keep = new Set<Node>(rows);
    for (const child of [...this.list.children]) if (!keep.has(child)) child.remove();
    let at = this.list.firstChild;
    for (const el of rows) {
      if (el === at) at = at.nextSibling;
      else this.list.insertBefore(el, at);
    }
    this.list.hidden = rows.length === 0;
  }

  private row(item: Item): NonNullable<Item['row']> {
    const name = item.file.name;
    const fill = h('span', { class: 'fill' });
    const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-label': `Uploading ${name}`, 'aria-valuemin': 0, 'aria-valuemax': 100 }, fill);
    const status = h('span', { class: 'upload-status' });
    if (item.state === 'failed') {
      const el = h(
        'li',
        { class: 'upload failed', 'data-id': item.id },
        h('p', { class: 'upload-error', role: 'alert' }, item.error),
        h(
          'div',
          { class: 'upload-actions' },
          item.retry &&
            h(
              'button',
              {
                type: 'button',
                onclick: () => {
                  item.abort = new AbortController();
                  this.set(item, 'waiting');
                  void this.pump();
                },
              },
              'Retry',
            ),
          h('button', { type: 'button', onclick: () => this.drop(item) }, 'Dismiss'),
        ),
      );
      return { el, bar, fill, status };
    }
    const el = h(
      'li',
      { class: 'upload', 'data-id': item.id, 'data-state': item.state },
      h('div', { class: 'upload-line' }, h('span', { class: 'upload-name' }, name), status),
      bar,
      h('button', { type: 'button', class: 'icon', 'aria-label': `Cancel uploading ${name}`, onclick: () => item.abort.abort() }, '✕'),
    );
    const row = { el, bar, fill, status };
    item.row = row;
    this.progress(item);
    return row;
  }

  /** Moves a row's bar (without rebuilding the row). */
  private progress(item: Item): void {
    const row = item.row;
    if (!row || item.state === 'failed') return;
    const total = item.file.size;
    const size = formatBytes(total);
    if (item.state === 'waiting' || item.state === 'preparing') {
      const text = item.state === 'waiting' ? `Waiting · ${size}` : `Preparing · ${size}`;
      row.bar.removeAttribute('aria-valuenow');
      row.bar.setAttribute('aria-valuetext', text);
      row.fill.style.width = '0';
      row.status.textContent = text;
      return;
    }
    const percent = total > 0 ? Math.min(100, Math.floor((item.sent / total) * 100)) : 100;
    const text = `${percent}% · ${formatBytes(item.sent)} of ${size}`;
    row.bar.setAttribute('aria-valuenow', String(percent));
    row.bar.setAttribute('aria-valuetext', text);
    row.fill.style.width = `${percent}%`;
    row.status.textContent = text;
  }
}

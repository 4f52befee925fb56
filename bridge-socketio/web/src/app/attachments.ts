// Attachments in messages. An image shows the server-made preview (a `data:` URL from
// the message itself) as a button that opens the full image in a dialog, fetched with a
// one-time `inline` download URL; any other file is a chip with its name, type and size
// that downloads it (a one-time URL asked for on click: tickets last a minute).

import { type Attachment, formatBytes } from '../client/index.js';
import { h, icon, setChildren } from './dom.js';

/** A page with a folded corner; an arrow down into a tray. */
const DOCUMENT = 'M6 3h8l4 4v14H6z M14 3v4h4 M9 12h6 M9 16h6';
const PICTURE = 'M4 5h16v14H4z M4 16l5-5 4 4 2-2 5 5 M15 9.5h.01';
const SAVE = 'M12 4v11 M7 10l5 5 5-5 M5 20h14';

export interface AttachmentActions {
  /** Opens an image in full. */
  open(a: Attachment): void;
  /** Saves the file. */
  download(a: Attachment): void;
}

const KINDS: Record<string, string> = {
  'application/pdf': 'PDF',
  'application/msword': 'Word document',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document': 'Word document',
  'application/vnd.ms-excel': 'Excel workbook',
  'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet': 'Excel workbook',
  'application/vnd.ms-powerpoint': 'PowerPoint presentation',
  'application/vnd.openxmlformats-officedocument.presentationml.presentation': 'PowerPoint presentation',
  'text/plain': 'Text',
  'image/png': 'PNG image',
  'image/jpeg': 'JPEG image',
  'image/gif': 'GIF image',
  'image/webp': 'WebP image',
};

/** A file type as people name it ("PDF", "Word document"), else its MIME type. */
export function kindOf(mime: string): string {
  return KINDS[mime] ?? mime;
}

/** The attachments of a message, or nothing. */
export function attachmentsEl(list: Attachment[] | undefined, actions: AttachmentActions): HTMLElement | null {
  if (!list?.length) return null;
  return h(
    'ul',
    { class: 'attachments', 'aria-label': list.length === 1 ? 'Attachment' : `${list.length} attachments` },
    list.map((a) => h('li', {}, a.thumbnail && a.type.startsWith('image/') ? imageEl(a, actions) : fileEl(a, actions))),
  );
}

function imageEl(a: Attachment, actions: AttachmentActions): HTMLElement {
  const t = a.thumbnail!;
  return h(
    'button',
    {
      type: 'button',
      class: 'thumb',
      'aria-label': `Open image ${a.name} (${kindOf(a.type)}, ${formatBytes(a.size)})`,
      'data-focus': `file-${a.fileId}`,
      onclick: () => actions.open(a),
    },
    h('img', { src: t.url, alt: '', width: t.width, height: t.height }),
  );
}

function fileEl(a: Attachment, actions: AttachmentActions): HTMLElement {
  const meta = `${kindOf(a.type)} · ${formatBytes(a.size)}`;
  return h(
    'button',
    { type: 'button', class: 'file', 'aria-label': `Download ${a.name}, ${meta}`, 'data-focus': `file-${a.fileId}`, onclick: () => actions.download(a) },
    h('span', { class: 'file-icon' }, icon(a.type.startsWith('image/') ? PICTURE : DOCUMENT)),
    // The space keeps the visible text ("name type · size") a part of the label.
    h('span', { class: 'file-text' }, h('span', { class: 'file-name' }, a.name), ' ', h('span', { class: 'file-meta' }, meta)),
    h('span', { class: 'file-save' }, icon(SAVE)),
  );
}

/** A modal dialog that shows an image in full, with a button to save it. */
export class ImageViewer {
  readonly el: HTMLDialogElement;
  private readonly heading = h('h2', { id: 'viewer-title' });
  private readonly status = h('p', { class: 'viewer-status', role: 'status' });
  private readonly img = h('img', { class: 'viewer-img', alt: '' });
  private readonly save = h('button', { type: 'button' }, 'Download');
  private current: Attachment | null = null;
  private returnTo: HTMLElement | null = null;

  constructor(private readonly actions: { download(a: Attachment): void }) {
    this.el = h(
      'dialog',
      { class: 'viewer', 'aria-labelledby': 'viewer-title' },
      h(
        'div',
        { class: 'viewer-head' },
        this.heading,
        this.save,
        h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', onclick: () => this.el.close() }, '✕'),
      ),
      this.status,
      this.img,
    );
    this.save.addEventListener('click', () => this.current && this.actions.download(this.current));
    this.img.addEventListener('load', () => {
      this.status.textContent = '';
      this.img.hidden = false;
    });
    this.img.addEventListener('error', () => {
      if (this.img.getAttribute('src')) this.status.textContent = 'The image could not be loaded. Close this and try again.';
    });
    // A click on the backdrop (outside the dialog's box) closes it too.
    this.el.addEventListener('click', (e) => {
      if (e.target === this.el) this.el.close();
    });
    this.el.addEventListener('close', () => {
      this.img.removeAttribute('src');
      this.current = null;
      if (this.returnTo?.isConnected) this.returnTo.focus();
      this.returnTo = null;
    });
  }

  /** Shows `a`, loading it from the URL `url` resolves with. */
  show(a: Attachment, url: Promise<string>): void {
    this.current = a;
    this.returnTo = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    this.heading.textContent = a.name;
    this.img.hidden = true;
    this.img.removeAttribute('src');
    this.img.alt = a.name;
    setChildren(this.status, 'Loading the image…');
    if (!this.el.open) this.el.showModal();
    url.then(
      (u) => {
        if (this.current === a) this.img.src = u;
      },
      (e: Error) => {
        if (this.current === a) this.status.textContent = `The image could not be opened: ${e.message}`;
      },
    );
  }
}

/** Saves a file from a one-time URL: the server answers with `Content-Disposition: attachment`. */
export function saveFrom(url: string, name: string): void {
  const link = h('a', { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
}

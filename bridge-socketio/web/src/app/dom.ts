// A tiny element builder. Strings become text nodes (Node.append never parses HTML), so
// untrusted text can be passed as a child safely; attribute values go through
// setAttribute and are never URLs built from message text.

export type Child = Node | string | number | null | undefined | false;
type AttrValue = string | number | boolean | null | undefined;
export type Attrs = { [name: string]: AttrValue | ((e: Event) => void) };

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'class' && value) el.className = String(value);
    else if (value === true) el.setAttribute(name, '');
    else if (value !== false && value != null) el.setAttribute(name, String(value));
  }
  el.append(...nodes(children));
  return el;
}

/** A decorative line icon (24×24, drawn with `currentColor`), hidden from screen readers. */
export function icon(path: string, transform?: string): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  for (const [name, value] of Object.entries({ viewBox: '0 0 24 24', width: '22', height: '22', 'aria-hidden': 'true', focusable: 'false', class: 'glyph' })) {
    svg.setAttribute(name, value);
  }
  const p = document.createElementNS(ns, 'path');
  const attrs: Record<string, string> = { d: path, fill: 'none', stroke: 'currentColor', 'stroke-width': '2', 'stroke-linecap': 'round', 'stroke-linejoin': 'round' };
  if (transform) attrs.transform = transform;
  for (const [name, value] of Object.entries(attrs)) p.setAttribute(name, value);
  svg.append(p);
  return svg;
}

/** Text only a screen reader reads (e.g. "online" beside a coloured dot). */
export function srOnly(text: string): HTMLSpanElement {
  return h('span', { class: 'sr-only' }, text);
}

/** Replaces an element's children. */
export function setChildren(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren(...nodes(children));
}

function nodes(children: (Child | Child[])[]): (Node | string)[] {
  const out: (Node | string)[] = [];
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    out.push(typeof c === 'number' ? String(c) : c);
  }
  return out;
}

/** One row of a keyed list: rebuilt only when something in `version` changed. */
export interface Row {
  key: string;
  version: unknown[];
  build(): HTMLElement;
}

/**
 * Keeps a parent's children in step with a list of rows, touching only rows that
 * changed. Untouched rows keep their DOM (so screen readers of a live region hear only
 * what is new), and focus inside a rebuilt row moves to its counterpart (`data-focus`).
 */
export class KeyedList {
  private readonly rows = new Map<string, { el: HTMLElement; version: unknown[] }>();

  constructor(readonly parent: HTMLElement) {}

  update(rows: Row[]): void {
    const seen = new Set<string>();
    let next: ChildNode | null = this.parent.firstChild;
    for (const row of rows) {
      seen.add(row.key);
      let held = this.rows.get(row.key);
      if (!held || held.version.length !== row.version.length || held.version.some((v, i) => v !== row.version[i])) {
        const el = row.build();
        if (held) {
          const focused = held.el.contains(document.activeElement) ? (document.activeElement as HTMLElement).dataset.focus : undefined;
          if (next === held.el) next = el;
          held.el.replaceWith(el);
          if (focused) el.querySelector<HTMLElement>(`[data-focus="${focused}"]`)?.focus();
        }
        held = { el, version: row.version };
        this.rows.set(row.key, held);
      }
      if (held.el === next) next = next.nextSibling;
      else this.parent.insertBefore(held.el, next);
    }
    for (const [key, held] of this.rows) {
      if (seen.has(key)) continue;
      held.el.remove();
      this.rows.delete(key);
    }
  }

  clear(): void {
    this.rows.clear();
    this.parent.replaceChildren();
  }
}

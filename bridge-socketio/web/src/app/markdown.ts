// The Markdown subset messages may use, rendered as DOM nodes: **bold**, *italic* or
// _italic_, `inline code` and ``` code blocks ```. Line breaks are kept by CSS
// (white-space: pre-wrap). Everything else, HTML and links included, stays literal text:
// message text is untrusted and no markup in it ever reaches the parser.

import { h } from './dom.js';

const FENCE = '```';
// Inline code first (its content is literal); then bold, then italic. The italic forms
// must hug their text, and `_` must not sit inside a word (snake_case stays as typed).
const INLINE = /`([^`\n]+)`|\*\*(?=\S)([\s\S]*?\S)\*\*|\*(?=[^\s*])([^*\n]*?[^\s*])\*|(?<![\p{L}\p{N}_])_(?=\S)([^_\n]*?\S)_(?![\p{L}\p{N}_])/gu;

export function renderMarkdown(text: string): DocumentFragment {
  const out = document.createDocumentFragment();
  const parts = text.split(FENCE);
  // An odd count of fences leaves the last one unclosed: it and what follows stay text.
  if (parts.length % 2 === 0) {
    const tail = parts.pop()!;
    parts[parts.length - 1] += FENCE + tail;
  }
  parts.forEach((part, i) => {
    if (i % 2 === 0) {
      out.append(...inline(part));
    } else {
      // ```lang\n…``` : the language tag is dropped, the code kept as typed.
      const code = part.replace(/^[\w+-]*\n/, '').replace(/\n$/, '');
      out.append(h('pre', {}, h('code', {}, code)));
    }
  });
  return out;
}

function inline(text: string): (Node | string)[] {
  const out: (Node | string)[] = [];
  let at = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > at) out.push(text.slice(at, m.index));
    const [, code, bold, star, under] = m;
    if (code !== undefined) out.push(h('code', {}, code));
    else if (bold !== undefined) out.push(h('strong', {}, ...inline(bold)));
    else out.push(h('em', {}, ...inline(star ?? under ?? '')));
    at = m.index + m[0].length;
  }
  if (at < text.length) out.push(text.slice(at));
  return out;
}

/** Whether text uses the subset, so that it is worth sending as Markdown. */
export function looksLikeMarkdown(text: string): boolean {
  return text.includes(FENCE) || new RegExp(INLINE.source, 'u').test(text);
}

/** The text a reader sees, without the markers (for quotes and previews). */
export function plainText(text: string, format: 'plain' | 'markdown'): string {
  return format === 'markdown' ? (renderMarkdown(text).textContent ?? '') : text;
}

// A small, strict XML reader for libvirt's domain XML: elements, attributes, text, comments,
// CDATA, processing instructions and the five predefined entities plus character references.
// No DTDs, no namespaces beyond keeping the prefixed name. Anything malformed is refused with
// the offset where it went wrong, so the hook never acts on half-read input.
import { UkaiError } from '../errors'

export interface XmlElement {
  name: string
  attrs: Record<string, string>
  children: XmlElement[]
  text: string
}

// libvirt's domain XML is a few KiB; a megabyte is far past anything real.
const XML_SIZE_MAX_BYTES = 4 * 1024 * 1024
const DEPTH_MAX = 64
const NAME_RE = /^[A-Za-z_:][-A-Za-z0-9._:]*/
const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" }

function bad (msg: string, at: number): UkaiError {
  return UkaiError.badArgument(`malformed XML at offset ${at}: ${msg}`)
}

function decodeEntities (s: string, at: number): string {
  return s.replace(/&([^;&<]*);?/g, (m, body: string) => {
    if (!m.endsWith(';')) throw bad(`'&' not followed by an entity name and ';'`, at)
    if (body.startsWith('#x')) return String.fromCodePoint(parseInt(body.slice(2), 16))
    if (body.startsWith('#')) return String.fromCodePoint(parseInt(body.slice(1), 10))
    const e = ENTITIES[body]
    if (e === undefined) throw bad(`unknown entity '&${body};'`, at)
    return e
  })
}

export function parseXml (text: string): XmlElement {
  if (text.length > XML_SIZE_MAX_BYTES) throw UkaiError.badArgument(`XML of ${text.length} bytes is larger than ${XML_SIZE_MAX_BYTES}`)
  let pos = 0
  const stack: XmlElement[] = []
  let root: XmlElement | null = null

  const skipMisc = (): void => {
    for (;;) {
      while (pos < text.length && /\s/.test(text[pos])) pos++
      if (text.startsWith('<?', pos)) {
        const end = text.indexOf('?>', pos)
        if (end < 0) throw bad('unterminated processing instruction', pos)
        pos = end + 2
      } else if (text.startsWith('<!--', pos)) {
        const end = text.indexOf('-->', pos)
        if (end < 0) throw bad('unterminated comment', pos)
        pos = end + 3
      } else if (text.startsWith('<!DOCTYPE', pos)) {
        throw bad('DOCTYPE is not accepted', pos)
      } else {
        return
      }
    }
  }

  skipMisc()
  if (text[pos] !== '<') throw bad('expected the root element', pos)
  while (pos < text.length) {
    if (stack.length === 0 && root !== null) {
      skipMisc()
      if (pos < text.length) throw bad('content after the root element', pos)
      break
    }
    const lt = text.indexOf('<', pos)
    if (lt < 0) throw bad('unexpected end of input (unclosed elements)', text.length)
    if (lt > pos) {
      const chunk = text.slice(pos, lt)
      if (stack.length === 0) { if (chunk.trim() !== '') throw bad('text outside the root element', pos) } else stack[stack.length - 1].text += decodeEntities(chunk, pos)
      pos = lt
    }
    if (text.startsWith('<!--', pos)) {
      const end = text.indexOf('-->', pos)
      if (end < 0) throw bad('unterminated comment', pos)
      pos = end + 3
    } else if (text.startsWith('<![CDATA[', pos)) {
      const end = text.indexOf(']]>', pos)
      if (end < 0 || stack.length === 0) throw bad('bad CDATA section', pos)
      stack[stack.length - 1].text += text.slice(pos + 9, end)
      pos = end + 3
    } else if (text.startsWith('<?', pos)) {
      const end = text.indexOf('?>', pos)
      if (end < 0) throw bad('unterminated processing instruction', pos)
      pos = end + 2
    } else if (text.startsWith('</', pos)) {
      const m = NAME_RE.exec(text.slice(pos + 2, pos + 2 + 256))
      const open = stack.pop()
      if (m === null || open === undefined || m[0] !== open.name) throw bad(`closing tag does not match <${open?.name ?? ''}>`, pos)
      pos += 2 + m[0].length
      while (pos < text.length && /\s/.test(text[pos])) pos++
      if (text[pos] !== '>') throw bad(`expected '>' to close </${m[0]}>`, pos)
      pos++
    } else {
      const m = NAME_RE.exec(text.slice(pos + 1, pos + 1 + 256))
      if (m === null) throw bad('bad element name', pos)
      const el: XmlElement = { name: m[0], attrs: {}, children: [], text: '' }
      pos += 1 + m[0].length
      for (;;) {
        const ws = pos
        while (pos < text.length && /\s/.test(text[pos])) pos++
        if (text.startsWith('/>', pos)) { pos += 2; attach(el, false); break }
        if (text[pos] === '>') { pos++; attach(el, true); break }
        if (pos === ws) throw bad(`expected whitespace, '>' or '/>' in <${el.name}>`, pos)
        const a = NAME_RE.exec(text.slice(pos, pos + 256))
        if (a === null) throw bad(`bad attribute name in <${el.name}>`, pos)
        pos += a[0].length
        while (/\s/.test(text[pos] ?? '')) pos++
        if (text[pos] !== '=') throw bad(`attribute ${a[0]} has no value`, pos)
        pos++
        while (/\s/.test(text[pos] ?? '')) pos++
        const q = text[pos]
        if (q !== '"' && q !== "'") throw bad(`attribute ${a[0]} value is not quoted`, pos)
        const end = text.indexOf(q, pos + 1)
        if (end < 0) throw bad(`unterminated value of attribute ${a[0]}`, pos)
        const raw = text.slice(pos + 1, end)
        if (raw.includes('<')) throw bad(`'<' in the value of attribute ${a[0]}`, pos)
        if (Object.prototype.hasOwnProperty.call(el.attrs, a[0])) throw bad(`attribute ${a[0]} given twice`, pos)
        el.attrs[a[0]] = decodeEntities(raw, pos)
        pos = end + 1
      }
    }
  }
  if (stack.length > 0 || root === null) throw bad('unexpected end of input (unclosed elements)', text.length)
  return root

  function attach (el: XmlElement, opens: boolean): void {
    if (stack.length === 0) {
      if (root !== null) throw bad('a second root element', pos)
      root = el
    } else {
      stack[stack.length - 1].children.push(el)
    }
    if (opens) {
      if (stack.length >= DEPTH_MAX) throw bad(`elements nested deeper than ${DEPTH_MAX}`, pos)
      stack.push(el)
    }
  }
}

export function child (el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find(c => c.name === name)
}

export function childrenNamed (el: XmlElement, name: string): XmlElement[] {
  return el.children.filter(c => c.name === name)
}

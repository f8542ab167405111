// A small, strict XML reader for the documents nwf-fast reads (filters,
// filter bindings, domain XML). It keeps document order (rules and
// filterrefs are ordered), the file name and the line of every element,
// which every later diagnostic refers to.
//
// It reads XML 1.0 documents the way libvirt's libxml2 does for these files,
// and refuses what is not well formed: mismatched or unclosed tags, duplicate
// attributes, unknown entities, characters XML does not allow, text outside
// the root element. A document type declaration is refused (libvirt never
// writes one, and its entities could expand the input), and so is an
// encoding other than UTF-8 (the bytes are checked when a file is read,
// resolve/sources.ts). One pass, no recursion: time and memory are linear in
// the input, whatever its nesting.
import { CODES, NwfError } from '../util/errors.js';

export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  /** Concatenated text content (each piece trimmed). */
  text: string;
  file: string;
  line?: number;
}

const NAME_RE = /[A-Za-z_:\u00C0-\uFFFF][-A-Za-z0-9_:.\u00B7\u00C0-\uFFFF]*/y;
const SPACE_RE = /[ \t\r\n]*/y;
/** Characters XML 1.0 does not allow anywhere (surrogates cannot occur: the text is decoded UTF-8). */
const BAD_CHAR_RE = /[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]/;
const REF_RE = /&(?:#x([0-9A-Fa-f]{1,6})|#([0-9]{1,7})|([A-Za-z_:][-A-Za-z0-9_:.]*));/y;
const PREDEFINED: Readonly<Record<string, string>> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const ENCODINGS = new Set(['utf-8', 'utf8', 'us-ascii', 'ascii']);

function isXmlChar(c: number): boolean {
  return c === 0x9 || c === 0xa || c === 0xd || (c >= 0x20 && c <= 0xd7ff) || (c >= 0xe000 && c <= 0xfffd) || (c >= 0x10000 && c <= 0x10ffff);
}

class Reader {
  private pos = 0;
  /** Line bookkeeping: `line` is the line of offset `linePos`, `nextNl` the first line end at or after it (offsets only grow). */
  private linePos = 0;
  private line = 1;
  private nextNl = -2;

  constructor(
    private readonly text: string,
    private readonly file: string,
  ) {}

  lineAt(offset: number): number {
    const t = this.text;
    if (offset < this.linePos) {
      this.linePos = 0;
      this.line = 1;
      this.nextNl = -2;
    }
    if (this.nextNl === -2) this.nextNl = t.indexOf('\n', this.linePos);
    while (this.nextNl >= 0 && this.nextNl < offset) {
      this.line++;
      this.nextNl = t.indexOf('\n', this.nextNl + 1);
    }
    this.linePos = offset;
    return this.line;
  }

  fail(message: string, at = this.pos): never {
    throw new NwfError(CODES.XML_MALFORMED, `malformed XML: ${message}`, {
      location: { file: this.file, line: this.lineAt(Math.min(at, this.text.length)) },
      expected: 'a well-formed XML document',
    });
  }

  /** Replaces character and entity references; `&` must start a valid one. */
  private decode(s: string, at: number): string {
    if (!s.includes('&')) return s;
    let out = '';
    let i = 0;
    for (let amp = s.indexOf('&'); amp >= 0; amp = s.indexOf('&', i)) {
      out += s.slice(i, amp);
      REF_RE.lastIndex = amp;
      const m = REF_RE.exec(s);
      if (!m) this.fail(`'&' that does not start a reference like &amp; or &#38;`, at + amp);
      if (m[3] !== undefined) {
        const v = PREDEFINED[m[3]];
        if (v === undefined) this.fail(`unknown entity '&${m[3]};' (only &lt; &gt; &amp; &quot; &apos; and character references)`, at + amp);
        out += v;
      } else {
        const code = m[1] !== undefined ? parseInt(m[1], 16) : Number(m[2]);
        if (!isXmlChar(code)) this.fail(`character reference '${m[0]}' is not a character XML allows`, at + amp);
        out += String.fromCodePoint(code);
      }
      i = amp + m[0].length;
    }
    return out + s.slice(i);
  }

  private name(): string {
    NAME_RE.lastIndex = this.pos;
    const m = NAME_RE.exec(this.text);
    if (!m) this.fail('expected a name');
    this.pos += m[0].length;
    return m[0];
  }

  /** Skips white space; returns whether there was any. */
  private space(): boolean {
    SPACE_RE.lastIndex = this.pos;
    SPACE_RE.exec(this.text);
    const moved = SPACE_RE.lastIndex !== this.pos;
    this.pos = SPACE_RE.lastIndex;
    return moved;
  }

  /** `name="value"` pairs up to `>` or `/>` (or `?>` in a declaration); returns the end marker. */
  private attributes(into: Record<string, string>, what: string, end: '>' | '?>'): string {
    const t = this.text;
    for (;;) {
      const hadSpace = this.space();
      if (end === '>' && t.startsWith('/>', this.pos)) {
        this.pos += 2;
        return '/>';
      }
      if (t.startsWith(end, this.pos)) {
        this.pos += end.length;
        return end;
      }
      if (this.pos >= t.length) this.fail(`${what} is not closed`);
      if (!hadSpace) this.fail(`expected white space, '${end}'${end === '>' ? " or '/>'" : ''} in ${what}`);
      const nameAt = this.pos;
      const name = this.name();
      this.space();
      if (t[this.pos] !== '=') this.fail(`attribute '${name}' has no value`);
      this.pos++;
      this.space();
      const q = t[this.pos];
      if (q !== '"' && q !== "'") this.fail(`the value of attribute '${name}' is not quoted`);
      const close = t.indexOf(q, this.pos + 1);
      if (close < 0) this.fail(`the value of attribute '${name}' is not closed`);
      const raw = t.slice(this.pos + 1, close);
      const lt = raw.indexOf('<');
      if (lt >= 0) this.fail(`'<' in the value of attribute '${name}'`, this.pos + 1 + lt);
      if (Object.hasOwn(into, name)) this.fail(`attribute '${name}' is given twice`, nameAt);
      // XML attribute-value normalisation: literal tabs and line ends are spaces.
      into[name] = this.decode(/[\t\n\r]/.test(raw) ? raw.replace(/\r\n|[\t\n\r]/g, ' ') : raw, this.pos + 1);
      this.pos = close + 1;
    }
  }

  private declaration(): void {
    this.pos += 5; // '<?xml'
    const attrs: Record<string, string> = Object.create(null) as Record<string, string>;
    this.attributes(attrs, 'the XML declaration', '?>');
    const enc = attrs.encoding;
    if (enc !== undefined && !ENCODINGS.has(enc.toLowerCase())) {
      throw new NwfError(CODES.FILE_ENCODING, `the document declares encoding '${enc}': nwf-fast reads UTF-8 only`, {
        location: { file: this.file, line: 1 },
        expected: "UTF-8 (encoding='UTF-8' or no encoding declaration)",
        hint: 'convert the file, e.g. iconv -f ' + enc + ' -t UTF-8',
      });
    }
  }

  parse(): XmlElement {
    const t = this.text;
    const n = t.length;
    const bad = BAD_CHAR_RE.exec(t);
    if (bad) this.fail(`character U+${bad[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')} is not allowed in XML`, bad.index);
    if (t.charCodeAt(0) === 0xfeff) this.pos = 1;
    if (t.startsWith('<?xml', this.pos) && /[ \t\r\n?]/.test(t[this.pos + 5] ?? '')) this.declaration();

    const stack: { el: XmlElement; texts: string[] }[] = [];
    let root: XmlElement | undefined;
    const addText = (raw: string, at: number): void => {
      const top = stack[stack.length - 1];
      if (!top) {
        if (/[^ \t\r\n]/.test(raw)) this.fail('text outside the root element', at + raw.search(/[^ \t\r\n]/));
        return;
      }
      if (raw.includes(']]>')) this.fail("']]>' in text", at + raw.indexOf(']]>'));
      const s = this.decode(raw, at).trim();
      if (s) top.texts.push(s);
    };
    const closeTop = (): void => {
      const top = stack.pop() as { el: XmlElement; texts: string[] };
      top.el.text = top.texts.length === 1 ? (top.texts[0] as string) : top.texts.join('').trim();
    };

    while (this.pos < n) {
      const lt = t.indexOf('<', this.pos);
      if (lt < 0) {
        addText(t.slice(this.pos), this.pos);
        this.pos = n;
        break;
      }
      if (lt > this.pos) addText(t.slice(this.pos, lt), this.pos);
      this.pos = lt;
      const c = t.charCodeAt(lt + 1);
      if (c === 0x21 /* ! */) {
        if (t.startsWith('<!--', lt)) {
          const end = t.indexOf('-->', lt + 4);
          if (end < 0) this.fail('comment is not closed');
          const dash = t.indexOf('--', lt + 4);
          if (dash < end) this.fail("'--' inside a comment", dash);
          if (end > lt + 4 && t.charCodeAt(end - 1) === 0x2d) this.fail("a comment that ends in '--->'", end - 1);
          this.pos = end + 3;
        } else if (t.startsWith('<![CDATA[', lt)) {
          if (!stack.length) this.fail('CDATA outside the root element');
          const end = t.indexOf(']]>', lt + 9);
          if (end < 0) this.fail('CDATA section is not closed');
          const s = t.slice(lt + 9, end).trim();
          if (s) (stack[stack.length - 1] as { texts: string[] }).texts.push(s);
          this.pos = end + 3;
        } else if (t.startsWith('<!DOCTYPE', lt)) {
          this.fail('document type declarations (<!DOCTYPE>) are not supported');
        } else this.fail("'<!' that starts no comment or CDATA section");
      } else if (c === 0x3f /* ? */) {
        this.pos = lt + 2;
        const target = this.name();
        if (target.toLowerCase() === 'xml') this.fail('the XML declaration is only allowed at the start of the document', lt);
        const end = t.indexOf('?>', this.pos);
        if (end < 0) this.fail('processing instruction is not closed', lt);
        this.pos = end + 2;
      } else if (c === 0x2f /* / */) {
        this.pos = lt + 2;
        const name = this.name();
        this.space();
        if (t[this.pos] !== '>') this.fail(`expected '>' to close </${name}`);
        this.pos++;
        const top = stack[stack.length - 1];
        if (!top) this.fail(`closing tag </${name}> without an open element`, lt);
        if (top.el.name !== name) this.fail(`closing tag </${name}> does not match <${top.el.name}> (line ${top.el.line})`, lt);
        closeTop();
      } else {
        this.pos = lt + 1;
        const name = this.name();
        const attrs = Object.create(null) as Record<string, string>;
        const end = this.attributes(attrs, `<${name}>`, '>');
        const el: XmlElement = { name, attrs, children: [], text: '', file: this.file, line: this.lineAt(lt) };
        const parent = stack[stack.length - 1];
        if (parent) parent.el.children.push(el);
        else if (root) this.fail(`a second root element <${name}> (the document has one root element)`, lt);
        else root = el;
        if (end === '>') stack.push({ el, texts: [] });
      }
    }
    const open = stack[stack.length - 1];
    if (open) this.fail(`<${open.el.name}> (line ${open.el.line}) is not closed`, n);
    if (!root) this.fail('the document has no root element', n);
    return root;
  }
}

/** Parses an XML document into its root element; throws NwfError on malformed XML. */
export function parseXmlDocument(text: string, file: string): XmlElement {
  return new Reader(text.includes('\r') ? text.replace(/\r\n?/g, '\n') : text, file).parse();
}

// A small, strict XML element tree on top of fast-xml-parser. It keeps
// document order (rules and filterrefs are ordered), the file name and the
// line of every element, which every later diagnostic refers to.
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { CODES, NwfError } from '../util/errors.js';

export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  /** Concatenated text content (trimmed). */
  text: string;
  file: string;
  line?: number;
}

type OrderedNode = Record<string, unknown> & { ':@'?: Record<string, string> };

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  commentPropName: '#comment',
  parseAttributeValue: false,
  parseTagValue: false,
  trimValues: true,
  processEntities: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
});

/**
 * Lines of every element start tag, in document order, skipping comments,
 * CDATA, processing instructions and doctype. Used to give elements a line.
 */
export function startTagLines(text: string): number[] {
  const lines: number[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  const advanceTo = (j: number): void => {
    for (; i < j && i < n; i++) if (text.charCodeAt(i) === 10) line++;
  };
  while (i < n) {
    const lt = text.indexOf('<', i);
    if (lt < 0) break;
    advanceTo(lt);
    if (text.startsWith('<!--', i)) {
      const end = text.indexOf('-->', i + 4);
      advanceTo(end < 0 ? n : end + 3);
    } else if (text.startsWith('<![CDATA[', i)) {
      const end = text.indexOf(']]>', i);
      advanceTo(end < 0 ? n : end + 3);
    } else if (text.startsWith('<?', i) || text.startsWith('<!', i)) {
      const end = text.indexOf('>', i);
      advanceTo(end < 0 ? n : end + 1);
    } else if (text.startsWith('</', i)) {
      const end = text.indexOf('>', i);
      advanceTo(end < 0 ? n : end + 1);
    } else {
      lines.push(line);
      // skip the tag, honouring quoted attribute values that may hold '>'
      let j = i + 1;
      let quote = '';
      for (; j < n; j++) {
        const c = text[j];
        if (quote) {
          if (c === quote) quote = '';
        } else if (c === '"' || c === "'") quote = c;
        else if (c === '>') break;
      }
      advanceTo(j + 1);
    }
  }
  return lines;
}

/** Parses an XML document into its root element; throws NwfError on malformed XML. */
export function parseXmlDocument(text: string, file: string): XmlElement {
  const valid = XMLValidator.validate(text, { allowBooleanAttributes: false });
  if (valid !== true) {
    throw new NwfError(CODES.XML_MALFORMED, `malformed XML: ${valid.err.msg}`, {
      location: { file, line: valid.err.line },
      expected: 'a well-formed XML document',
    });
  }
  let raw: OrderedNode[];
  try {
    raw = parser.parse(text) as OrderedNode[];
  } catch (e) {
    throw new NwfError(CODES.XML_MALFORMED, `malformed XML: ${(e as Error).message}`, { location: { file }, cause: e });
  }
  const lines = startTagLines(text);
  let k = 0;
  const convert = (node: OrderedNode): XmlElement | undefined => {
    const name = Object.keys(node).find((key) => key !== ':@');
    if (!name || name === '#text' || name === '#comment') return undefined;
    const line = lines[k++];
    const kids = (node[name] as OrderedNode[] | undefined) ?? [];
    const el: XmlElement = { name, attrs: { ...(node[':@'] ?? {}) }, children: [], text: '', file, ...(line !== undefined ? { line } : {}) };
    const texts: string[] = [];
    for (const kid of kids) {
      if ('#text' in kid) texts.push(String(kid['#text']));
      else if ('#comment' in kid) continue;
      else {
        const c = convert(kid);
        if (c) el.children.push(c);
      }
    }
    el.text = texts.join('').trim();
    return el;
  };
  const roots = raw.map(convert).filter((e): e is XmlElement => e !== undefined);
  const root = roots[0];
  if (!root || roots.length !== 1) {
    throw new NwfError(CODES.XML_MALFORMED, 'expected exactly one root element', { location: { file } });
  }
  return root;
}

// The XML reader (src/xml/xml.ts): well-formed documents become element
// trees with lines; anything not well formed is refused with NWF1001 and the
// line, an encoding other than UTF-8 with NWF1009.
import { describe, expect, it } from 'vitest';
import { nwfErrorOf } from '../support/cli.js';
import { parseXmlDocument, type XmlElement } from '../../src/xml/xml.js';

const fail = (text: string) => nwfErrorOf(() => parseXmlDocument(text, 'f.xml'));

const shape = (e: XmlElement): unknown => ({ name: e.name, attrs: { ...e.attrs }, text: e.text, line: e.line, children: e.children.map(shape) });

describe('XML reader', () => {
  it('reads elements, attributes (both quotes), text, lines; skips the declaration, comments and processing instructions', () => {
    const doc = [
      "<?xml version='1.0' encoding='UTF-8'?>",
      '<!-- a comment -->',
      "<filter name='f' chain=\"root\">",
      '  <?pi ignored?>',
      "  <rule action='drop'",
      "        direction='out'/>",
      '  <uuid> 3b1e5c7a </uuid>',
      '</filter>',
      '<!-- after -->',
      '',
    ].join('\n');
    expect(shape(parseXmlDocument(doc, 'f.xml'))).toEqual({
      name: 'filter',
      attrs: { name: 'f', chain: 'root' },
      text: '',
      line: 3,
      children: [
        { name: 'rule', attrs: { action: 'drop', direction: 'out' }, text: '', line: 5, children: [] },
        { name: 'uuid', attrs: {}, text: '3b1e5c7a', line: 7, children: [] },
      ],
    });
  });

  it('decodes the predefined entities and character references, in text and attributes; CDATA is text', () => {
    const e = parseXmlDocument("<a x='&lt;&gt;&amp;&quot;&apos;&#65;&#x42;'>t&amp;u<![CDATA[<v>]]></a>", 'f.xml');
    expect(e.attrs.x).toBe('<>&"\'AB');
    expect(e.text).toBe('t&u<v>');
  });

  it('normalises white space in attribute values, as XML requires', () => {
    expect(parseXmlDocument("<a x='1\t2\n3\r\n4'/>", 'f.xml').attrs.x).toBe('1 2 3 4');
  });

  it('accepts a byte-order mark and CRLF line ends (lines still counted)', () => {
    const e = parseXmlDocument('\uFEFF<a>\r\n\r\n<b/></a>', 'f.xml');
    expect(e.children[0]?.line).toBe(3);
  });

  it('attributes are plain data: __proto__ and constructor are just names', () => {
    const e = parseXmlDocument("<a __proto__='x' constructor='y'/>", 'f.xml');
    expect(Object.keys(e.attrs)).toEqual(['__proto__', 'constructor']);
    expect(e.attrs.constructor).toBe('y');
  });

  it.each([
    ["<filter name='f'>\n  <rule action='drop' direction='out'>\n</filter>", 3, /closing tag <\/filter> does not match <rule> \(line 2\)/],
    ['<a>\n<b>\n', 3, /<b> \(line 2\) is not closed/],
    ["<a x='1' x='2'/>", 1, /attribute 'x' is given twice/],
    ["<a x='&nbsp;'/>", 1, /unknown entity '&nbsp;'/],
    ['<a>AT&T</a>', 1, /'&' that does not start a reference/],
    ['<a>&#0;</a>', 1, /not a character XML allows/],
    ['<a>\n\u0001</a>', 2, /U\+0001 is not allowed/],
    ['<!DOCTYPE a [<!ENTITY x "y">]>\n<a/>', 1, /document type declarations/],
    ['<a/>\n<b/>', 2, /a second root element <b>/],
    ['text<a/>', 1, /text outside the root element/],
    ['<a/>\ntext', 2, /text outside the root element/],
    ['<a><!-- x -- y --></a>', 1, /'--' inside a comment/],
    ['<a x=1/>', 1, /not quoted/],
    ["<a x='<'/>", 1, /'<' in the value of attribute 'x'/],
    ["<a x='1'y='2'/>", 1, /expected white space/],
    ['</a>', 1, /without an open element/],
    ['<a>]]></a>', 1, /']]>' in text/],
    ["<a/><?xml version='1.0'?>", 1, /only allowed at the start/],
    ['', 1, /no root element/],
    ['<a><![CDATA[x</a>', 1, /CDATA section is not closed/],
  ])('refuses %j (line %i)', (text, line, message) => {
    const e = fail(text);
    expect(e.code).toBe('NWF1001');
    expect(e.message).toMatch(message);
    expect(e.details.location).toEqual({ file: 'f.xml', line });
  });

  it('refuses a declared encoding other than UTF-8 (NWF1009)', () => {
    const e = fail("<?xml version='1.0' encoding='ISO-8859-1'?><a/>");
    expect(e.code).toBe('NWF1009');
    expect(e.message).toContain('ISO-8859-1');
    expect(parseXmlDocument("<?xml version='1.0' encoding='utf-8'?><a/>", 'f.xml').name).toBe('a');
  });

  it('reads any nesting depth without recursion', () => {
    const n = 200_000;
    const e = parseXmlDocument('<a>'.repeat(n) + '</a>'.repeat(n), 'f.xml');
    let depth = 1;
    for (let x = e; x.children[0]; x = x.children[0]) depth++;
    expect(depth).toBe(n);
  });
});
